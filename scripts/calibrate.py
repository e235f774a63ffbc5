"""Calibrate a trained run and choose its auto-accept policy; results go to the same MLflow run.

    python scripts/calibrate.py run_id=<id>
    python scripts/calibrate.py run_id=<id> calibration=platt routing.target_precision=0.9
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.calibrate")


@hydra.main(version_base="1.3", config_path="../configs", config_name="calibrate")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.calibrate import calibrate

    result = run_or_exit(lambda: calibrate(cfg))
    m = result.metrics
    split = cfg.evaluation_split
    log.info("ECE on %s: %.4f uncalibrated -> %.4f calibrated", split, m[f"{split}_ece_uncalibrated"],
             m[f"{split}_ece_calibrated"])
    log.info("%s", result.message)
    log.info(
        "%s: auto-accept precision %.3f (lower bound %.3f), coverage %.3f, gold auto-accepted %.3f, "
        "notes fully auto-coded %.3f", split, m[f"{split}_auto_accept_precision"],
        m[f"{split}_auto_accept_precision_lower"], m[f"{split}_auto_accept_coverage"],
        m[f"{split}_gold_auto_accepted"], m[f"{split}_docs_fully_auto"],
    )


if __name__ == "__main__":
    quiet_environment()
    main()
