#!/usr/bin/env bash
# Run fer8's whole test suite from a fresh clone.
#
# Makes its own virtual environment (.venv-test, or $FER8_TEST_VENV), installs fer8 in it
# with the test tools, runs the style and type checks (scripts/check.sh; FER8_SKIP_CHECKS=1
# leaves them out) and then pytest; extra arguments go to pytest. Tests that need the
# datasets in ../shared are skipped when that folder is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FER8_TEST_VENV:-.venv-test}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet --editable ".[dev]"
if [ "${FER8_SKIP_CHECKS:-0}" != 1 ]; then
    FER8_TEST_VENV="$venv" bash scripts/check.sh
fi
exec "$venv/bin/python" -m pytest "$@"
