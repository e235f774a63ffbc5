"""The one wiring point between configs and the package: config node -> object.

Why one module: before it, ``data.format``, ``calibration.method``, ``trainer.encoder_mode`` and
``model.label_init`` were dispatched by string in four packages, and constructors were copied
field by field from the config. Here every part is built in one place, configs pass through by
parameter name (:func:`kwargs_for`: a new constructor argument needs a config key, not a code
edit), and a config that does not fit is one ``ConfigError`` line. The domain packages below take
plain Python values and never see a ``DictConfig`` (import-linter: ``no-config-in-domain``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from transformers import TrainingArguments

from medcoder.calibration.calibrators import BaseCalibrator, make_calibrator
from medcoder.data import load_corpus
from medcoder.errors import ConfigError
from medcoder.modeling import MedCoderForICDCoding

__all__ = ["build_calibrator", "build_corpus", "build_model", "kwargs_for", "plain", "training_arguments"]


def plain(node: Any, group: str = "") -> Any:
    """A config node as plain Python, resolved. An unset ``???`` value is a one-line
    ``ConfigError`` naming ``<group>.<key>`` (a silently dropped split would be worse)."""
    if isinstance(node, DictConfig):
        try:
            return OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
        except MissingMandatoryValue as exc:
            key = f"{group}.{exc.full_key}" if group else str(exc.full_key)
            raise ConfigError(f"{key} is required but not set (???)",
                              hint=f"pass {key}=... on the command line, or {key}=null if not needed") from exc
    return dict(node) if isinstance(node, Mapping) else node


def kwargs_for(fn: Callable[..., Any], node: Any, *, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """The keys of ``node`` that are keyword parameters of ``fn`` (a function or a class)."""
    params = inspect.signature(fn).parameters
    skip = set(exclude)
    values = plain(node)
    return {k: v for k, v in values.items() if k in params and k not in skip}


def build_corpus(data_cfg: Any) -> datasets.DatasetDict:
    """The ``data`` group -> ``DatasetDict`` (``data.format`` picks the loader in
    :func:`medcoder.data.load_corpus`, the one format table)."""
    return load_corpus(plain(data_cfg, "data"))


def build_calibrator(calibration_cfg: Any) -> BaseCalibrator:
    """The ``calibration`` group -> an unfitted calibrator (``method`` + ``params``)."""
    return make_calibrator(str(calibration_cfg.method), **(plain(calibration_cfg.params) or {}))


def build_model(model_cfg: Any, encoder_path: str, codes: list[str], *, codeset_fy: int | None
                ) -> MedCoderForICDCoding:
    """The ``model`` group -> a fresh classifier (keys passed by name to ``from_encoder``)."""
    kwargs = kwargs_for(MedCoderForICDCoding.from_encoder, model_cfg)
    kwargs["encoder_overrides"] = kwargs.get("encoder_overrides") or None
    return MedCoderForICDCoding.from_encoder(encoder_path, codes, codeset_fy=codeset_fy, **kwargs)


#: Trainer settings that are not ``TrainingArguments`` fields under the same name.
_RENAMED = {"warmup_ratio": "warmup_steps"}  # transformers 5: a float < 1 in warmup_steps is a ratio


def training_arguments(trainer_cfg: Any, *, output_dir: Path, seed: int,
                       overrides: Mapping[str, Any] | None = None) -> TrainingArguments:
    """The ``trainer`` group -> ``TrainingArguments``: every key that is a field passes through by
    name; the evaluation/checkpoint policy that medcoder relies on (per-epoch eval and save, best
    checkpoint by dev MAP, no built-in reporters: MLflow is a callback) is fixed here."""
    values = plain(trainer_cfg)
    fields = set(inspect.signature(TrainingArguments).parameters)
    kwargs = {k: v for k, v in values.items() if k in fields}
    for ours, theirs in _RENAMED.items():
        kwargs.pop(ours, None)
        if ours in values:
            kwargs[theirs] = float(values[ours])
    kwargs["max_steps"] = int(values.get("max_steps") or -1)  # optional +trainer.max_steps; -1: epochs
    fixed = {
        "output_dir": str(output_dir),
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "logging_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": "map",
        "greater_is_better": True,
        "seed": seed,
        "data_seed": seed,
        "remove_unused_columns": False,
        "label_names": ["labels"],
        "report_to": "none",
    }
    # ``overrides`` (e.g. the out-of-fold heads: fixed epochs, no evaluation) win over both.
    return TrainingArguments(**{**kwargs, **fixed, **dict(overrides or {})})
