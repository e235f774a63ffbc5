"""Shared entry-point plumbing for the Hydra scripts: logging and one-line errors.

A user-facing failure (bad data, bad config, bad bundle) prints one line naming the file/field/
value and what to do, and exits with code 2; anything else is a bug and keeps its traceback.
Such a failure leaves nothing behind either: Hydra creates its run folder (``hydra.run.dir``: the
job's log and ``.hydra/``) before the script can check anything, so :class:`RunDirGuard` notes
which folders of that path did not exist yet and :func:`run_or_exit` removes them again, with
only Hydra's own files in them, never a folder that was there before the run.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from medcoder.errors import MedcoderError

T = TypeVar("T")


def quiet_environment() -> None:
    """Offline-friendly defaults that a user can still override in the environment."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
    # transformers 5 lists every parameter of a composite model as "not sharded" on each load;
    # tensor parallelism is never used here, so the 30-line warning only hides real messages.
    logging.getLogger("transformers.distributed.tensor_parallel").setLevel(logging.ERROR)


#: The folders of this process's Hydra run path that did not exist when the run started, deepest
#: first (set by :class:`RunDirGuard`; empty when no Hydra run is under way).
_CREATED_BY_RUN: list[Path] = []
#: What Hydra writes into a run folder itself: its saved configs, and one log per job.
_HYDRA_CONFIGS = {"config.yaml", "hydra.yaml", "overrides.yaml"}


class RunDirGuard(Callback):
    """Hydra callback (``configs/hydra/default.yaml``): before Hydra creates ``hydra.run.dir``,
    note which of its folders are new, so that a refused run can take exactly those away again.

    ``${now:...}`` in the path is resolved once per process (Hydra caches the resolver), so the
    path read here is the one Hydra creates a moment later."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(config.hydra.run.dir)).resolve()
        _CREATED_BY_RUN[:] = [d for d in (run_dir, *run_dir.parents) if not d.exists()]


def _only_hydra_files(run_dir: Path) -> bool:
    for entry in run_dir.iterdir():
        if entry.is_file() and not entry.is_symlink() and entry.suffix == ".log":
            continue
        if entry.name == ".hydra" and entry.is_dir() and not entry.is_symlink() and all(
                f.is_file() and f.name in _HYDRA_CONFIGS for f in entry.iterdir()):
            continue
        return False
    return True


def discard_run_dir() -> None:
    """Remove the Hydra run folder this process created, and the parents it created, when they hold
    nothing but Hydra's own files (a log, ``.hydra/``). Anything else, or any folder that existed
    before the run, is left as it is."""
    if not _CREATED_BY_RUN:
        return
    run_dir, parents = _CREATED_BY_RUN[0], _CREATED_BY_RUN[1:]
    _CREATED_BY_RUN.clear()
    if not run_dir.is_dir() or not _only_hydra_files(run_dir):
        return
    for handler in list(logging.getLogger().handlers):  # the job log is open in the folder
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().parent == run_dir:
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(run_dir)
    for folder in parents:  # deepest first; stop at the first that is not empty
        try:
            folder.rmdir()
        except OSError:
            break


def run_or_exit(fn: Callable[[], T]) -> T:
    """Call ``fn``; on a ``MedcoderError`` print ``error: <message>`` and exit with its code, leaving
    no Hydra run folder behind (:func:`discard_run_dir`)."""
    try:
        return fn()
    except MedcoderError as exc:
        discard_run_dir()
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OmegaConfBaseException as exc:
        # e.g. a required value (`run_id: ???`) not given on the command line.
        discard_run_dir()
        first = str(exc).strip().splitlines()[0]
        print(f"error: configuration: {first} — set it on the command line, e.g. key=value", file=sys.stderr)
        sys.exit(2)
