#!/usr/bin/env bash
# Plots ps_bench transfer's JSON lines (jq + gnuplot from Debian):
#   bench/plot.sh RESULTS.jsonl [OUT_DIR]
# OUT_DIR (default out/plots; created if missing; `bench` redraws the
# committed plots):
# OUT_DIR/transfer_by_size.png: GB/s against payload size, 1 worker x 1 server
# OUT_DIR/transfer_by_shape.png: pushpull GB/s against workers, per server
#   count, at the size given as SIZE (floats; default 1048576)
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: bench/plot.sh RESULTS.jsonl [OUT_DIR]   (e.g. bench/results/transfer.jsonl)" >&2
  exit 2
fi
results=$1
out=${2:-out/plots}
size=${SIZE:-1048576}
if [ ! -r "$results" ]; then
  echo "plot.sh: cannot read $results (from the repository root the committed results are bench/results/transfer.jsonl)" >&2
  exit 2
fi
# gnuplot writes the PNG to the terminal when its output file cannot be
# opened: make sure it can.
mkdir -p "$out"
if [ ! -w "$out" ]; then
  echo "plot.sh: cannot write to $out" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for op in echo push pull push+pull pushpull; do
  jq -r --arg op "$op" 'select(.bench=="transfer" and .workers==1 and
      .servers==1 and .op==$op) | [.floats, .gb_per_s] | @tsv' "$results" | sort -n -u -k1,1 \
    > "$tmp/size_$op.tsv"
done
jq -r 'select(.bench=="transfer" and .workers==1 and .servers==1 and
    .op=="echo") | [.floats, .memcpy_gb_per_s] | @tsv' "$results" | sort -n -u -k1,1 \
  > "$tmp/size_memcpy.tsv"
servers=$(jq -r --argjson n "$size" 'select(.bench=="transfer" and
    .floats==$n) | .servers' "$results" | sort -un)
for s in $servers; do
  for op in echo pushpull; do
    jq -r --argjson n "$size" --argjson s "$s" --arg op "$op" \
      'select(.bench=="transfer" and .floats==$n and .servers==$s and
       .op==$op) | [.workers, .gb_per_s] | @tsv' "$results" |
      sort -n -u -k1,1 > "$tmp/shape_${op}_$s.tsv"
  done
done

gnuplot <<GNUPLOT
set terminal pngcairo size 900,560 noenhanced
set output "$out/transfer_by_size.png"
set title "ps_bench transfer, 1 worker x 1 server, loopback (2 cores)"
set logscale xy
set xlabel "payload (float32 values)"
set ylabel "GB/s (payload bytes, both directions)"
set key top left
set grid
plot "$tmp/size_echo.tsv" using 1:2 with linespoints lw 2 title "raw gRPC echo", \
     "$tmp/size_push.tsv" using 1:2 with linespoints title "push", \
     "$tmp/size_pull.tsv" using 1:2 with linespoints title "pull", \
     "$tmp/size_push+pull.tsv" using 1:2 with linespoints title "push then pull (2 calls)", \
     "$tmp/size_pushpull.tsv" using 1:2 with linespoints lw 2 title "PushPull (1 call)", \
     "$tmp/size_memcpy.tsv" using 1:2 with linespoints dt 2 title "memcpy"
GNUPLOT

plots=""
for s in $servers; do
  plots+="\"$tmp/shape_pushpull_$s.tsv\" using 1:2 with linespoints lw 2 title \"PushPull, $s server(s)\", "
  plots+="\"$tmp/shape_echo_$s.tsv\" using 1:2 with linespoints dt 2 title \"echo (run with $s server(s))\", "
done
gnuplot <<GNUPLOT
set terminal pngcairo size 900,560 noenhanced
set output "$out/transfer_by_shape.png"
set title "ps_bench transfer at $size floats: W workers x S servers, loopback (2 cores)"
set xlabel "workers"
set ylabel "GB/s, all workers together"
set xtics 1
set key outside right
set grid
plot ${plots%, }
GNUPLOT
echo "wrote $out/transfer_by_size.png and $out/transfer_by_shape.png"
