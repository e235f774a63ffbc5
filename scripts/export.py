"""Export a trained + calibrated run as a bundle and a registered MLflow model.

    python scripts/export.py run_id=<id> output_dir=<dir>
    python scripts/export.py run_id=<id> output_dir=<dir> mlflow_model.promote=true
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.export")


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.export import export_run

    result = run_or_exit(lambda: export_run(cfg))
    log.info("bundle %s -> %s", result.manifest.bundle_id, result.bundle_dir)
    if result.registered_version:
        log.info("registered models:/%s version %s (@%s)", result.registered_name, result.registered_version,
                 cfg.mlflow_model.alias)
    print(f"bundle_dir={result.bundle_dir}")


if __name__ == "__main__":
    quiet_environment()
    main()
