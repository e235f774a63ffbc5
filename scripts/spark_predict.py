"""Batch scoring with Spark through the registered MLflow model: Parquet/CSV/JSONL in, Parquet out.

    python scripts/spark_predict.py model_uri=models:/medcoder-icd10@champion input=notes.parquet output=predictions.parquet
    python scripts/spark_predict.py model_uri=... input=notes.csv output=... "spark.master='local[2]'"

Needs the spark extra (pip install -e ".[spark]") and Java 17+. Writes <output> (Parquet: one row
per note, codes as an array of structs), <output>.audit (JSON lines, no note text) and
<output>.summary.json all-or-nothing, the summary last. Bad settings, an input without its text
column, outputs that would overwrite the input or an earlier result: one line on stderr, exit
code 2, nothing written.
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.spark_predict")


@hydra.main(version_base="1.3", config_path="../configs", config_name="spark_predict")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.spark_predict import spark_predict_from_config

    result = run_or_exit(lambda: spark_predict_from_config(cfg))
    log.info("predictions: %s; audit: %s; summary: %s", result.output, result.audit, result.summary_path)
    print(f"summary: {result.line()}")


if __name__ == "__main__":
    quiet_environment()
    main()
