#!/usr/bin/env bash
# The README test command: set up, lint (ruff + import-linter layers), run the whole test suite
# (unit + integration).
set -euo pipefail
cd "$(dirname "$0")/.."
MEDCODER_EXTRAS=dev,spark,onnx,docs,review bash scripts/setup.sh
# The review workbench's browser tests drive Debian's Chromium through Playwright (Playwright's own
# browser download is not reachable offline); install it when it is missing.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium > /dev/null
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check src scripts tests benchmarks notebooks
# The layers of ../shared/DESIGN.md (contracts in pyproject.toml [tool.importlinter]).
.venv/bin/lint-imports --no-cache
# The documentation site (mkdocs.yml): broken links between pages or unrenderable docstrings fail.
# Built into a temporary folder, never into the checkout (separate lines: `set -e` ignores a failure
# inside an && chain).
site_dir=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site_dir" || { rm -rf "$site_dir"; exit 1; }
rm -rf "$site_dir"
# Two workers, one test file per worker at a time (module fixtures such as the tiny bundle and the
# Spark session are built once per file): 533 tests took 751 s this way on the 2-core CPU against
# 1,160 s in one process (most integration tests wait on subprocess start-up, not on the CPU).
# MEDCODER_TEST_WORKERS=0 runs in one process.
.venv/bin/python -m pytest -q -n "${MEDCODER_TEST_WORKERS:-2}" --dist loadfile "$@"
