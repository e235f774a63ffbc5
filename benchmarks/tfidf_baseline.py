"""TF-IDF + one-vs-rest logistic regression: the classic strong baseline for ICD coding.

    python benchmarks/tfidf_baseline.py                      # fit on train, C tuned on dev
    python benchmarks/tfidf_baseline.py --train-on train+dev # C/threshold from dev, refit on both
    python benchmarks/tfidf_baseline.py --limit-docs 20 --c-grid 1   # smoke check

Same data, label space (codes of the fitting notes, ``min_count`` 1 as medcoder's default) and
metrics (``medcoder.evaluation.metrics.compute_all``, global threshold tuned on dev for micro-F1)
as ``scripts/train.py``. The last stdout line is one JSON object with the metrics and timings.

``--train-on train+dev``: C and the decision threshold are chosen on dev with a model fitted on
train only (dev metrics reported are that model's, so they are honest); the final model is then
refitted on train+dev with that C and scored on test with that threshold.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import numpy as np
from _common import emit_result, load_splits, machine_info, peak_rss_mib, set_offline_env
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline

log = logging.getLogger("benchmarks.tfidf")


def build_pipeline(args: argparse.Namespace, c: float) -> Pipeline:
    vectorizer = TfidfVectorizer(
        ngram_range=(1, args.max_ngram),
        sublinear_tf=True,
        min_df=args.min_df,
        max_df=0.95,
        max_features=args.max_features,
        strip_accents="unicode",
        lowercase=True,
        dtype=np.float32,
    )
    clf = LogisticRegression(solver=args.solver, C=c, max_iter=args.max_iter)
    return Pipeline([("tfidf", vectorizer), ("ovr", OneVsRestClassifier(clf, n_jobs=args.n_jobs))])


def fit(args: argparse.Namespace, c: float, texts: list[str], y: np.ndarray) -> tuple[Pipeline, float]:
    started = time.perf_counter()
    with warnings.catch_warnings():
        # codes absent from the fitting notes (train+dev label space fitted on train) become
        # constant predictors; sklearn warns once per such code.
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        model = build_pipeline(args, c).fit(texts, y)
    return model, time.perf_counter() - started


def predict(model: Pipeline, texts: list[str], n_labels: int) -> np.ndarray:
    probs = np.asarray(model.predict_proba(texts), dtype=np.float64)
    if probs.shape[1] != n_labels:  # pragma: no cover - OneVsRest keeps every column
        raise RuntimeError(f"{probs.shape[1]} probability columns for {n_labels} labels")
    return probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-on", choices=("train", "train+dev"), default="train")
    parser.add_argument("--c-grid", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                        help="inverse regularisation strengths tried on dev (best dev MAP wins)")
    parser.add_argument("--solver", choices=("liblinear", "saga"), default="liblinear")
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--max-features", type=int, default=100_000)
    parser.add_argument("--max-ngram", type=int, default=2)
    parser.add_argument("--min-df", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--limit-docs", type=int, default=None, help="first N notes of each split (smoke checks)")
    parser.add_argument("--output", default=None, help="also write the result JSON to this file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    set_offline_env()
    from medcoder.data import LabelSpace
    from medcoder.evaluation.metrics import codiesp_map, compute_all, tune_global_threshold

    wall_started = time.perf_counter()
    splits = load_splits(args.limit_docs)
    fit_names = ["train", "dev"] if args.train_on == "train+dev" else ["train"]
    fit_codes = [codes for name in fit_names for codes in splits[name]["codes"]]
    label_space = LabelSpace.from_codes(fit_codes, min_count=1)
    labels = label_space.codes
    texts = {name: list(splits[name]["text"]) for name in splits}
    gold = {name: [list(c) for c in splits[name]["codes"]] for name in splits}
    y = {name: label_space.encode(gold[name]) for name in splits}
    log.info("label space: %d codes from %s; notes %s", len(labels), args.train_on,
             {n: len(t) for n, t in texts.items()})

    # -- C on dev (always a train-only fit, so dev is held out) ---------------------------------
    search_started = time.perf_counter()
    grid: dict[float, dict[str, float]] = {}
    best = None
    for c in args.c_grid:
        model, seconds = fit(args, c, texts["train"], y["train"])
        dev_probs = predict(model, texts["dev"], len(labels))
        dev_map = codiesp_map(dev_probs, labels, gold["dev"])
        grid[c] = {"dev_map": float(dev_map), "fit_seconds": seconds}
        log.info("C=%g: dev MAP %.4f (fit %.1fs)", c, dev_map, seconds)
        if best is None or dev_map > best[1]:
            best = (c, dev_map, model, dev_probs, seconds)
    c, _, model, dev_probs, fit_seconds = best
    search_seconds = time.perf_counter() - search_started
    threshold = tune_global_threshold(dev_probs, y["dev"])

    if args.train_on == "train+dev":
        model, fit_seconds = fit(args, c, texts["train"] + texts["dev"], np.vstack([y["train"], y["dev"]]))

    result: dict[str, object] = {
        "system": f"tfidf-logreg ({args.train_on})",
        "train_on": args.train_on,
        "C": c,
        "c_grid": {str(k): v for k, v in grid.items()},
        "decision_threshold": threshold,
        "n_labels": len(labels),
        "n_features": len(model.named_steps["tfidf"].vocabulary_),
        "n_train_notes": sum(len(texts[n]) for n in fit_names),
        "limit_docs": args.limit_docs,
        "fit_seconds": fit_seconds,          # the final model only
        "c_search_seconds": search_seconds,  # all train-only fits of the grid
    }
    for name in ("dev", "test"):
        probs = dev_probs if name == "dev" else predict(model, texts[name], len(labels))
        values = compute_all(probs, y[name], threshold=threshold, gold_codes=gold[name], label_codes=labels)
        values["label_coverage"] = label_space.coverage(gold[name])
        result.update({f"{name}_{k}": float(v) for k, v in values.items()})
    # "training" = everything needed to produce the final model: grid search + refit if any
    result["train_wall_seconds"] = search_seconds + (fit_seconds if args.train_on == "train+dev" else 0.0)
    result["train_notes_per_second"] = result["n_train_notes"] / fit_seconds if fit_seconds else None
    result["wall_seconds"] = time.perf_counter() - wall_started
    result["peak_rss_mib"] = peak_rss_mib()
    result["machine"] = machine_info()
    log.info("C=%g: dev MAP %.4f, test MAP %.4f, test micro-F1 %.4f, test P@8 %.4f",
             c, result["dev_map"], result["test_map"], result["test_micro_f1"], result["test_p_at_8"])
    emit_result(result, args.output)


if __name__ == "__main__":
    main()
