"""Every shipped config group *builds* into its objects, not only composes, without training.

Like lightning-hydra-template's ``tests/test_configs.py``: each experiment preset, and each option of
every group, goes through the same factories the workflows call at their door
(``medcoder.workflows.factories`` and ``train_settings``), so a key that no constructor takes, or a
value outside a class's declared range, fails here and not an hour into a run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import TrainingArguments

from medcoder.calibration import BaseCalibrator, RiskTargets
from medcoder.data.loaders import loader_call
from medcoder.modeling import MedCoderForICDCoding
from medcoder.routing import RoutingPolicy
from medcoder.workflows.factories import (
    build_calibrator,
    build_fusion_plan,
    build_model,
    build_routing,
    build_tracking,
    plain,
    training_arguments,
)
from medcoder.workflows.fusion import FusionPlan
from medcoder.workflows.train import TrainSettings, train_settings

from ..helpers.configs import compose_cfg, compose_named
from ..helpers.paths import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _required(name: str) -> list[str]:
    """Values a config leaves unset (``???``) for the user: a local corpus path. Placeholders
    suffice; nothing is read."""
    if "mimic" in name:
        return ["data.root=/nonexistent/mimic"]
    if name in ("csv", "jsonl"):
        return [f"data.{split}=/nonexistent/{split}.{name}" for split in ("train", "dev", "test")]
    return []


def _build_train_groups(cfg, tmp_path: Path, tiny_encoder: str) -> TrainSettings:
    settings = train_settings(cfg)
    assert isinstance(settings.fusion, FusionPlan) and settings.fusion.views
    entry, kwargs = loader_call(plain(cfg.data, "data"))
    assert callable(entry) and "format" not in kwargs
    if settings.fusion.has_neural:
        # The encoder weights of hub configs are not reachable offline: every other key of the
        # group is built against the tiny encoder (chunk sizes beyond its positions are allowed
        # here; check_train_config refuses them against the real encoder's config.json).
        model = build_model(cfg.model, tiny_encoder, ["I10", "E11.9"], codeset_fy=settings.codeset_fy)
        assert isinstance(model, MedCoderForICDCoding) and model.config.chunk_size == cfg.model.chunk_size
        args = training_arguments(cfg.trainer, output_dir=tmp_path / "ckpt", seed=settings.seed)
        assert isinstance(args, TrainingArguments) and args.seed == settings.seed
    return settings


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_every_experiment_builds(experiment: str, tmp_path: Path, tiny_encoder: str) -> None:
    cfg = compose_cfg([f"experiment={experiment}", f"paths.root_dir={tmp_path}", *_required(experiment)])
    settings = _build_train_groups(cfg, tmp_path, tiny_encoder)
    assert settings.run_name == experiment


@pytest.mark.parametrize(("group", "option"), [
    *(("model", m) for m in _names("model")),
    *(("trainer", t) for t in _names("trainer")),
    *(("fusion", f) for f in _names("fusion")),
    *(("data", d) for d in _names("data")),
    *(("codeset", c) for c in _names("codeset")),
    *(("labels", c) for c in _names("labels")),
])
def test_every_group_option_builds(group: str, option: str, tmp_path: Path, tiny_encoder: str) -> None:
    # fusion=stacked keeps the neural view: model and trainer are built too. A data group is built
    # with the neural view alone: the dictionary has no lexicon for every corpus (English
    # procedures), which the config checks refuse by design.
    extra = {"fusion": ["trainer=cached_head"], "data": ["fusion=none", *_required(option)]}.get(
        group, ["fusion=stacked", "trainer=cached_head"])
    cfg = compose_cfg([*extra, f"{group}={option}", f"paths.root_dir={tmp_path}"])
    settings = _build_train_groups(cfg, tmp_path, tiny_encoder)
    if group == "codeset":
        assert settings.codeset_fy == cfg.codeset.fiscal_year


@pytest.mark.parametrize("method", _names("calibration"))
@pytest.mark.parametrize("routing", _names("routing"))
def test_every_calibrate_group_builds(method: str, routing: str, tmp_path: Path) -> None:
    cfg = compose_named("calibrate", ["run_id=x", f"calibration={method}", f"routing={routing}",
                                      f"paths.root_dir={tmp_path}"])
    assert isinstance(build_calibrator(cfg.calibration), BaseCalibrator)
    policy = build_routing(cfg.routing, cfg.calibration, codeset_fy=2026, code_type="D")
    assert isinstance(policy, RoutingPolicy) and isinstance(policy.targets, RiskTargets)
    assert not policy.decision_threshold.is_fitted and policy.threshold is None
    tracking = build_tracking(cfg)
    assert tracking.root_dir == tmp_path.resolve() and tracking.experiment_name == cfg.tracking.experiment_name


def test_a_fusion_plan_is_built_once_from_the_group(tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=hybrid", f"paths.root_dir={tmp_path}"])
    plan = build_fusion_plan(cfg)
    assert list(plan.views) == list(cfg.fusion.views)
    assert plan.folds == cfg.fusion.folds and plan.seed == cfg.seed
