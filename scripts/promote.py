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
    from medcoder.workflows.promote import promote_from_config

    version = run_or_exit(lambda: promote_from_config(cfg))
    log.info("models:/%s@%s -> version %s", cfg.registered_model_name, cfg.to_alias, version)


if __name__ == "__main__":
    quiet_environment()
    main()
