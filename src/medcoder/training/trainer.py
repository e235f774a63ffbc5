"""HF ``Trainer`` wiring: length-grouped batches and a separate learning rate for the new head.

Why HF Trainer rather than a hand-written loop: it already gives AdamW + warm-up schedules,
gradient accumulation, checkpointing with optimizer/scheduler/RNG state, exact resume
(``resume_from_checkpoint``), early stopping with best-checkpoint reload and progress bars. We only
add what it lacks for this model.
"""

from __future__ import annotations

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler


class MedCoderTrainer(Trainer):
    """``Trainer`` + length-grouped sampling from the dataset's ``lengths`` + head learning rate."""

    def __init__(self, *args, head_learning_rate: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = getattr(dataset, "lengths", None)
        if lengths is None:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator()
        generator.manual_seed(self.args.data_seed if self.args.data_seed is not None else self.args.seed)
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            lengths=lengths,
            generator=generator,
        )

    def create_optimizer(self, model=None):
        """Encoder at ``learning_rate``, label-attention head at ``head_learning_rate``."""
        model = self.model if model is None else model
        if self.optimizer is None and self.head_learning_rate is not None:
            decay = set(self.get_decay_parameter_names(model))
            groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
            for name, p in model.named_parameters():
                if p.requires_grad:
                    groups.setdefault((name.startswith("head."), name in decay), []).append(p)
            param_groups = [
                {
                    "params": params,
                    "lr": self.head_learning_rate if is_head else self.args.learning_rate,
                    "weight_decay": self.args.weight_decay if decays else 0.0,
                }
                for (is_head, decays), params in groups.items()
            ]
            self.optimizer = torch.optim.AdamW(param_groups, lr=self.args.learning_rate)
        return super().create_optimizer(model)
