"""A misspelt key in any config group is a one-line ConfigError naming the key and the valid ones.

Before, ``factories.kwargs_for`` silently dropped keys that were not parameters, so
``model.head_dropuot=0.5`` trained with the default dropout and nobody was told.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medcoder.errors import ConfigError
from medcoder.workflows.config_checks import check_calibrate_config
from medcoder.workflows.factories import (
    build_calibrator,
    build_decision_threshold,
    build_model,
    build_risk_targets,
    build_routing,
    build_tracking,
    training_arguments,
)

from ..helpers.configs import compose_cfg, compose_named


def _one_line(exc: pytest.ExceptionInfo[ConfigError], key: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    assert key in text, text
    return text


@pytest.mark.parametrize(("override", "key"), [
    ("+routing.target_precison=0.9", "routing.target_precison"),
    ("+routing.min_train_cuont=3", "routing.min_train_cuont"),
    ("+calibration.decision_threshold.mod=global", "calibration.decision_threshold.mod"),
    ("+calibration.params.log_t_bound=1", "calibration.params.log_t_bound"),
    ("+calibration.methd=platt", "calibration.methd"),
    ("+tracking.experiment=x", "tracking.experiment"),
])
def test_calibrate_refuses_unknown_keys_before_loading_anything(override, key, tmp_path) -> None:
    cfg = compose_named("calibrate", ["run_id=x", f"paths.root_dir={tmp_path}", override])
    with pytest.raises(ConfigError) as exc:
        check_calibrate_config(cfg)
    text = _one_line(exc, key)
    assert "unknown key" in text and "valid" in text


@pytest.mark.parametrize(("override", "key", "build"), [
    ("+routing.target_precison=0.9", "routing.target_precison",
     lambda c: build_routing(c.routing, c.calibration, codeset_fy=2026, code_type="D")),
    ("+calibration.params.CC=1", "calibration.params.CC", lambda c: build_calibrator(c.calibration)),
    ("+calibration.decision_threshold.min_positive=1", "calibration.decision_threshold.min_positive",
     lambda c: build_decision_threshold(c.calibration)),
    ("+tracking.urii=x", "tracking.urii", build_tracking),
])
def test_builders_refuse_unknown_keys(override, key, build, tmp_path) -> None:
    extra = ["calibration=platt"] if "params" in override else []
    cfg = compose_named("calibrate", ["run_id=x", f"paths.root_dir={tmp_path}", *extra, override])
    with pytest.raises(ConfigError) as exc:
        build(cfg)
    _one_line(exc, key)


def test_model_and_trainer_refuse_unknown_keys(tmp_path, tiny_encoder) -> None:
    cfg = compose_cfg([f"paths.root_dir={tmp_path}", "+model.head_dropuot=0.5"])
    with pytest.raises(ConfigError) as exc:
        build_model(cfg.model, tiny_encoder, ["I10"], codeset_fy=2026)
    _one_line(exc, "model.head_dropuot")
    cfg = compose_cfg([f"paths.root_dir={tmp_path}", "+trainer.learning_rat=0.1"])
    with pytest.raises(ConfigError) as exc:
        training_arguments(cfg.trainer, output_dir=Path(tmp_path), seed=1)
    _one_line(exc, "trainer.learning_rat")


def test_shipped_routing_and_calibration_build_into_objects(tmp_path) -> None:
    """Every shipped calibration option and the routing group build (not only compose)."""
    for method in ("temperature", "platt", "isotonic"):
        cfg = compose_named("calibrate", ["run_id=x", f"paths.root_dir={tmp_path}", f"calibration={method}"])
        assert build_calibrator(cfg.calibration).name == method
        policy = build_routing(cfg.routing, cfg.calibration, codeset_fy=2026, code_type="D")
        assert policy.targets == build_risk_targets(cfg.routing)
        assert policy.targets.target_precision == cfg.routing.target_precision
        assert policy.decision_threshold.mode == cfg.calibration.decision_threshold.mode
        assert policy.check_validity and policy.check_excludes1
        procedures = build_routing(cfg.routing, cfg.calibration, codeset_fy=2026, code_type="P")
        assert not procedures.check_validity and not procedures.check_excludes1
