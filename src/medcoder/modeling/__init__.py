"""medcoder.modeling: the multi-label ICD classifier (encoder + label-wise attention).

Importing this package registers :class:`MedCoderConfig` / :class:`MedCoderForICDCoding` with
transformers' ``AutoConfig`` / ``AutoModel``, so ``import medcoder.modeling`` followed by
``AutoModel.from_pretrained(bundle/"model")`` loads a bundle's model with plain transformers and
*without* ``trust_remote_code``: bundles hold no code (schema 2), the installed package is the code.

The views a fused coder can use are one explicit table, :data:`SCORERS` in
:mod:`medcoder.modeling.views` (``NEURAL`` names the neural view); which of them a training fuses,
and how, is that run's ``FusionPlan`` (:mod:`medcoder.workflows.fusion`).
"""

from medcoder.modeling.configuration import MedCoderConfig
from medcoder.modeling.dictionary import DictionaryScorer
from medcoder.modeling.hybrid import FusedScores, HybridScorer
from medcoder.modeling.loading import load_medcoder_model, load_tokenizer, tokenizer_class_for
from medcoder.modeling.model import MedCoderForICDCoding
from medcoder.modeling.neural import NeuralScorer
from medcoder.modeling.scorer import Scorer, Scores
from medcoder.modeling.stacker import Stacker
from medcoder.modeling.tfidf import TfidfScorer
from medcoder.modeling.views import NEURAL, SCORERS

__all__ = [
    "NEURAL",
    "SCORERS",
    "DictionaryScorer",
    "FusedScores",
    "HybridScorer",
    "MedCoderConfig",
    "MedCoderForICDCoding",
    "NeuralScorer",
    "Scorer",
    "Scores",
    "Stacker",
    "TfidfScorer",
    "load_medcoder_model",
    "load_tokenizer",
    "tokenizer_class_for",
]

from transformers import AutoConfig, AutoModel  # noqa: E402

AutoConfig.register(MedCoderConfig.model_type, MedCoderConfig, exist_ok=True)
AutoModel.register(MedCoderConfig, MedCoderForICDCoding, exist_ok=True)
