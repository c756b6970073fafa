#!/usr/bin/env bash
# Drift on purpose (docs/development.md): in a throwaway venv, install the newest releases that
# the ranges of writ-broker (with its demo and test extras) and writ-jwks[fastapi] allow, ignoring
# requirements/*.lock, name every package newer than requirements/dev.lock, and run the suite
# there; arguments go to pytest instead of the whole suite:
#   scripts/check-newest.sh                              the whole suite
#   scripts/check-newest.sh tests/jwks tests/quality     a subset
# A failure here is a release to handle (a fix, an exact warning filter, or an upper bound)
# before `scripts/lock.sh --upgrade` takes it into the lock.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
V="$tmp/venv/bin"
"$V/pip" install -q --upgrade pip setuptools
"$V/pip" install -q --upgrade --upgrade-strategy eager -e './jwks[fastapi]' -e '.[demo,test]'
"$V/pip" check

"$V/python" - <<'PY'
import re
from importlib.metadata import distributions

from packaging.utils import canonicalize_name

pin = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)", re.M)
with open("requirements/dev.lock") as f:
    locked = {canonicalize_name(n): v for n, v in pin.findall(f.read())}
newer = sorted(
    f"  {name} {locked[name]} -> {d.version}"
    for d in distributions()
    if (name := canonicalize_name(d.metadata["Name"])) in locked and d.version != locked[name]
)
print("newer than requirements/dev.lock:", *(newer or ["  nothing"]), sep="\n")
PY

export WRIT_TEST_POSTGRES_URL="${WRIT_TEST_POSTGRES_URL-postgresql+psycopg://postgres@127.0.0.1:5432/test}"
"$V/python" -m pytest -p no:cacheprovider "$@"
