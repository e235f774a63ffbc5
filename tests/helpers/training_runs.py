"""Start a training command, SIGKILL it (its whole process tree) once it has written checkpoints."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import psutil


def train_and_kill(cmd: list[str], ckpt_dir: Path, *, env: dict[str, str], cwd: Path | None = None,
                   checkpoints: int = 2, timeout: float = 300) -> tuple[int, str]:
    """Run ``cmd`` until ``checkpoints`` complete checkpoints exist in ``ckpt_dir``, then SIGKILL
    every process of its tree (torchrun starts each rank in a session of its own, so a process-group
    kill would leave the ranks running). Returns the last complete checkpoint's step and the
    MLflow run id the training recorded."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env},
                            cwd=cwd, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and len(list(ckpt_dir.glob("checkpoint-*/trainer_state.json"))) < checkpoints:
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.2)
    finally:
        tree = psutil.Process(proc.pid)
        for p in [*tree.children(recursive=True), tree]:  # ranks first
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait()
    killed_at = max(int(p.parent.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*/trainer_state.json"))
    assert killed_at > 0
    return killed_at, (ckpt_dir / "mlflow_run_id.txt").read_text().strip()
