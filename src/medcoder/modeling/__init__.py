"""medcoder.modeling: the multi-label ICD classifier (encoder + label-wise attention).

Importing this package registers :class:`MedCoderConfig` / :class:`MedCoderForICDCoding` with
transformers' ``AutoConfig`` / ``AutoModel``, so ``import medcoder.modeling`` followed by
``AutoModel.from_pretrained(bundle/"model")`` loads a bundle's model with plain transformers and
*without* ``trust_remote_code``: bundles hold no code (schema 2), the installed package is the code.
"""

from medcoder.modeling.configuration import MedCoderConfig
from medcoder.modeling.loading import load_medcoder_model, load_tokenizer, tokenizer_class_for
from medcoder.modeling.model import MedCoderForICDCoding

__all__ = ["MedCoderConfig", "MedCoderForICDCoding", "load_medcoder_model", "load_tokenizer", "tokenizer_class_for"]

from transformers import AutoConfig, AutoModel  # noqa: E402

AutoConfig.register(MedCoderConfig.model_type, MedCoderConfig, exist_ok=True)
AutoModel.register(MedCoderConfig, MedCoderForICDCoding, exist_ok=True)
