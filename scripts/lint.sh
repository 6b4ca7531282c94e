#!/usr/bin/env bash
# Lint, format check and type check of src/ (ruff and mypy, configured in pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -m ruff check src
"$PY" -m ruff format --check src
"$PY" -m mypy
