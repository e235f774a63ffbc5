"""The review workbench: import predictions, serve the web app, create users, export decisions.

    python scripts/review.py action=import predictions=<predictions.jsonl> notes=<notes folder | .jsonl | .csv>
    python scripts/review.py action=import notes=<notes folder> bundle=<bundle dir>     # predicts them first
    MEDCODER_REVIEW_PASSWORD=... python scripts/review.py action=create_user username=ana role=reviewer
    python scripts/review.py                                   # action=serve: http://127.0.0.1:8000/
    python scripts/review.py action=export export_dir=<folder>  # labels.jsonl, decisions.csv, events.jsonl
    python scripts/review.py action=audit_status [bundle_id=<id>]  # recompute + publish the audit status
    python scripts/review.py action=lift bundle_id=<id> admin=<name> reason="<why>"
    python scripts/review.py action=report bundle_id=<id>       # agreement report -> MLflow

The database is `db_url` (default sqlite:///outputs/review/review.db; postgresql+psycopg://... for a
team); host and port are overridable. Bad settings or input: one line on stderr, exit code 2.
"""

import logging

import hydra
from omegaconf import DictConfig

from medcoder.cli import quiet_environment, run_or_exit

log = logging.getLogger("medcoder.review")


@hydra.main(version_base="1.3", config_path="../configs", config_name="review")
def main(cfg: DictConfig) -> None:
    from medcoder.workflows.review import review_from_config

    result = run_or_exit(lambda: review_from_config(cfg))
    print(result.line)


if __name__ == "__main__":
    quiet_environment()
    main()
