"""Label-wise attention head (LAAT / PLM-ICD style).

Every code has its own query over *all* token states of the note, so a code mentioned once in the
fifth chunk is still seen: mean- or CLS-pooling would wash it out. Scoring follows Vu et al. 2020
(LAAT) as used by PLM-ICD (Huang et al. 2022): ``Z = tanh(W H)``, ``A = softmax_T(U Z)``,
``V = A H``, ``logit_l = <V_l, O_l> + b_l``.
"""

from __future__ import annotations

import torch
from torch import nn


class LabelAttentionHead(nn.Module):
    """Scores ``num_labels`` codes from token states ``(batch, tokens, hidden)``."""

    def __init__(self, hidden_size: int, num_labels: int, attention_dim: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Linear(hidden_size, attention_dim, bias=False)
        self.label_queries = nn.Linear(attention_dim, num_labels, bias=False)
        self.label_weights = nn.Parameter(torch.empty(num_labels, hidden_size))
        self.label_bias = nn.Parameter(torch.zeros(num_labels))

    def forward(
        self, states: torch.Tensor, mask: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Return logits ``(batch, num_labels)``; ``mask`` is 1 for real tokens, 0 for padding.

        With ``return_attention`` also the attention ``(batch, tokens, num_labels)``: where each
        code looked in the note, which the inference path turns into evidence spans.
        """
        states = self.dropout(states)
        z = torch.tanh(self.projection(states))  # (B, T, A)
        scores = self.label_queries(z)  # (B, T, L)
        scores = scores.masked_fill(~mask.bool().unsqueeze(-1), torch.finfo(scores.dtype).min)
        attention = torch.softmax(scores, dim=1)  # over tokens
        label_repr = torch.einsum("btl,bth->blh", attention, states)  # (B, L, H)
        logits = (label_repr * self.label_weights).sum(-1) + self.label_bias
        return (logits, attention) if return_attention else logits
