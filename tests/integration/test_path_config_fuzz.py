"""Issue 22's done-when: random strings in every config value that becomes a path part, and nothing
outside the run's own folders is ever written or removed.

Each config value that names a folder or file (``run_name``, ``data.name`` and ``model.name`` (the
default ``run_name``), ``migrate_labels``'s ``data.name``/``to_fy``/``from_fy``, ``codeset_diff``'s
years, ``export``'s ``run_id``, registered model name and alias, ``promote``'s name and aliases)
gets strings from hypothesis: random text (any code point), path-like pieces (``..``, ``/``,
``\\``, NUL, absolute paths to the sentinel folders) and good names. For each, the script's door runs
(``train``'s ``_validate``, the ``check_*`` functions); where it accepts the value, the step that
uses it as a path runs too, cheaply (no model, no MLflow): the checkpoint folder is prepared with
``trainer.resume=never`` and removed as after a finished run, the migration and the code-set diff
are written. Then:

* a refused value is a one-line ``ConfigError`` and nothing at all was written;
* an accepted value's folder lies inside the run's outputs under the temp root;
* the sentinel tree beside and above the temp root is byte-for-byte unchanged.

Examples are derandomised (same inputs on every CI run) and bounded; the file runs in seconds.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.utils.validation import (
    _validate_model_alias_name,
    _validate_model_alias_name_reserved,
    _validate_model_name,
)
from omegaconf import OmegaConf

from medcoder.codesets import CodeSet, diff_codesets, migrate_dataset, write_diff, write_migration
from medcoder.errors import ConfigError
from medcoder.workflows.checkpoints import (
    checkpoint_folder,
    checkpoint_to_resume,
    remove_checkpoints,
)
from medcoder.workflows.codesets import check_codeset_diff_config, check_migrate_labels_config
from medcoder.workflows.export import check_export_names
from medcoder.workflows.promote import check_promote_config
from medcoder.workflows.train import _validate as check_train_door

from ..helpers.configs import compose_named

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

OLD = CodeSet(2030, {"A00": "h", "A00.0": "b"}, ["A00.0"], source="old")
NEW = CodeSet(2031, {"A00": "h", "A00.0": "b", "A00.1": "b"}, ["A00.0", "A00.1"], source="new")


class Sandbox:
    """``base/`` holds sentinel files and folders at every level above the temp root
    (``base/w/a/b/root``) and beside it; ``root`` is ``paths.root_dir`` of every config."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "w" / "a" / "b" / "root"
        self.root.mkdir(parents=True)
        for level in (base, base / "w", base / "w" / "a", base / "w" / "a" / "b"):
            (level / "sentinel.txt").write_text(f"keep {level.name}")
            (level / "precious").mkdir()
            (level / "precious" / "thesis.txt").write_text("years of work")
        self.beside = base / "w" / "a" / "b" / "precious"
        self.before = self.outside()

    def outside(self) -> dict[str, bytes | None]:
        """Everything under ``base`` but the temp root, with contents (the sentinel snapshot)."""
        found = {}
        for path in sorted(self.base.rglob("*")):
            if path == self.root or self.root in path.parents:
                continue
            found[str(path.relative_to(self.base))] = None if path.is_dir() else path.read_bytes()
        return found

    def inside(self) -> set[str]:
        """What the temp root holds (names only: a refused value must not have created anything)."""
        return {str(p.relative_to(self.root)) for p in self.root.rglob("*")}

    def clear_inside(self) -> None:
        """Empty the temp root between examples (it is the run's own folder), so it stays small."""
        for entry in self.root.iterdir():
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    base = Path(tempfile.mkdtemp(prefix="medcoder-fuzz-"))
    try:
        yield Sandbox(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _path_pieces(sandbox_paths: list[str]) -> st.SearchStrategy[str]:
    pieces = st.sampled_from(["..", ".", "/", "\\", "", " ", "\x00", "\n", "~", "$HOME", "precious", "a", "-",
                              "_", "é", "\u2028", "\udcff", "C:", ":", "@", "*", *sandbox_paths])
    return st.lists(pieces, max_size=6).map("".join)


ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=40)


def names(sandbox: Sandbox) -> st.SearchStrategy[Any]:
    """Random text, path-like strings (absolute paths to the sentinels too), good names, numbers."""
    targets = [str(sandbox.beside), str(sandbox.base), str(sandbox.root)]
    good = st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True)
    return st.one_of(ANY_TEXT, _path_pieces(targets), good, st.integers(-5, 10**6), st.sampled_from(targets),
                     st.just("x" * 300)).filter(lambda v: not isinstance(v, str) or "${" not in v)  # no interpolation


def _set(cfg: Any, key: str, value: Any) -> Any:
    cfg = copy.deepcopy(cfg)
    OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def _is_inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _run(sandbox: Sandbox, door: Callable[[], None], use: Callable[[], Path | None], within: Path) -> None:
    """The door, then (if it accepts) the step that uses the value as a path; then the checks."""
    before_inside = sandbox.inside()
    try:
        door()
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        message.encode("utf-8")
        assert sandbox.inside() == before_inside  # refused before anything was written
    else:
        written = use()
        if written is not None:
            assert _is_inside(written, within) and written.resolve() != within.resolve(), written
    assert sandbox.outside() == sandbox.before
    sandbox.clear_inside()


# -- training ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_cfg(sandbox: Sandbox):
    return compose_named("train", [f"paths.root_dir={sandbox.root}", "trainer.resume=never"])


def _checkpoints(cfg: Any) -> Path:
    """What training does with the checkpoint folder, without training: prepare (resume=never deletes
    it first), write into it, and remove it as after a finished run."""
    ckpt = checkpoint_folder(Path(cfg.paths.checkpoint_dir), cfg.run_name)
    checkpoint_to_resume(ckpt, {"seed": 1}, mode="never", run_name=str(cfg.run_name))
    (ckpt / "mlflow_run_id.txt").write_text("x")
    remove_checkpoints(ckpt)
    assert not ckpt.exists()
    return ckpt


@pytest.mark.parametrize("key", ["run_name", "data.name", "model.name"])
def test_train_names(sandbox: Sandbox, train_cfg, key: str) -> None:
    within = Path(train_cfg.paths.checkpoint_dir)

    @FUZZ
    @given(value=names(sandbox))
    def check(value: Any) -> None:
        cfg = _set(train_cfg, key, value)
        _run(sandbox, lambda: check_train_door(cfg), lambda: _checkpoints(cfg), within)

    check()


# -- migrate_labels ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def migration():
    corpus = datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"id": ["n1"], "text": ["a secret note"], "codes": [["A00.0"]]})})
    return migrate_dataset(corpus, NEW, OLD)


@pytest.mark.parametrize("key", ["data.name", "to_fy", "from_fy"])
def test_migrate_labels_names(sandbox: Sandbox, migration, key: str) -> None:
    base = compose_named("migrate_labels", ["data=jsonl", f"paths.root_dir={sandbox.root}", "log_mlflow=false"])
    within = Path(base.paths.output_dir) / "migrated"

    def use(cfg: Any) -> Path:
        out = Path(cfg.output_dir)
        write_migration(migration, out)
        return out

    @FUZZ
    @given(value=names(sandbox))
    def check(value: Any) -> None:
        cfg = _set(base, key, value)
        _run(sandbox, lambda: check_migrate_labels_config(cfg), lambda: use(cfg), within)

    check()


# -- codeset_diff -------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["from_fy", "to_fy"])
def test_codeset_diff_years(sandbox: Sandbox, key: str) -> None:
    base = compose_named("codeset_diff", [f"paths.root_dir={sandbox.root}"])
    within = Path(base.paths.output_dir) / "codeset_diff"
    diff = diff_codesets(OLD, NEW)

    def use(cfg: Any) -> Path:
        out = Path(cfg.output_dir)
        write_diff(diff, out)
        return out

    @FUZZ
    @given(value=st.one_of(names(sandbox), st.integers(1000, 9999)))
    def check(value: Any) -> None:
        cfg = _set(base, key, value)
        _run(sandbox, lambda: check_codeset_diff_config(cfg), lambda: use(cfg), within)

    check()


# -- export and promote: MLflow names ------------------------------------------------------------------
@pytest.mark.parametrize("key", ["run_id", "mlflow_model.alias", "mlflow_model.registered_model_name"])
def test_export_names(sandbox: Sandbox, key: str) -> None:
    base = compose_named("export", ["run_id=0123456789abcdef", f"paths.root_dir={sandbox.root}"])
    within = Path(base.paths.output_dir) / "bundles"

    def use(cfg: Any) -> Path:
        # What MLflow will do with the accepted names must not fail later either (its own rules);
        # an empty registered name means "log without registering" (no alias is set then).
        if cfg.mlflow_model.registered_model_name:
            _validate_model_name(str(cfg.mlflow_model.registered_model_name))
            _validate_model_alias_name(str(cfg.mlflow_model.alias))
            _validate_model_alias_name_reserved(str(cfg.mlflow_model.alias))
        return Path(cfg.output_dir)  # the default bundle folder: outputs/bundles/<run_id>

    @FUZZ
    @given(value=names(sandbox))
    def check(value: Any) -> None:
        cfg = _set(base, key, value)
        _run(sandbox, lambda: check_export_names(cfg), lambda: use(cfg), within)

    check()


@pytest.mark.parametrize("key", ["registered_model_name", "to_alias", "from_alias"])
def test_promote_names(sandbox: Sandbox, key: str) -> None:
    base = compose_named("promote", [f"paths.root_dir={sandbox.root}"])

    def use(cfg: Any) -> None:
        _validate_model_name(str(cfg.registered_model_name))
        for alias in (cfg.from_alias, cfg.to_alias):
            _validate_model_alias_name(str(alias))
            _validate_model_alias_name_reserved(str(alias))

    @FUZZ
    @given(value=names(sandbox))
    def check(value: Any) -> None:
        cfg = _set(base, key, value)
        _run(sandbox, lambda: check_promote_config(cfg), lambda: use(cfg), sandbox.root)

    check()
