"""medcoder: multi-label ICD-10 coding with calibrated confidence and human-review routing.

The model is an assistant to medical coders: every predicted code is tagged ``auto_accept`` or
``human_review`` with a reason, and every decision carries an audit trail.

The user's surface::

    from medcoder import Coder, LabelSpace, load_codeset
    coder = Coder.load("bundles/codiesp-d")          # or "models:/medcoder-icd10@champion"
    predictions = coder.predict(["Patient with type 2 diabetes ..."])

Names are imported on first use (PEP 562), so ``import medcoder`` stays cheap and scripts that
only need ``medcoder.errors`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Coder": "medcoder.inference",
    "DocumentPrediction": "medcoder.inference",
    "CodePrediction": "medcoder.inference",
    "LabelSpace": "medcoder.data",
    "load_corpus": "medcoder.data",
    "CodeSet": "medcoder.codesets",
    "load_codeset": "medcoder.codesets",
    "RoutingPolicy": "medcoder.routing",
    "MedCoderForICDCoding": "medcoder.modeling",
    "MedCoderConfig": "medcoder.modeling",
    "BundleError": "medcoder.errors",
    "ConfigError": "medcoder.errors",
    "DataError": "medcoder.errors",
    "MedcoderError": "medcoder.errors",
}

__all__ = [
    "BundleError",
    "CodePrediction",
    "CodeSet",
    "Coder",
    "ConfigError",
    "DataError",
    "DocumentPrediction",
    "LabelSpace",
    "MedCoderConfig",
    "MedCoderForICDCoding",
    "MedcoderError",
    "RoutingPolicy",
    "load_codeset",
    "load_corpus",
    "__version__",
]

if TYPE_CHECKING:
    from medcoder.codesets import CodeSet, load_codeset
    from medcoder.data import LabelSpace, load_corpus
    from medcoder.errors import BundleError, ConfigError, DataError, MedcoderError
    from medcoder.inference import CodePrediction, Coder, DocumentPrediction
    from medcoder.modeling import MedCoderConfig, MedCoderForICDCoding
    from medcoder.routing import RoutingPolicy


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medcoder' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
