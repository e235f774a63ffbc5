"""A training run's checkpoint folder: where it is, when it is resumed, and when it is deleted.

Why its own module: :mod:`medcoder.workflows.train` reads top to bottom like an HF example; the
rules for the one folder training deletes are kept together here, with their tests.

The folder is ``paths.checkpoint_dir / run_name``. ``run_name`` is checked as ONE folder name
(:func:`medcoder.constraints.check_path_part`) before anything else happens, and the folder is
created with medcoder's marker (:func:`medcoder.ownership.create_owned_dir`); it is deleted
(``trainer.resume=never``, and after a finished run) only while it holds that marker. Before issue
22, ``run_name=../../precious``, an empty ``run_name`` (the parent: every run's checkpoints) or an
absolute path each deleted that folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow

from medcoder.constraints import check_path_part
from medcoder.errors import ConfigError
from medcoder.ownership import create_owned_dir, remove_owned_dir

__all__ = ["CHECKPOINTS_KIND", "checkpoint_folder", "checkpoint_to_resume", "last_complete_checkpoint",
           "mlflow_run_to_continue", "remove_checkpoints"]

#: The marker kind of a run's checkpoint folder (:mod:`medcoder.ownership`).
CHECKPOINTS_KIND = "checkpoints"
_KEY = "run_name"

# Settings that do not change what is trained: a resume may differ in them.
_NOT_TRAINING = ("resume", "disable_tqdm", "dataloader_num_workers", "per_device_eval_batch_size",
                 "encode_batch_chunks", "cache_states_on_disk")


def checkpoint_folder(checkpoint_dir: Path, run_name: Any) -> Path:
    """``checkpoint_dir / run_name``, ``run_name`` checked as one folder name first (one line)."""
    return Path(checkpoint_dir) / check_path_part(_KEY, run_name)


def config_hash(config: Mapping[str, Any]) -> str:
    """What identifies a training for resuming: the config without paths, tracking and the trainer
    settings that do not change what is trained."""
    data = copy.deepcopy(dict(config))
    for key in _NOT_TRAINING:
        data.get("trainer", {}).pop(key, None)
    for key in ("paths", "tracking"):
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def last_complete_checkpoint(ckpt_dir: Path) -> str | None:
    """Newest ``checkpoint-N`` whose save finished (``trainer_state.json`` is written last), so a
    kill in the middle of a save never leaves a checkpoint that cannot be loaded."""
    done = [p for p in ckpt_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def checkpoint_to_resume(ckpt_dir: Path, config: Mapping[str, Any], *, mode: str, run_name: str) -> str | None:
    """Prepare ``ckpt_dir`` and return the last checkpoint of an interrupted run with the *same*
    config when ``mode`` is ``auto``.

    ``never`` deletes the folder first, and only if medcoder created it (its marker); a folder it
    did not create is never used, as it would be deleted at the end (one-line ``ConfigError``).
    """
    if mode == "never":
        remove_owned_dir(ckpt_dir, CHECKPOINTS_KIND, key=_KEY)
    create_owned_dir(ckpt_dir, CHECKPOINTS_KIND, key=_KEY)
    stamp = ckpt_dir / "config_hash.txt"
    digest = config_hash(config)
    if stamp.exists() and stamp.read_text() != digest:
        raise ConfigError(
            f"{ckpt_dir} holds checkpoints of run_name={run_name!r} with a different config",
            hint="pick another run_name=..., or trainer.resume=never to discard them",
        )
    stamp.write_text(digest)
    return last_complete_checkpoint(ckpt_dir) if mode == "auto" else None


def mlflow_run_to_continue(ckpt_dir: Path, resume_from: str | None) -> str | None:
    """The MLflow run of the interrupted training, so one training is one run even across a kill."""
    stamp = ckpt_dir / "mlflow_run_id.txt"
    if not resume_from or not stamp.exists():
        return None
    run_id = stamp.read_text().strip()
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    return run_id


def remove_checkpoints(ckpt_dir: Path) -> None:
    """A finished run's checkpoints (the model now lives in MLflow): deleted if medcoder created
    the folder, else left with a warning (a finished run never fails over its clean-up)."""
    remove_owned_dir(ckpt_dir, CHECKPOINTS_KIND, key=_KEY, strict=False)
