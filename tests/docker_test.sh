#!/usr/bin/env bash
# The image and the compose job under a real Docker engine (ctest label
# `docker`, tests/CMakeLists.txt). One call per ctest:
#   docker_test.sh build-image TAG   fixture: engine, base image, image
#   docker_test.sh remove-image TAG  fixture cleanup: the image tag
#   docker_test.sh image TAG         libraries, --version, uid 10001, pyps
#   docker_test.sh train TAG         health-gated start, trains like
#                                            ps_local, stop, checkpoint, up again
#   docker_test.sh kill TAG                   SIGKILL a server mid-training
#   docker_test.sh chaos BIN_DIR              ps_chaos's namespaced preset
#                                             packet_loss.yaml beside dockerd
# Every compose project gets its own name and is removed with its volume and
# network on exit, also when a check fails. The engine is used as it is
# (deploy/docker/ensure-dockerd.sh starts one where none answers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
compose_file=$root/deploy/compose/docker-compose.yml
what=${1:?usage: docker_test.sh build-image|remove-image|image|train|kill TAG}
image=${2:?the image tag}

# The job the compose tests run: the compose job's own flags (5 epochs,
# worker.flags), with checkpoints every second instead of every 30 s, so
# that one is there soon after training starts (the override below changes
# nothing else; the kill test trains longer).
epochs=5
checkpoint_every=1s

fail() { echo "FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND (a function, so
# that it looks afresh each time) until it succeeds.
wait_for() {
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${limit} s"
    sleep 0.2
  done
}

engine_answers() {
  docker info >/dev/null 2>&1 ||
    fail "no Docker engine answers (run deploy/docker/ensure-dockerd.sh; -DPS_DOCKER_TESTS=OFF turns these tests off)"
}

# --- the compose project of one test ---------------------------------------
project=""
tmp=""
compose() { docker-compose -p "$project" -f "$compose_file" -f "$tmp/test.yml" "$@"; }
container() { compose ps -q "$1"; }
logs() { docker logs -t "$(container "$1")" 2>&1; }

start_project() {
  project="psctest$$$1"
  tmp=$(mktemp -d)
  trap remove_project EXIT
  export PS_IMAGE=$image
  # A shorter checkpoint interval; the rest as deployed.
  cat >"$tmp/test.yml" <<EOF
services:
  ps-server-0:
    command: ["ps_server", "--flagfile=/etc/ps/server.flags",
              "--listen=0.0.0.0:50051", "--advertise=ps-server-0:50051",
              "--checkpoint_every=$checkpoint_every"]
  ps-server-1:
    command: ["ps_server", "--flagfile=/etc/ps/server.flags",
              "--listen=0.0.0.0:50051", "--advertise=ps-server-1:50051",
              "--checkpoint_every=$checkpoint_every"]
  ps-worker-0:
    command: ["ps_worker", "--flagfile=/etc/ps/worker.flags",
              "--metrics_listen=0.0.0.0:9100", "--epochs=$epochs"]
  ps-worker-1:
    command: ["ps_worker", "--flagfile=/etc/ps/worker.flags",
              "--metrics_listen=0.0.0.0:9100", "--epochs=$epochs"]
EOF
}

# docker run of the image under a name that remove_project knows, so that a
# test killed half-way leaves no container running.
run_in_image() { docker run --rm --name "$project-run" "$image" "$@"; }

# Background readers (docker events, docker logs -f) of this test, stopped
# on exit: one left running would hold ctest's output pipe open.
readers=()

remove_project() {
  local code=$? reader
  for reader in "${readers[@]}"; do kill "$reader" 2>/dev/null || true; done
  if [ -n "$project" ]; then
    docker rm -f "$project-run" >/dev/null 2>&1 || true
    if [ "$code" -ne 0 ]; then
      echo "--- logs of $project (the test failed)"
      compose logs --no-color --tail=40 2>&1 || true
    fi
    compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
    local left
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$project";
           docker volume ls -q --filter "label=com.docker.compose.project=$project";
           docker network ls -q --filter "label=com.docker.compose.project=$project")
    if [ -n "$left" ]; then
      echo "FAIL: $project left behind: $left" >&2
      code=1
    fi
  fi
  rm -rf "$tmp"
  exit "$code"
}

# The accuracy of the last evaluation worker 0 logged, e.g. 0.8123.
worker_accuracy() {
  logs ps-worker-0 | sed -n 's/.*test accuracy \([0-9.]*\) .*/\1/p' | tail -n 1
}

# ps_local in the same image with the job's flags: what the compose job
# must reach exactly (sync mode is reproducible bit for bit). Leaves every
# evaluation's accuracy, one a line, in $tmp/ps_local; prints the last.
ps_local_accuracy() {
  run_in_image ps_local --servers=2 --workers=2 --mode=sync \
    --model=softmax --epochs="$epochs" --batch_size=64 --seed=1 \
    --eval_every=0.25 --lr=0.1 --l2=1e-4 --out_dir=/tmp/ps_local |
    sed -n 's/^epoch .*test accuracy *\([0-9.]*\)%.*/\1/p' |
    awk '{ printf "%.4f\n", $1 / 100 }' >"$tmp/ps_local"
  tail -n 1 "$tmp/ps_local"
}

exited() { [ "$(docker inspect -f '{{.State.Status}}' "$(container "$1")")" = exited ]; }
# grep without -q, output dropped: -q exits at the first match, the writer
# then dies of SIGPIPE, and pipefail fails a pipeline that matched.
logged() { docker logs "$(container "$1")" 2>&1 | grep -e "$2" >/dev/null; }
logged_twice() { [ "$(docker logs "$(container "$1")" 2>&1 | grep -c -e "$2")" -ge 2 ]; }

# Exit codes of both workers once they stopped; fails on a timeout.
wait_for_workers() {
  local limit=$1 w
  for w in ps-worker-0 ps-worker-1; do
    wait_for "$limit" "$w finishing" exited "$w"
    local code
    code=$(docker inspect -f '{{.State.ExitCode}}' "$(container "$w")")
    [ "$code" = 0 ] || fail "$w exited $code"
  done
}

# The commit of the sources the image is built from ("unknown" outside git).
source_commit() { git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown; }

# --- the tests ---------------------------------------------------------------
case "$what" in
  build-image)
    start=$(now)
    bash "$root/deploy/docker/ensure-dockerd.sh"
    bash "$root/deploy/docker/base-image.sh"
    docker build -q --build-arg PS_GIT_COMMIT="$(source_commit)" \
      -f "$root/deploy/docker/Dockerfile" -t "$image" "$root"
    echo "image $image built in $(seconds_since "$start") s"
    ;;

  remove-image)
    engine_answers
    if docker image inspect "$image" >/dev/null 2>&1; then
      docker rmi "$image" >/dev/null
    fi
    echo "removed $image"
    ;;

  image)
    engine_answers
    version=$(docker run --rm "$image" ps_server --version)
    echo "$version"
    [[ "$version" == *"(commit $(source_commit))"* ]] ||
      fail "the image's ps_server --version does not name the commit $(source_commit)"
    missing=$(docker run --rm "$image" sh -c \
      'for b in /usr/local/bin/*; do ldd "$b" | sed "s|^|$b: |"; done' | grep 'not found' || true)
    [ -z "$missing" ] || fail "libraries missing from the image: $missing"
    uid=$(docker run --rm "$image" id -u)
    [ "$uid" = 10001 ] || fail "the image runs as uid $uid, not 10001"
    for b in ps_server ps_worker psctl ps_local; do
      docker run --rm "$image" "$b" --version >/dev/null || fail "$b --version"
    done
    # The Python worker: pyps with its generated protocol code, torch, and the
    # example that parses its flags.
    docker run --rm "$image" python3 -c 'import pyps, pyps.torch' ||
      fail "the image's python3 cannot import pyps and pyps.torch"
    docker run --rm "$image" python3 /usr/local/share/ps/examples/fashion_mnist.py --help >/dev/null ||
      fail "the image's Python example does not start"
    echo "every binary finds its libraries; runs as uid 10001; pyps imports"
    ;;

  train)
    engine_answers
    start_project train
    # Health and start events of this project, in order, from before `up`.
    docker events --filter "label=com.docker.compose.project=$project" \
      --format '{{.Status}} {{index .Actor.Attributes "com.docker.compose.service"}}' \
      >"$tmp/events" 2>&1 &
    events_pid=$!
    readers+=("$events_pid")
    expected=$(ps_local_accuracy)
    [ -n "$expected" ] || fail "ps_local printed no accuracy"
    start=$(now)
    compose up -d --no-build
    wait_for_workers 900
    echo "compose job of $epochs epochs: $(seconds_since "$start") s"
    kill "$events_pid"
    wait "$events_pid" || true
    # Each worker started after both servers were healthy.
    awk '/health_status: healthy ps-server/ { healthy[$3] = 1 }
         $1 == "start" && $2 ~ /ps-worker/ {
           if (!healthy["ps-server-0"] || !healthy["ps-server-1"]) bad = 1; started++ }
         END { exit (bad || started < 2) }' "$tmp/events" ||
      fail "a worker started before both servers were healthy: $(cat "$tmp/events")"
    accuracy=$(worker_accuracy)
    [ "$accuracy" = "$expected" ] ||
      fail "the compose job reached accuracy $accuracy, ps_local $expected"
    echo "accuracy $accuracy, as ps_local; workers started after the health checks"

    # SIGTERM: the servers exit 0 within the grace period with a checkpoint.
    start=$(now)
    compose stop -t 60 ps-server-0 ps-server-1
    echo "stop took $(seconds_since "$start") s"
    for s in ps-server-0 ps-server-1; do
      code=$(docker inspect -f '{{.State.ExitCode}}' "$(container "$s")")
      [ "$code" = 0 ] || fail "$s exited $code on SIGTERM"
      logs "$s" | grep 'final checkpoint' >/dev/null || fail "$s wrote no final checkpoint"
    done
    stopped_version=$(logs ps-server-1 | sed -n 's/.*stopped at version \([0-9]*\).*/\1/p' | tail -n 1)
    # The checkpoint, copied out of the volume, restores and exports the
    # whole θ, which ps_worker --init_from evaluates to the job's accuracy.
    docker cp "$(container ps-server-0):/var/lib/ps/checkpoints" "$tmp/copy"
    ls "$tmp/copy" | grep 'shard-1-of-2' >/dev/null || fail "no checkpoint of shard 1 in the volume"
    chmod -R a+rwX "$tmp/copy"
    evaluated=$(docker run --rm --name "$project-run" -v "$tmp/copy:/ckpt" "$image" sh -c '
      for i in 0 1; do
        ps_server --listen=127.0.0.1:5005$i --shard_index=$i --num_shards=2 \
          --num_workers=2 --lr=0.1 --l2=1e-4 --checkpoint_dir=/ckpt --log_level=warn &
      done
      tries=0
      until psctl health --servers=127.0.0.1:50050,127.0.0.1:50051 >/dev/null 2>&1; do
        tries=$((tries + 1)); [ $tries -lt 150 ] || { echo "servers never healthy" >&2; exit 1; }
        sleep 0.2
      done
      psctl export --servers=127.0.0.1:50050,127.0.0.1:50051 --out=/tmp/theta >&2
      ps_worker --init_from=/tmp/theta --evaluate_only --model=softmax')
    echo "evaluated the copied checkpoint: $evaluated"
    grep -q "\"test_accuracy\":$accuracy" <<<"$evaluated" ||
      fail "the checkpoint evaluates to $evaluated, the job ended at $accuracy"

    # A second up on the same volume continues from the checkpoint ...
    compose up -d --no-build ps-server-0 ps-server-1
    wait_for 60 "ps-server-1 restoring" logged ps-server-1 "restored version $stopped_version "
    # ... and down -v starts afresh, from version 0.
    compose down -v -t 30
    compose up -d --no-build ps-server-0 ps-server-1
    wait_for 60 "ps-server-1 serving" logged ps-server-1 'serving on port'
    logs ps-server-1 | grep 'no checkpoint in /var/lib/ps/checkpoints: starting with a fresh model' >/dev/null ||
      fail "after down -v, ps-server-1 did not start afresh: $(logs ps-server-1)"
    echo "up again restored version $stopped_version; after down -v a fresh model"
    ;;

  kill)
    engine_answers
    # 15 epochs, not 5: on an idle machine 5 took 2.6 s, and the job had
    # ended by the time the kill below followed the first checkpoint.
    epochs=15
    start_project kill
    expected=$(ps_local_accuracy)
    compose up -d --no-build
    server=$(container ps-server-1)
    # Kill once training is under way and shard 1 has checkpointed. The job
    # trains for about 8 s: follow the log as it is written rather than
    # asking for it again and again.
    docker logs -f "$server" >"$tmp/server-1.log" 2>&1 &
    follower=$!
    readers+=("$follower")
    wait_for 300 "a periodic checkpoint of ps-server-1" \
      grep -q 'periodic checkpoint .* (version [1-9]' "$tmp/server-1.log"
    pid=$(docker inspect -f '{{.State.Pid}}' "$server")
    killed_at=$(now)
    kill -KILL "$pid"
    echo "SIGKILL to ps-server-1 (host pid $pid)"
    wait "$follower" || true
    wait_for 120 "ps-server-1 restoring" logged ps-server-1 'restored version'
    restored=$(logs ps-server-1 | sed -n 's/.*restored version \([0-9]*\) .*/\1/p' | tail -n 1)
    # Serving again: the log line of the new process (docker logs -t stamps
    # every line with the engine's clock, the same clock as ours).
    wait_for 60 "ps-server-1 serving again" logged_twice ps-server-1 'serving on port'
    serving_at=$(logs ps-server-1 | grep 'serving on port' | tail -n 1 | cut -d' ' -f1)
    # The workers' first push applied after the restore: the shard's
    # version passes the restored one.
    pushed() {
      local v
      v=$(docker exec "$server" psctl status --servers=127.0.0.1:50051 2>/dev/null |
          sed -n 's/.* version \([0-9]*\),.*/\1/p')
      [ -n "$v" ] && [ "$v" -gt "$restored" ]
    }
    wait_for 120 "a push applied on the restarted ps-server-1" pushed
    pushed_after=$(seconds_since "$killed_at")
    serving_after=$(awk -v a="$killed_at" -v b="$(date -d "$serving_at" +%s.%N)" \
      'BEGIN { printf "%.1f", b - a }')
    wait_for_workers 900
    lost=$(logs ps-worker-0 | sed -n 's/.*: \([0-9]*\) updates lost.*/\1/p' | tail -n 1)
    [ -n "$lost" ] || fail "worker 0 did not log the updates it lost"
    accuracy=$(worker_accuracy)
    # The fault-free job's own accuracy moves by more than 1 pp from one
    # evaluation to the next in its last epoch (0.8186 … 0.8340), so one
    # final evaluation of a perturbed run cannot be held to 0.5 pp of the
    # fault-free final one. It must land within 0.5 pp of the range the
    # fault-free run went through in its last epoch (4 evaluations).
    range=$(tail -n 4 "$tmp/ps_local" | sort -n | sed -n '1p;$p' | tr '\n' ' ')
    awk -v a="$accuracy" -v r="$range" 'BEGIN { split(r, x, " ");
        exit !(a >= x[1] - 0.005 && a <= x[2] + 0.005) }' ||
      fail "after the kill the job reached $accuracy; the fault-free run's last epoch ranged over $range (± 0.5 pp)"
    echo "kill -9 of ps-server-1: serving again after ${serving_after} s (restored version $restored), first push applied after ${pushed_after} s, $lost updates lost, final accuracy $accuracy (fault-free $expected, last epoch $range)"
    ;;

  chaos)
    # dockerd's firewall: FORWARD drops what no rule accepts, and bridged
    # frames pass through it. ps_chaos must open its own bridge.
    bin_dir=$image
    engine_answers
    [ "$(iptables -w -S FORWARD | head -n 1)" = "-P FORWARD DROP" ] ||
      fail "FORWARD's policy is not DROP with dockerd running: nothing to test"
    [ "$(sysctl -n net.bridge.bridge-nf-call-iptables)" = 1 ] ||
      fail "bridge-nf-call-iptables is not 1 with dockerd running: nothing to test"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    start=$(now)
    "$bin_dir/ps_chaos" run "$root/deploy/experiments/packet_loss.yaml" \
      --out "$tmp/out" --quiet || fail "ps_chaos failed: $(tail -n 5 "$tmp/out/worker-0.log" 2>/dev/null)"
    summary=$(cat "$tmp/out/summary.json")
    jq -e '.cluster.network | startswith("namespaces")' <<<"$summary" >/dev/null ||
      fail "the preset did not run in network namespaces: $summary"
    jq -e '.completed == true' <<<"$summary" >/dev/null || fail "training did not complete: $summary"
    jq -e '.teardown.clean == true' <<<"$summary" >/dev/null || fail "teardown left things: $summary"
    left=$(iptables -w -S | grep -e '--comment ps_chaos-' || true)
    [ -z "$left" ] || fail "ps_chaos left its firewall rule: $left"
    echo "packet_loss.yaml in namespaces beside dockerd: $(jq -r '.final_accuracy' <<<"$summary") in $(seconds_since "$start") s"
    ;;

  *) fail "unknown test $what" ;;
esac
