#!/usr/bin/env bash
# Installs what building, testing and running the parameter server need on
# Debian 12: Debian's packages, and the npm packages that check the deploy
# files (deploy/validate). Idempotent: a no-op when all is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake g++ clang clang-format make pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libeigen3-dev libspdlog-dev zlib1g-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist
  python3-grpcio python3-protobuf python3-numpy python3-pytest python3-torch
  libopenblas0-pthread
  libyaml-cpp-dev docker-compose
  libcpp-httplib-dev prometheus
  gnuplot-nox jq iproute2 nftables
  mmdebstrap openssl
)
# OpenBLAS: without it Debian's torch and numpy multiply matrices with the
# reference BLAS, 8x slower (bench/README.md, "Python workers").
# The docker tests (tests/docker_test.sh) need an engine: Debian's docker.io,
# unless the machine has one already (docker-ce's packages conflict with it).
# Without systemd, deploy/docker/ensure-dockerd.sh starts the daemon;
# mmdebstrap makes the base image where no registry answers.
command -v dockerd >/dev/null || packages+=(docker.io)
# Offline checks of the deploy files use whatever kubectl and node the
# machine has; Debian's (kubectl 1.20, node 18) only where there is none.
command -v kubectl >/dev/null || packages+=(kubernetes-client)
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
else
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

# The exact versions of package-lock.json; reinstalled only when it changed.
validate=deploy/validate
if cmp -s "$validate/package-lock.json" "$validate/node_modules/.installed-lock.json"; then
  echo "setup: $validate/node_modules up to date"
else
  echo "setup: npm ci in $validate"
  (cd "$validate" && npm ci --no-audit --no-fund)
  cp "$validate/package-lock.json" "$validate/node_modules/.installed-lock.json"
fi
