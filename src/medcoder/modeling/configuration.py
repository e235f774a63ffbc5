"""Configuration of the medcoder classifier.

The encoder's own config is stored inside ours (``encoder``, a plain dict), so one
``config.json`` rebuilds the whole network offline: no hub id has to be reachable at load time.
"""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PretrainedConfig


class MedCoderConfig(PretrainedConfig):
    """Encoder + chunking + label-wise attention hyper-parameters.

    ``id2label`` holds the ICD codes, so the saved model alone says what each output means.
    """

    model_type = "medcoder"

    def __init__(
        self,
        encoder: dict[str, Any] | None = None,
        encoder_name_or_path: str | None = None,
        chunk_size: int = 128,
        max_chunks: int = 8,
        attention_dim: int | None = None,
        head_dropout: float = 0.1,
        token_pool_stride: int = 1,
        codeset_fy: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.encoder = dict(encoder or {})
        self.encoder_name_or_path = encoder_name_or_path
        self.chunk_size = int(chunk_size)
        self.max_chunks = int(max_chunks)
        self.attention_dim = attention_dim
        self.head_dropout = float(head_dropout)
        self.token_pool_stride = int(token_pool_stride)
        self.codeset_fy = codeset_fy
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        """Rebuild the encoder's ``PretrainedConfig`` from the stored dict (no network).

        ``auto_map`` is dropped: it would point transformers at code in a repository, and the
        encoder must be one transformers implements (see :mod:`medcoder.modeling.loading`).
        """
        params = dict(self.encoder)
        params.pop("auto_map", None)
        model_type = params.pop("model_type")
        return AutoConfig.for_model(model_type, **params)

    @property
    def hidden_size(self) -> int:
        return int(self.encoder["hidden_size"])
