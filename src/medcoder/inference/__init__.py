"""medcoder.inference: the one inference path, ``Coder.load(bundle).predict(texts)``.

The bundle format and its verification, the prediction schema (with audit fields), evidence
spans and batch prediction from files. Imports nothing from training, tracking or workflows
(import-linter enforces it), so a serving image needs neither the training stack nor MLflow.
"""

from medcoder.inference.bundle import BUNDLE_SCHEMA_VERSION, Manifest, read_manifest, verify_bundle
from medcoder.inference.coder import DEFAULT_MAX_NOTE_CHARS, Coder, resolve_bundle
from medcoder.inference.prediction import CodePrediction, DocumentPrediction, text_sha256

__all__ = [
    "BUNDLE_SCHEMA_VERSION",
    "DEFAULT_MAX_NOTE_CHARS",
    "CodePrediction",
    "Coder",
    "DocumentPrediction",
    "Manifest",
    "read_manifest",
    "resolve_bundle",
    "text_sha256",
    "verify_bundle",
]
