"""Shared entry-point plumbing for the Hydra scripts: logging and one-line errors.

A user-facing failure (bad data, bad config, bad bundle) prints one line naming the file/field/
value and what to do, and exits with code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

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


def run_or_exit(fn: Callable[[], T]) -> T:
    """Call ``fn``; on a ``MedcoderError`` print ``error: <message>`` and exit with its code."""
    try:
        return fn()
    except MedcoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OmegaConfBaseException as exc:
        # e.g. a required value (`run_id: ???`) not given on the command line.
        first = str(exc).strip().splitlines()[0]
        print(f"error: configuration: {first} — set it on the command line, e.g. key=value", file=sys.stderr)
        sys.exit(2)
