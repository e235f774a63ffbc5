#!/usr/bin/env bash
# The README test command: set up, lint (ruff + import-linter layers), run the whole test suite
# (unit + integration).
set -euo pipefail
cd "$(dirname "$0")/.."
MEDCODER_EXTRAS=dev,spark bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src scripts tests benchmarks notebooks
# The layers of ../shared/DESIGN.md (contracts in pyproject.toml [tool.importlinter]).
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -q "$@"
