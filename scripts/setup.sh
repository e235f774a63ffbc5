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
# confseq (the review extra's audit monitor) ships only an sdist whose declared build needs
# pybind11 2.6, which does not compile on Python 3.11, and Boost headers: build it once with a newer
# pybind11 and Debian's libboost-dev, so the editable install below finds it satisfied.
build_confseq() {
  .venv/bin/python -c "import confseq.boundaries" 2>/dev/null && return 0
  if [ ! -d /usr/include/boost ] && command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libboost-dev > /dev/null
  fi
  .venv/bin/python -m pip install -q "scikit-build>=0.17" "cmake>=3.25" "pybind11>=2.11" "setuptools>=77" wheel
  .venv/bin/python -m pip install -q --no-build-isolation "confseq==0.0.11"
}
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
  case ",$EXTRAS," in *,review,*) build_confseq;; esac
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]"
  echo "$want extras=$(echo "$EXTRAS" | tr ',' '\n' | sort -u | tr '\n' ' ' | sed 's/ $//')" > "$stamp"
fi
