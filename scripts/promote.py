"""Point an alias (default @champion) of a registered medcoder model at a version.

    python scripts/promote.py                      # champion <- the current @candidate
    python scripts/promote.py version=3
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.promote")


@hydra.main(version_base="1.3", config_path="../configs", config_name="promote")
def main(cfg: DictConfig) -> None:
    from pathlib import Path

    from medcoder.tracking import setup_experiment
    from medcoder.tracking.registry import promote

    def _run() -> str:
        setup_experiment(cfg.tracking, Path(cfg.paths.root_dir).resolve())
        return promote(cfg.registered_model_name, version=cfg.version, from_alias=cfg.from_alias,
                       to_alias=cfg.to_alias)

    version = run_or_exit(_run)
    log.info("models:/%s@%s -> version %s", cfg.registered_model_name, cfg.to_alias, version)


if __name__ == "__main__":
    quiet_environment()
    main()
