#!/usr/bin/env bash
# Makes sure a Docker daemon answers on this machine, for CI and the
# DockerCompose tests (there is no systemd to start one).
#   ensure-dockerd.sh          a daemon that already answers is used as it
#                              is; otherwise dockerd starts in the background
#                              and the script waits until it answers.
# It never stops a daemon: one it started keeps running for the callers after
# it (its pid is in /run/ps-dockerd.pid, its log in /var/log/ps-dockerd.log).
# Fails with one line saying why when no daemon can run here.
set -euo pipefail

answers() { docker info >/dev/null 2>&1; }

if ! command -v docker >/dev/null; then
  echo "ensure-dockerd: no docker client on this machine (tools/setup.sh installs docker.io)" >&2
  exit 1
fi
if answers; then
  echo "ensure-dockerd: a Docker daemon already answers; using it"
  exit 0
fi
if [ -n "${DOCKER_HOST:-}" ]; then
  echo "ensure-dockerd: DOCKER_HOST=$DOCKER_HOST does not answer (this script starts only the default daemon)" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null; then
  echo "ensure-dockerd: no Docker daemon answers and dockerd is not installed (tools/setup.sh installs docker.io)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-dockerd: no Docker daemon answers, and starting dockerd needs root" >&2
  exit 1
fi

log=/var/log/ps-dockerd.log
# A socket file with no daemon behind it (a killed dockerd) would make the
# new one refuse to start; a pid file of a live dockerd means another
# start is under way, so wait for that one instead.
if [ -f /var/run/docker.pid ] && kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  echo "ensure-dockerd: dockerd (pid $(cat /var/run/docker.pid)) is starting; waiting for it"
else
  setsid dockerd >>"$log" 2>&1 </dev/null &
  echo $! >/run/ps-dockerd.pid
  echo "ensure-dockerd: started dockerd (pid $!, log $log)"
fi
deadline=$((SECONDS + 60))
until answers; do
  if [ -f /run/ps-dockerd.pid ] && ! kill -0 "$(cat /run/ps-dockerd.pid)" 2>/dev/null \
     && ! answers; then
    echo "ensure-dockerd: dockerd exited at start-up: $(tail -n 1 "$log")" >&2
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "ensure-dockerd: dockerd did not answer within 60 s: $(tail -n 1 "$log")" >&2
    exit 1
  fi
  sleep 0.5
done
echo "ensure-dockerd: the Docker daemon answers"
