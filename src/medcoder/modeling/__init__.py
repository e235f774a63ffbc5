"""medcoder.modeling: the multi-label ICD classifier (encoder + label-wise attention)."""

from medcoder.modeling.configuration import MedCoderConfig
from medcoder.modeling.model import MedCoderForICDCoding

__all__ = ["MedCoderConfig", "MedCoderForICDCoding"]

# Registering lets `AutoConfig` / `AutoModel.from_pretrained(bundle/model)` load the folder once
# medcoder is imported.
from transformers import AutoConfig, AutoModel  # noqa: E402

AutoConfig.register(MedCoderConfig.model_type, MedCoderConfig, exist_ok=True)
AutoModel.register(MedCoderConfig, MedCoderForICDCoding, exist_ok=True)
