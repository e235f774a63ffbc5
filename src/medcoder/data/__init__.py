"""Corpora -> ``DatasetDict`` of ``{id, text, codes}`` rows, plus the label space.

``load_corpus(cfg.data)`` is the one entry point scripts use; the format-specific loaders are
public for notebooks and tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets

from medcoder.data.codes import normalize_code
from medcoder.data.codiesp import DEFAULT_SPLITS, load_codiesp, load_codiesp_with_report
from medcoder.data.labels import LabelSpace
from medcoder.data.mimic import load_mimic
from medcoder.data.report import LoadReport, SplitReport
from medcoder.data.resolve import resolve_codiesp_root
from medcoder.data.tabular import load_tabular
from medcoder.errors import ConfigError

__all__ = [
    "FORMATS",
    "LabelSpace",
    "LoadReport",
    "SplitReport",
    "load_codiesp",
    "load_codiesp_with_report",
    "load_corpus",
    "load_mimic",
    "load_tabular",
    "normalize_code",
    "resolve_codiesp_root",
]

FORMATS = ("codiesp", "jsonl", "csv", "mimic")


def load_corpus(data_cfg: Mapping[str, Any]) -> datasets.DatasetDict:
    """Load the corpus a ``data`` config group describes, as a plain mapping (workflows resolve
    the Hydra node first: ``medcoder.workflows.factories.build_corpus``). The one place that maps
    ``format`` to a loader.

    ``format: codiesp`` uses ``root`` (may be null: then it is resolved/downloaded), ``language``,
    ``code_type``, ``cache_dir``, ``download``, ``on_error`` and optional ``splits``;
    ``format: jsonl|csv`` uses ``train``, ``dev``, ``test``, the column names and ``on_error``.
    """
    data_cfg = {k: v for k, v in data_cfg.items() if v is not None}
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
    if fmt == "mimic":
        # A credentialed user's local PhysioNet files; Edin et al.'s patient-level splits.
        return load_mimic(
            data_cfg.get("root"),
            variant=data_cfg.get("variant"),
            cache_dir=data_cfg.get("cache_dir"),
            note_root=data_cfg.get("note_root"),
            split_files=data_cfg.get("split_files"),
            code_types=tuple(data_cfg.get("code_types") or ("D", "P")),
            min_code_count=data_cfg.get("min_code_count"),
            top50=data_cfg.get("top50", "mullenbach"),
            text_preprocessing=data_cfg.get("text_preprocessing", "none"),
        )
    raise ConfigError(
        f"data.format={fmt!r} is not supported", hint=f"use one of {', '.join(FORMATS)}"
    )
