"""Batch prediction with a bundle: predictions file + audit log + summary.

    python scripts/predict.py bundle=<dir | models:/name@alias> input=<.txt folder | .jsonl | .csv | .parquet> \
        output=<.jsonl | .csv | .parquet>
    python scripts/predict.py ... granularity=code         # one row per (note, code)

Streams the input block by block (memory does not grow with its size) with a progress bar, and
writes <output>, <output>.audit.jsonl and <output>.summary.json all-or-nothing; the summary is
written last: a predictions file without its summary is not complete. A killed or interrupted run
keeps its finished blocks (.<output name>.medcoder-partial/): the same command continues from
there (resume=false starts over). Bad settings, outputs that would overwrite the input or the
bundle, and bad input: one line on stderr, exit code 2, nothing written.
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.predict")


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.predict import predict_from_config

    result = run_or_exit(lambda: predict_from_config(cfg))
    log.info("predictions: %s; audit log: %s", result.output, result.audit)
    print(f"summary: {result.summary.line()}")


if __name__ == "__main__":
    quiet_environment()
    main()
