#!/usr/bin/env bash
# Offline checks of the deploy files, one per call (ctest runs each):
#   check-deploy.sh compose|compose-tls|compose-replicated|k8s|k8s-overlay|k8s-tls|k8s-replicated|dockerfile
# validates a real file, and
#   check-deploy.sh compose-bad-key|k8s-unknown-field|k8s-wrong-type|dockerfile-bad-instruction
# feeds the same validator a copy with one deliberate defect and passes only
# when the validator rejects it for that defect: a validator that accepts
# anything would pass the first kind and fail this one.
# The validators come from tools/setup.sh (docker-compose, kubectl, npm ci).
set -euo pipefail
deploy=$(cd "$(dirname "$0")/.." && pwd)
validate=$deploy/validate
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -d "$validate/node_modules" ]; then
  echo "$validate/node_modules is missing: run tools/setup.sh" >&2
  exit 1
fi

# Relative paths in the compose file resolve from its own folder, also for
# a broken copy that lives elsewhere.
compose_config() {  # FILE [OVERRIDE...]
  local files=()
  for file in "$@"; do files+=(-f "$file"); done
  docker-compose --project-directory "$deploy/compose" "${files[@]}" config -q
}
k8s_check() {
  kubectl kustomize "$1" >"$tmp/rendered.yaml"
  node "$validate/check-k8s.js" "$tmp/rendered.yaml"
}
k8s_check_mutated() {  # SED_SCRIPT: the rendered base, changed by sed
  kubectl kustomize "$deploy/k8s" | sed "$1" >"$tmp/broken.yaml"
  node "$validate/check-k8s.js" "$tmp/broken.yaml"
}
# Warnings count too: the real Dockerfile lints clean.
dockerfile_lint() {
  local output
  output=$("$validate/node_modules/.bin/dockerfile-utils" lint "$1") || {
    echo "$output"
    return 1
  }
  [ -z "$output" ] || { echo "$output"; return 1; }
}

# expect_rejection REASON COMMAND...: COMMAND must fail and say REASON.
expect_rejection() {
  local reason=$1 output
  shift
  if output=$("$@" 2>&1); then
    echo "the validator accepted a broken file:"
    echo "$output"
    exit 1
  fi
  if ! grep -qF -- "$reason" <<<"$output"; then
    echo "the validator rejected the broken file, but not for '$reason':"
    echo "$output"
    exit 1
  fi
  echo "rejected as expected ('$reason'):"
  echo "$output"
}

case "${1:-}" in
  compose)
    compose_config "$deploy/compose/docker-compose.yml"
    echo "docker-compose config: valid"
    ;;
  compose-tls)
    compose_config "$deploy/compose/docker-compose.yml" \
      "$deploy/compose/docker-compose.tls.yml"
    echo "docker-compose config (with docker-compose.tls.yml): valid"
    ;;
  compose-replicated)
    compose_config "$deploy/compose/docker-compose.yml" \
      "$deploy/compose/docker-compose.replicated.yml"
    echo "docker-compose config (with docker-compose.replicated.yml): valid"
    ;;
  compose-bad-key)
    sed 's/^\( *\)restart: unless-stopped/\1restart_policy: unless-stopped/' \
      "$deploy/compose/docker-compose.yml" >"$tmp/docker-compose.yml"
    expect_rejection "Unsupported config option for services.ps-server-0: 'restart_policy'" \
      compose_config "$tmp/docker-compose.yml"
    ;;
  k8s) k8s_check "$deploy/k8s" ;;
  k8s-overlay) k8s_check "$deploy/k8s-overlays/example" ;;
  k8s-tls) k8s_check "$deploy/k8s-overlays/tls" ;;
  k8s-replicated) k8s_check "$deploy/k8s-overlays/replicated" ;;
  k8s-unknown-field)
    expect_rejection "StatefulSet/ps-server: unknown field .spec.template.spec.terminationGracePeriodSecond" \
      k8s_check_mutated 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/'
    ;;
  k8s-wrong-type)
    expect_rejection "containerPort must be integer" \
      k8s_check_mutated 's/containerPort: 50051/containerPort: "50051"/'
    ;;
  dockerfile)
    dockerfile_lint "$deploy/docker/Dockerfile"
    echo "dockerfile-utils lint: clean"
    ;;
  dockerfile-bad-instruction)
    sed 's/^HEALTHCHECK/HEALTHCHEK/' "$deploy/docker/Dockerfile" >"$tmp/Dockerfile"
    expect_rejection "Unknown instruction: HEALTHCHEK" dockerfile_lint "$tmp/Dockerfile"
    ;;
  *)
    echo "usage: $0 compose|compose-tls|compose-replicated|compose-bad-key|k8s|k8s-overlay|k8s-tls|k8s-replicated|k8s-unknown-field|k8s-wrong-type|dockerfile|dockerfile-bad-instruction" >&2
    exit 2
    ;;
esac
