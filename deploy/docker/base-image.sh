#!/usr/bin/env bash
# Makes sure the Dockerfile's base image, debian:bookworm-slim, is in the
# local Docker engine. Where a registry answers, Docker pulls it as usual;
# where none does (an offline CI machine), it is made from Debian's own
# packages with mmdebstrap (minbase: what bookworm-slim holds, give or take
# the docs it strips). Idempotent: a no-op when the image is there.
set -euo pipefail
image=debian:bookworm-slim

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base-image: $image is present"
  exit 0
fi
if pull_error=$(timeout 120 docker pull -q "$image" 2>&1); then
  echo "base-image: pulled $image"
  exit 0
fi
echo "base-image: no registry gave $image (${pull_error##*$'\n'}); making it with mmdebstrap"
if ! command -v mmdebstrap >/dev/null; then
  echo "base-image: mmdebstrap is not installed (tools/setup.sh installs it)" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Quiet unless it fails: its progress would bury the test log.
if ! mmdebstrap --quiet --variant=minbase bookworm "$tmp/base.tar" >"$tmp/log" 2>&1; then
  cat "$tmp/log" >&2
  echo "base-image: mmdebstrap failed (above)" >&2
  exit 1
fi
docker import "$tmp/base.tar" "$image" >/dev/null
echo "base-image: made $image with mmdebstrap"
