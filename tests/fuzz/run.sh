#!/usr/bin/env bash
# Runs the libFuzzer targets of a -DPS_FUZZ=ON build, each for SECONDS on its
# seed corpus tests/fuzz/corpus/<target>/ (read only: what the run finds goes
# to a scratch directory). Exits non-zero if any target finds a crash, a
# leak, undefined behaviour, an out-of-memory or a hang; its input is left
# in OUT_DIR as <target>-crash-… (or -leak-, -oom-, -timeout-).
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS] [TARGET...]
#
# Default: 20 seconds, every target, FUZZ_JOBS (default: the cores) at a
# time. OUT_DIR defaults to BUILD_DIR/fuzz-out.
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

# One target's run; its exit status says whether it found a fault.
fuzz_one() {
  local target=$1
  local binary="$build_dir/fuzz/${target}_fuzzer"
  local scratch="$out_dir/$target-corpus"
  mkdir -p "$scratch"
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: one that
  # needs 2 GiB is a bug in a reader that must bound what it allocates.
  "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out_dir/$target-" \
    "$scratch" "$corpus_root/$target" >"$out_dir/$target.log" 2>&1
}

for target in "${targets[@]}"; do
  if [[ ! -x $build_dir/fuzz/${target}_fuzzer ]]; then
    echo "$build_dir/fuzz/${target}_fuzzer is missing: build it with --target ps_fuzzers" >&2
    exit 2
  fi
done
mkdir -p "$out_dir"

# Each target is one single-threaded process: run as many side by side as
# there are cores (FUZZ_JOBS), so the whole set takes SECONDS × targets ÷
# cores rather than SECONDS × targets.
jobs=${FUZZ_JOBS:-$(nproc)}
failed=()
pids=()
names=()
report() {  # waits for the oldest running target and judges it
  local target=${names[0]}
  if wait "${pids[0]}"; then
    echo "== fuzz $target for ${seconds}s: clean"
    grep -E '^stat::number_of_executed_units|^Done' "$out_dir/$target.log" || true
  else
    echo "== fuzz $target for ${seconds}s: FAULT" >&2
    tail -n 60 "$out_dir/$target.log" >&2
    failed+=("$target")
  fi
  pids=("${pids[@]:1}")
  names=("${names[@]:1}")
}
for target in "${targets[@]}"; do
  [[ ${#pids[@]} -lt $jobs ]] || report
  fuzz_one "$target" &
  pids+=($!)
  names+=("$target")
done
while [[ ${#pids[@]} -gt 0 ]]; do report; done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found a fault in: ${failed[*]} (inputs in $out_dir)" >&2
  exit 1
fi
