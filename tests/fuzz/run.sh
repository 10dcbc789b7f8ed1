#!/usr/bin/env bash
# Runs the libFuzzer targets of a -DPS_FUZZ=ON build, each for SECONDS on its
# seed corpus tests/fuzz/corpus/<target>/ (read only: what the run finds goes
# to a scratch directory). Exits non-zero if any target finds a crash, a
# leak, undefined behaviour, an out-of-memory or a hang; its input is left
# in OUT_DIR as <target>-crash-… (or -leak-, -oom-, -timeout-).
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS] [TARGET...]
#
# Default: 20 seconds, every target. OUT_DIR defaults to BUILD_DIR/fuzz-out.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [SECONDS] [TARGET...]" >&2
  exit 2
fi
build_dir=$1
seconds=${2:-20}
shift $(($# >= 2 ? 2 : 1))
corpus_root="$(cd "$(dirname "$0")" && pwd)/corpus"
out_dir=${OUT_DIR:-$build_dir/fuzz-out}

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  for dir in "$corpus_root"/*/; do
    targets+=("$(basename "$dir")")
  done
fi

failed=()
for target in "${targets[@]}"; do
  binary="$build_dir/fuzz/${target}_fuzzer"
  if [[ ! -x $binary ]]; then
    echo "$binary is missing: build it with --target ps_fuzzers" >&2
    exit 2
  fi
  scratch="$out_dir/$target-corpus"
  mkdir -p "$scratch"
  echo "== fuzz $target for ${seconds}s"
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: one that
  # needs 2 GiB is a bug in a reader that must bound what it allocates.
  if ! "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="$out_dir/$target-" \
      "$scratch" "$corpus_root/$target" >"$out_dir/$target.log" 2>&1; then
    tail -n 60 "$out_dir/$target.log" >&2
    failed+=("$target")
  else
    grep -E '^stat::number_of_executed_units|^Done' "$out_dir/$target.log" || true
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found a fault in: ${failed[*]} (inputs in $out_dir)" >&2
  exit 1
fi
