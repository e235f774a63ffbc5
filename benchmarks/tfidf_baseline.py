"""TF-IDF + one-vs-rest logistic regression: the classic strong baseline for ICD coding.

    python benchmarks/tfidf_baseline.py                      # fit on train, C tuned on dev
    python benchmarks/tfidf_baseline.py --train-on train+dev # C/threshold from dev, refit on both
    python benchmarks/tfidf_baseline.py --limit-docs 20 --c-grid 10   # smoke check

Same data, label space (codes of the fitting notes, ``min_count`` 1 as medcoder's default) and
metrics (``medcoder.evaluation.metrics.compute_all``, global threshold tuned on dev for micro-F1)
as ``scripts/train.py``. The last stdout line is one JSON object with the metrics and timings.

``--train-on train+dev``: C and the decision threshold are chosen on dev with a model fitted on
train only, over the train label space (the dev metrics reported are that model's, identical to
``--train-on train``); the final model is then refitted on train+dev (label space: codes of
train+dev) with that C and scored on test with that threshold.
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
    clf = LogisticRegression(solver=args.solver, C=c, max_iter=args.max_iter, random_state=0)
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
    parser.add_argument("--c-grid", type=float, nargs="+", default=[10.0, 100.0, 1000.0, 10000.0, 100000.0],
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
    texts = {name: list(splits[name]["text"]) for name in splits}
    gold = {name: [list(c) for c in splits[name]["codes"]] for name in splits}
    # C and threshold are chosen with a train-only model over the train label space (medcoder's),
    # so the dev numbers are identical for both --train-on values and dev stays held out.
    search_space = LabelSpace.from_codes(splits["train"]["codes"], min_count=1)
    y_train = search_space.encode(gold["train"])
    y_dev = search_space.encode(gold["dev"])
    log.info("label space: %d codes from train; notes %s", len(search_space), {n: len(t) for n, t in texts.items()})

    # -- C on dev ---------------------------------------------------------------------------------
    search_started = time.perf_counter()
    grid: dict[float, dict[str, float]] = {}
    best = None
    for c in args.c_grid:
        model, seconds = fit(args, c, texts["train"], y_train)
        dev_probs = predict(model, texts["dev"], len(search_space))
        dev_map = codiesp_map(dev_probs, search_space.codes, gold["dev"])
        grid[c] = {"dev_map": float(dev_map), "fit_seconds": seconds}
        log.info("C=%g: dev MAP %.4f (fit %.1fs)", c, dev_map, seconds)
        if best is None or dev_map > best[1]:
            best = (c, dev_map, model, dev_probs, seconds)
    c, _, model, dev_probs, fit_seconds = best
    search_seconds = time.perf_counter() - search_started
    threshold = tune_global_threshold(dev_probs, y_dev)
    dev_values = compute_all(dev_probs, y_dev, threshold=threshold, gold_codes=gold["dev"], label_codes=search_space.codes)
    dev_values["label_coverage"] = search_space.coverage(gold["dev"])

    label_space = search_space
    if args.train_on == "train+dev":
        fit_codes = [codes for name in fit_names for codes in gold[name]]
        label_space = LabelSpace.from_codes(fit_codes, min_count=1)
        log.info("refit on train+dev with C=%g: %d codes", c, len(label_space))
        model, fit_seconds = fit(args, c, texts["train"] + texts["dev"], label_space.encode(fit_codes))
    test_probs = predict(model, texts["test"], len(label_space))
    y_test = label_space.encode(gold["test"])
    test_values = compute_all(test_probs, y_test, threshold=threshold, gold_codes=gold["test"], label_codes=label_space.codes)
    test_values["label_coverage"] = label_space.coverage(gold["test"])

    result: dict[str, object] = {
        "system": f"tfidf-logreg ({args.train_on})",
        "train_on": args.train_on,
        "C": c,
        "c_grid": {str(k): v for k, v in grid.items()},
        "decision_threshold": threshold,
        "n_labels": len(label_space),
        "n_features": len(model.named_steps["tfidf"].vocabulary_),
        "n_train_notes": sum(len(texts[n]) for n in fit_names),
        "limit_docs": args.limit_docs,
        # liblinear estimators that stopped at --max-iter (ConvergenceWarnings are silenced)
        "n_not_converged": int(sum(
            int(np.max(getattr(est, "n_iter_", [0])) >= args.max_iter) for est in model.named_steps["ovr"].estimators_
        )),
        "fit_seconds": fit_seconds,          # the final model only
        "c_search_seconds": search_seconds,  # all train-only fits of the grid
    }
    result.update({f"dev_{k}": float(v) for k, v in dev_values.items()})
    result.update({f"test_{k}": float(v) for k, v in test_values.items()})
    # "training" = everything needed to produce the final model: grid search + refit if any
    result["train_wall_seconds"] = search_seconds + (fit_seconds if args.train_on == "train+dev" else 0.0)
    result["train_notes_per_second"] = result["n_train_notes"] / fit_seconds if fit_seconds else None
    result["wall_seconds"] = time.perf_counter() - wall_started
    result["peak_rss_mib"] = peak_rss_mib()
    result["machine"] = machine_info(with_torch=False)
    log.info("C=%g: dev MAP %.4f, test MAP %.4f, test micro-F1 %.4f, test P@8 %.4f",
             c, result["dev_map"], result["test_map"], result["test_micro_f1"], result["test_p_at_8"])
    emit_result(result, args.output)


if __name__ == "__main__":
    main()
