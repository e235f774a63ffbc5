"""Corpora -> ``DatasetDict`` of ``{id, text, codes}`` rows, plus the label space.

``load_corpus(cfg.data)`` is the one entry point scripts use; the format-specific loaders are
public for notebooks and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
from omegaconf import DictConfig, OmegaConf

from medcoder.data.codes import normalize_code
from medcoder.data.codiesp import DEFAULT_SPLITS, load_codiesp, load_codiesp_with_report
from medcoder.data.descriptions import code_descriptions
from medcoder.data.labels import LabelSpace
from medcoder.data.report import LoadReport, SplitReport
from medcoder.data.resolve import resolve_codiesp_root
from medcoder.data.tabular import load_tabular
from medcoder.errors import ConfigError

__all__ = [
    "FORMATS",
    "LabelSpace",
    "LoadReport",
    "SplitReport",
    "code_descriptions",
    "load_codiesp",
    "load_codiesp_with_report",
    "load_corpus",
    "load_tabular",
    "normalize_code",
    "resolve_codiesp_root",
]

FORMATS = ("codiesp", "jsonl", "csv")


class _Cfg:
    """``.get`` over a dict or DictConfig that turns an unset ``???`` value into a ConfigError
    naming ``data.<key>`` (OmegaConf's own error does not say how to fix it)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self._cfg = cfg

    def get(self, key: str, default: Any = None) -> Any:
        # DictConfig.get returns None/default for "???", which would silently drop a split.
        if isinstance(self._cfg, DictConfig) and OmegaConf.is_missing(self._cfg, key):
            raise ConfigError(
                f"data.{key} is required but not set (???)",
                hint=f"pass data.{key}=... on the command line, or data.{key}=null if not needed",
            )
        value = self._cfg.get(key, default)
        return default if value is None and default is not None else value


def load_corpus(data_cfg: Mapping[str, Any]) -> datasets.DatasetDict:
    """Load the corpus a ``data`` config group describes (a dict or an OmegaConf ``DictConfig``).

    ``format: codiesp`` uses ``root`` (may be null: then it is resolved/downloaded), ``language``,
    ``code_type``, ``cache_dir``, ``download``, ``on_error`` and optional ``splits``;
    ``format: jsonl|csv`` uses ``train``, ``dev``, ``test``, the column names and ``on_error``.
    """
    data_cfg = _Cfg(data_cfg)
    fmt = data_cfg.get("format")
    if fmt == "codiesp":
        root = resolve_codiesp_root(
            data_cfg.get("root"),
            cache_dir=data_cfg.get("cache_dir"),
            download=bool(data_cfg.get("download", True)),
        )
        return load_codiesp(
            root,
            language=data_cfg.get("language", "en"),
            code_type=data_cfg.get("code_type", "D"),
            splits=tuple(data_cfg.get("splits") or DEFAULT_SPLITS),
            on_error=data_cfg.get("on_error", "skip"),
        )
    if fmt in ("jsonl", "csv"):
        if not data_cfg.get("train"):
            raise ConfigError(
                f"data.train is required for data.format={fmt}", hint="set data.train=/path/to/train file"
            )
        return load_tabular(
            data_cfg.get("train"),
            data_cfg.get("dev"),
            data_cfg.get("test"),
            format=fmt,
            id_column=data_cfg.get("id_column", "id"),
            text_column=data_cfg.get("text_column", "text"),
            codes_column=data_cfg.get("codes_column", "codes"),
            codes_separator=data_cfg.get("codes_separator", ";"),
            on_error=data_cfg.get("on_error", "skip"),
        )
    raise ConfigError(
        f"data.format={fmt!r} is not supported", hint=f"use one of {', '.join(FORMATS)}"
    )
