#!/usr/bin/env bash
# The README main job: set up, then train the hybrid coder (neural + TF-IDF + ICD-10-CM dictionary, stacked) -> evaluate -> calibrate + routing policy -> export a bundle
# (registered in MLflow as medcoder-icd10@candidate) -> batch-predict the CodiEsp test notes, on the
# embedded defaults (offline MiniLM, local CodiEsp, MLflow in ./mlflow.db). Extra arguments go to train.py as
# Hydra overrides, e.g.  bash scripts/quickstart.sh trainer.num_train_epochs=5
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export MLFLOW_DISABLE_TELEMETRY=true TOKENIZERS_PARALLELISM=false
start=$(date +%s)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
.venv/bin/python scripts/train.py experiment=hybrid "$@" | tee "$out"
run_id=$(sed -n 's/^run_id=//p' "$out" | tail -n 1)
# Overrides that say where things live (paths.*, tracking.*) apply to calibration too.
cal_args=()
for a in "$@"; do case "$a" in paths.*|tracking.*) cal_args+=("$a");; esac; done
.venv/bin/python scripts/calibrate.py run_id="$run_id" "${cal_args[@]}"
.venv/bin/python scripts/export.py run_id="$run_id" "${cal_args[@]}" | tee "$out"
bundle_dir=$(sed -n 's/^bundle_dir=//p' "$out" | tail -n 1)
# Batch prediction on the CodiEsp-D English test notes (a folder of .txt files), as ops would run it.
notes=$(.venv/bin/python -c "from medcoder.data.resolve import resolve_codiesp_root as r; print(r(download=False) / 'test' / 'text_files_en')")
pred_dir="$(dirname "$(dirname "$bundle_dir")")/predictions/$run_id"
.venv/bin/python scripts/predict.py bundle="$bundle_dir" input="$notes" output="$pred_dir/codiesp_test_en.jsonl" "${cal_args[@]}"
echo "quickstart finished in $(( $(date +%s) - start ))s; MLflow run $run_id; bundle $bundle_dir; predictions $pred_dir"
echo "(mlflow ui --backend-store-uri sqlite:///mlflow.db)"
