"""The classifier: any HF encoder over fixed-size chunks + label-wise attention over all tokens.

A ``PreTrainedModel`` so that ``save_pretrained`` / ``from_pretrained`` just work. ``forward``
accepts either chunked token ids (end-to-end fine-tuning, inference) or pre-computed encoder states
(``encoder_states``), which is how the frozen-encoder quickstart trains the head for many epochs on
a CPU: the encoder runs once per note instead of once per note per epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from medcoder.errors import ConfigError
from medcoder.modeling.configuration import MedCoderConfig
from medcoder.modeling.label_attention import LabelAttentionHead


class MedCoderForICDCoding(PreTrainedModel):
    """Encoder + chunk pooling + label-wise attention; outputs one logit per code."""

    config_class = MedCoderConfig
    base_model_prefix = "medcoder"
    main_input_name = "input_ids"

    def __init__(self, config: MedCoderConfig) -> None:
        super().__init__(config)
        # trust_remote_code=False: an ``auto_map`` smuggled into the stored encoder config must
        # neither prompt on stdin nor run code (encoder_config() also drops it).
        self.encoder = AutoModel.from_config(config.encoder_config(), trust_remote_code=False)
        hidden = config.hidden_size
        self.head = LabelAttentionHead(
            hidden_size=hidden,
            num_labels=config.num_labels,
            attention_dim=config.attention_dim or hidden,
            dropout=config.head_dropout,
        )
        #: An inference-only replacement of ``encoder`` (not a module, never saved): see encode_chunks.
        self.runtime_encoder: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self.post_init()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_encoder(
        cls,
        encoder_name_or_path: str,
        codes: Sequence[str],
        *,
        chunk_size: int = 128,
        max_chunks: int = 8,
        attention_dim: int | None = None,
        head_dropout: float = 0.1,
        token_pool_stride: int = 1,
        codeset_fy: int | None = None,
        encoder_overrides: dict | None = None,
    ) -> MedCoderForICDCoding:
        """A fresh classifier whose encoder carries pretrained weights and whose head is new.

        The encoder is loaded with ``trust_remote_code=False`` (a hub id or a local folder must
        be a model transformers itself implements): an encoder whose weights we train and ship
        in bundles must not need code from its repository, and loading must never prompt.
        """
        overrides = dict(encoder_overrides or {})
        if overrides.pop("trust_remote_code", False):
            raise ConfigError("model.encoder_overrides.trust_remote_code=True is not supported",
                              hint="use an encoder that transformers implements itself (no repository code)")
        encoder = AutoModel.from_pretrained(encoder_name_or_path, trust_remote_code=False, **overrides)
        config = MedCoderConfig(
            encoder=encoder.config.to_dict(),
            encoder_name_or_path=str(encoder_name_or_path),
            chunk_size=chunk_size,
            max_chunks=max_chunks,
            attention_dim=attention_dim,
            head_dropout=head_dropout,
            token_pool_stride=token_pool_stride,
            codeset_fy=codeset_fy,
            id2label=dict(enumerate(codes)),
            label2id={c: i for i, c in enumerate(codes)},
        )
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, LabelAttentionHead):
            std = 0.03
            nn.init.normal_(module.projection.weight, std=std)
            nn.init.normal_(module.label_queries.weight, std=std)
            nn.init.normal_(module.label_weights, std=std)
            nn.init.zeros_(module.label_bias)
        elif module is getattr(self, "encoder", None):
            return
        elif hasattr(self, "encoder") and any(module is m for m in self.encoder.modules()):
            # The encoder's own class initialises its weights; pretrained ones are loaded after.
            return

    # -- freezing -----------------------------------------------------------------------------
    def freeze_encoder(self, train_top_layers: int = 0) -> None:
        """Freeze the encoder except its top ``train_top_layers`` transformer layers."""
        for p in self.encoder.parameters():
            p.requires_grad = False
        if train_top_layers > 0:
            layers = _transformer_layers(self.encoder)
            for layer in layers[-train_top_layers:]:
                for p in layer.parameters():
                    p.requires_grad = True

    # -- forward ------------------------------------------------------------------------------
    def encode_chunks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states ``(n_chunks, chunk_size, hidden)`` for a flat batch of chunks.

        ``runtime_encoder`` (set by ``quantize_model(..., "onnx-int8")``) replaces the torch
        encoder for inference: every path that encodes chunks (the chunked forward, per-note
        scoring) then runs the same int8 graph.
        """
        if self.runtime_encoder is not None:
            return self.runtime_encoder(input_ids, attention_mask).to(self.dtype)
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_states: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_label_attention: bool = False,
        **_: object,
    ) -> SequenceClassifierOutput:
        """Either ``input_ids``/``attention_mask`` of shape ``(batch, chunks, chunk_size)``, or
        ``encoder_states`` ``(batch, tokens, hidden)`` with ``attention_mask`` ``(batch, tokens)``.

        ``return_label_attention`` puts the label attention ``(batch, positions, num_labels)``
        over the compacted, span-pooled token positions in ``attentions`` (evidence spans).
        """
        if attention_mask is None:
            raise ValueError("attention_mask is required")
        if encoder_states is None:
            if input_ids is None:
                raise ValueError("pass input_ids or encoder_states")
            if input_ids.dim() == 2:  # (batch, tokens): one chunk per note, e.g. from an HF pipeline
                input_ids, attention_mask = input_ids[:, None], attention_mask[:, None]
            batch, n_chunks, chunk_len = input_ids.shape
            flat_ids = input_ids.reshape(-1, chunk_len)
            flat_mask = attention_mask.reshape(-1, chunk_len)
            # Padding chunks (no real token) are skipped: notes differ a lot in length.
            used = flat_mask.any(dim=1)
            states = flat_ids.new_zeros(
                (flat_ids.shape[0], chunk_len, self.config.hidden_size), dtype=self.dtype
            )
            states[used] = self.encode_chunks(flat_ids[used], flat_mask[used]).to(states.dtype)
            encoder_states = states.reshape(batch, n_chunks * chunk_len, -1)
            attention_mask = flat_mask.reshape(batch, n_chunks * chunk_len)
        encoder_states, attention_mask = compact_tokens(encoder_states, attention_mask)
        encoder_states, attention_mask = pool_tokens(
            encoder_states.to(self.head.label_weights.dtype), attention_mask, self.config.token_pool_stride
        )
        attention = None
        if return_label_attention:
            logits, attention = self.head(encoder_states, attention_mask, return_attention=True)
        else:
            logits = self.head(encoder_states, attention_mask)
        loss = None
        if labels is not None:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits, attentions=attention)


def compact_tokens(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Move each note's real tokens to the front (order kept), padding to the back.

    Chunked input has padding at the end of its last chunk(s); cached states hold real tokens
    only. Compacting makes both paths feed the head the very same sequence, so a head trained on
    cached states scores identically at inference.
    """
    real = mask.bool()
    if bool(real.all()):
        return states, mask
    order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
    states = states.gather(1, order.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
    lengths = real.sum(1, keepdim=True)
    positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    new_mask = (positions < lengths).to(mask.dtype)
    width = int(lengths.max()) if lengths.numel() else 0
    return states[:, :width], new_mask[:, :width]


def pool_tokens(states: torch.Tensor, mask: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average token states over non-overlapping windows of ``stride`` real tokens.

    Why: label attention costs O(tokens x codes); on a CPU, attending over 4-token spans instead of
    single tokens makes the head ~4x cheaper, which buys many more epochs inside the budget.
    """
    if stride <= 1:
        return states, mask
    batch, tokens, hidden = states.shape
    pad = (-tokens) % stride
    if pad:
        states = torch.nn.functional.pad(states, (0, 0, 0, pad))
        mask = torch.nn.functional.pad(mask, (0, pad))
    weights = mask.to(states.dtype).reshape(batch, -1, stride, 1)
    summed = (states.reshape(batch, -1, stride, hidden) * weights).sum(2)
    counts = weights.sum(2)
    pooled = summed / counts.clamp(min=1)
    return pooled, (counts.squeeze(-1) > 0).to(mask.dtype)


def _transformer_layers(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's stack of transformer blocks (BERT/RoBERTa/DeBERTa: ``encoder.layer``)."""
    for path in ("encoder.layer", "layers", "transformer.layer", "layer"):
        obj: object = encoder
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return list(obj)
    raise ValueError(f"cannot find the transformer layers of {type(encoder).__name__}")
