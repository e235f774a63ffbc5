"""Corpora -> ``DatasetDict`` of ``{id, text, codes}`` rows, plus the label space.

``load_corpus(cfg.data)`` is the one entry point scripts use (its format table is
:mod:`medcoder.data.loaders`); the format-specific loaders are public for notebooks and tests.
"""

from __future__ import annotations

from medcoder.data.codes import canonical_code, normalize_code
from medcoder.data.codiesp import load_codiesp, load_codiesp_with_report
from medcoder.data.labels import LabelSpace
from medcoder.data.loaders import FORMATS, load_corpus
from medcoder.data.mimic import load_mimic
from medcoder.data.report import LoadReport, SplitReport
from medcoder.data.resolve import resolve_codiesp_root
from medcoder.data.tabular import load_tabular

__all__ = [
    "FORMATS",
    "LabelSpace",
    "LoadReport",
    "SplitReport",
    "canonical_code",
    "load_codiesp",
    "load_codiesp_with_report",
    "load_corpus",
    "load_mimic",
    "load_tabular",
    "normalize_code",  # deprecated alias of canonical_code
    "resolve_codiesp_root",
]
