"""Multi-process training under ``torchrun`` (DDP), through the same state the HF Trainer uses.

``torchrun --nproc_per_node=N scripts/train.py ...`` starts N copies of the script with
``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` set. The HF ``Trainer`` then wraps the model in
``DistributedDataParallel`` and shards the batches by itself; what it cannot know is which of
*our* steps must run once. This module answers that with accelerate's ``PartialState`` (the very
object ``TrainingArguments`` initialises, so there is one process group, not two):

* :func:`distributed_state` — the shared state when launched with ``WORLD_SIZE > 1``, else None
  (single-process runs never touch ``torch.distributed``);
* :func:`main_first` — rank 0 runs a block first (writing the encoder-state cache, creating the
  checkpoint folder), the other ranks wait at a barrier and then run it (reading what rank 0 wrote);
* ``state.is_main_process`` — only rank 0 opens the MLflow run, evaluates, saves and logs.

Backend: gloo on CPU (what the test suite runs), nccl where CUDA is used (accelerate's choice).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["distributed_state", "is_main_process", "main_first", "release", "world_size"]


def world_size() -> int:
    """Processes in this launch (``WORLD_SIZE`` set by torchrun / accelerate launch; 1 otherwise)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def distributed_state(*, cpu: bool = False) -> Any | None:
    """accelerate's ``PartialState`` (initialising the process group) under a multi-process launch."""
    if world_size() <= 1:
        return None
    from accelerate import PartialState

    kwargs: dict[str, Any] = {"cpu": True, "backend": "gloo"} if cpu else {}
    return PartialState(**kwargs)


def release(state: Any | None) -> None:
    """Destroy this rank's process group before it returns. Why: a rank that exits with the gloo
    group alive can abort in the group's threads at interpreter shutdown ("terminate called without
    an active exception", exit -6: seen once in CI on the killed-and-resumed DDP test); the local
    destroy is not a collective, so a rank that finishes early does not wait for the others."""
    if state is None:
        return
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def is_main_process(state: Any | None) -> bool:
    return state is None or bool(state.is_main_process)


@contextlib.contextmanager
def main_first(state: Any | None) -> Iterator[None]:
    """Rank 0 runs the block before the others (no-op in a single process)."""
    if state is None:
        yield
        return
    with state.main_process_first():
        yield
