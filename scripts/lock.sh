#!/usr/bin/env bash
# Regenerate requirements.lock: the exact version and every file hash of each third-party package
# that writ-broker (with its demo and test extras), writ-jwks[fastapi] and their build backend
# need. One resolver, uv, pinned here so that its output does not change with its own releases.
# Extra arguments go to `uv pip compile`: --upgrade moves every pin to the newest release the
# ranges allow, --upgrade-package NAME moves one (docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "uv==$UV_VERSION"
# The two projects are inputs as local paths, so writ-broker's pin on writ-jwks resolves to
# ./jwks; neither is written to the lock (they install with --no-deps from the checkout).
printf '%s\n' '-e ./jwks[fastapi]' '-e .[demo,test]' 'setuptools>=69' \
  | "$tmp/venv/bin/uv" --no-config pip compile - \
      --universal --python-version 3.11 --generate-hashes \
      --no-emit-package writ-broker --no-emit-package writ-jwks \
      --custom-compile-command scripts/lock.sh \
      --output-file requirements.lock "$@"
