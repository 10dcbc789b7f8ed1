#!/usr/bin/env bash
# docs_commands_test: the commands a newcomer copies from README.md,
# bench/README.md and deploy/experiments/README.md, taken from the READMEs
# themselves and run as written (deploy/README.md's need Docker or a
# cluster; every file it checks offline is a ctest of its own).
#   tests/docs_commands_test.sh SOURCE_DIR BUILD_DIR
# They run in a scratch directory where build/ is BUILD_DIR and deploy/,
# bench/ are the sources', so `build/bin/…` and `deploy/experiments/…`
# mean what they mean in a clone. Not run: tools/setup.sh and the build
# (ctest runs inside that build), ctest itself, ps_chaos run/cleanup and
# ps_bench (minutes each; the ps_bench smoke tests are ctests), Docker and
# kubectl.
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
ln -s "$build" "$work/build"
ln -s "$src/deploy" "$work/deploy"
ln -s "$src/bench" "$work/bench"
cd "$work"

fail() { echo "docs_commands_test: $*" >&2; exit 1; }
# The line of FILE that matches the extended regex, or a failure naming it.
doc_line() {
  grep -m1 -E "$2" "$src/$1" || fail "$1 has no line matching '$2' any more"
}
run() {
  echo "+ $*"
  bash -c "$*" > out.txt 2>&1 || { cat out.txt; fail "failed: $*"; }
}

# README.md, "Two commands", 1: the job after the build, and the summary
# line the README shows (sync mode is deterministic: the same accuracy).
command=$(doc_line README.md '^bash tools/setup.sh && .* && build/bin/ps_local ')
command=build/bin/ps_local${command##*&& build/bin/ps_local}
shown=$(doc_line README.md '^ps_local: done in ')
expected=${shown#*: test accuracy }
expected="test accuracy ${expected%%, [0-9]* samples/s*}"
run "$command"
grep -qF "$expected" out.txt || { cat out.txt; fail "README says '$expected'"; }

# README.md, "Checkpoints, restarts and psctl": two servers with a
# checkpoint directory, a short job, then the psctl block line by line with
# H:P,... the servers' addresses.
mkdir checkpoints
for i in 0 1; do
  build/bin/ps_server --listen=127.0.0.1:0 --port_file="server-$i.port" \
    --shard_index="$i" --num_shards=2 --num_workers=2 \
    --checkpoint_dir=checkpoints > "server-$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 300); do
  [ -s server-0.port ] && [ -s server-1.port ] && break
  sleep 0.1
done
[ -s server-0.port ] && [ -s server-1.port ] || fail "servers did not start"
servers="127.0.0.1:$(cat server-0.port),127.0.0.1:$(cat server-1.port)"
for rank in 0 1; do
  build/bin/ps_worker --servers="$servers" --rank="$rank" --num_workers=2 \
    --epochs=1 --eval_every=1 > "worker-$rank.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]:2}"; do wait "$pid" || fail "a worker failed"; done
# The code block after "`psctl` talks to running servers:".
psctl_block=$(awk '/^`psctl` talks to running servers:/ { found = 1 }
                   found && /^```/ { if (++fences == 2) exit; next }
                   fences == 1' "$src/README.md")
[ "$(echo "$psctl_block" | wc -l)" -ge 5 ] || fail "README's psctl block moved"
while IFS= read -r line; do
  line=${line%%#*}
  run "${line//H:P,.../$servers}"
done <<< "$psctl_block"
grep -q '"test_accuracy":0\.[5-9]' out.txt ||
  { cat out.txt; fail "the exported model does not evaluate as trained"; }

# README.md and deploy/experiments/README.md: ps_chaos check SCENARIO, for
# every preset.
chaos_check=$(doc_line README.md '^build/bin/ps_chaos check SCENARIO')
chaos_check=${chaos_check%%#*}
for scenario in deploy/experiments/*.yaml; do
  run "${chaos_check//SCENARIO/$scenario}"
done

# bench/README.md: the plots from the committed results, into the default
# OUT_DIR (with `bench` it would redraw the committed PNGs).
plot=$(tr '\n' ' ' < "$src/bench/README.md" |
       grep -o '`bench/plot.sh bench/results/transfer.jsonl bench`' |
       head -1 | tr -d '`')
[ -n "$plot" ] || fail "bench/README.md no longer gives the plot.sh command"
run "${plot% bench}"
for png in out/plots/transfer_by_size.png out/plots/transfer_by_shape.png; do
  [ -s "$png" ] || fail "plot.sh did not write $png"
done
# README.md, "Train your own PyTorch model": the block as pasted, with
# Debian's python3 (it has python3-torch) and a free port for 50051.
torch_block=$(awk '/^### Train your own PyTorch model/ { found = 1 }
                   found && /^```/ { if (++fences == 2) exit; next }
                   found && fences == 1' "$src/README.md")
grep -q '127.0.0.1:50051' <<< "$torch_block" ||
  fail "README's PyTorch block no longer starts a server on 127.0.0.1:50051"
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket();
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "${torch_block//127.0.0.1:50051/127.0.0.1:$port}" > torch_block.sh
run "PATH=/usr/bin:\$PATH bash torch_block.sh"
grep -qE '^accuracy 0\.(8|9)' out.txt ||
  { cat out.txt; fail "README's PyTorch model did not learn"; }
echo "docs_commands_test: every command ran as documented"
