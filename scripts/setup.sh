#!/usr/bin/env bash
# Idempotent set-up: a virtualenv in .venv with torch (pinned, CPU build, installed FIRST so no
# other package pulls a multi-GB CUDA build) and medcoder in editable mode with dev extras.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=${MEDCODER_TORCH_VERSION:-2.13.0}
# Extras to install: the test command adds "spark" (pyspark, ~457 MB built from its sdist, only for
# scripts/spark_predict.py and its tests); the main job needs only "dev".
EXTRAS=${MEDCODER_EXTRAS:-dev}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.medcoder-installed
want="torch=$TORCH_VERSION $(sha256sum pyproject.toml | cut -c1-16)"
have=$(cat "$stamp" 2>/dev/null || true)
missing=0
for extra in ${EXTRAS//,/ }; do
  case " ${have#*extras=} " in *" $extra "*) ;; *) missing=1;; esac
done
if [ "${have%% extras=*}" != "$want" ] || [ "$missing" = 1 ]; then
  # Keep the extras installed before (a test run's spark stays when the main job runs after it).
  [ "${have%% extras=*}" = "$want" ] && EXTRAS="$EXTRAS,$(echo ${have#*extras=} | tr ' ' ',')"
  .venv/bin/python -m pip install -q --upgrade pip
  # On machines without a local CPU wheel, MEDCODER_TORCH_INDEX=https://download.pytorch.org/whl/cpu
  # keeps pip from fetching the CUDA build from PyPI.
  .venv/bin/python -m pip install -q ${MEDCODER_TORCH_INDEX:+--index-url "$MEDCODER_TORCH_INDEX"} "torch==$TORCH_VERSION"
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  echo "$want extras=$(echo "$EXTRAS" | tr ',' '\n' | sort -u | tr '\n' ' ' | sed 's/ $//')" > "$stamp"
fi
