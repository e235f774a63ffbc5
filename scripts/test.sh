#!/usr/bin/env bash
# The README test command: set up, lint, run the whole test suite (unit + CodiEsp integration).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src scripts tests benchmarks notebooks
.venv/bin/python -m pytest -q "$@"
