#!/usr/bin/env bash
# Regenerate requirements/*.lock (docs/development.md): the exact version and every file hash of
# each third-party package, resolved from the package index by name, never from pip's
# configuration.
#   dev.lock        writ-broker with its demo and test extras, writ-jwks[fastapi], and setuptools
#                   to build both: the README's commands and .ci/run
#   server.lock     writ-broker and setuptools: the image (compose/Dockerfile)
#   jwks.lock       writ-jwks alone: the closure .ci/run checks
#   jwks-test.lock  writ-jwks[fastapi] and pytest: tests/jwks beside the writ-jwks wheel
# The last three take their versions from dev.lock. uv is pinned here so that its output does not
# change with its own releases. Extra arguments go to the dev.lock compile: --upgrade moves every
# pin to the newest release the ranges allow, --upgrade-package NAME moves one.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "uv==$UV_VERSION"

compile() {  # compile OUTPUT INPUT-LINE... [-- UV-ARGS...]
  local out=$1; shift
  local lines=()
  while (($#)) && [[ $1 != -- ]]; do lines+=("$1"); shift; done
  (($#)) && shift
  printf '%s\n' "${lines[@]}" \
    | "$tmp/venv/bin/uv" --no-config pip compile - \
        --universal --python-version 3.11 --generate-hashes --quiet \
        --no-emit-package writ-broker --no-emit-package writ-jwks \
        --custom-compile-command scripts/lock.sh --output-file "$out" "$@"
}

# The projects are inputs as local paths, so writ-broker's pin on writ-jwks resolves to ./jwks;
# neither is written to a lock (they install from the checkout or a wheel with --no-deps).
compile requirements/dev.lock '-e ./jwks[fastapi]' '-e .[demo,test]' 'setuptools>=77' -- "$@"
pinned=(--constraint requirements/dev.lock)
compile requirements/server.lock './jwks' '.' 'setuptools>=77' -- "${pinned[@]}"
compile requirements/jwks.lock './jwks' -- "${pinned[@]}"
compile requirements/jwks-test.lock './jwks[fastapi]' 'pytest' -- "${pinned[@]}"
