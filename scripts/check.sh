#!/usr/bin/env bash
# Style and type checks: ruff's lint rules and its formatting, and mypy on src/fer8 (the
# settings are in pyproject.toml). scripts/test.sh runs this before the tests, with the
# tools of its virtual environment; .pre-commit-config.yaml runs the same three.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${FER8_TEST_VENV:-.venv-test}"
python="$venv/bin/python"
[ -x "$python" ] || python="${PYTHON:-python3}"

"$python" -m ruff check .
"$python" -m ruff format --check .
"$python" -m mypy
