"""Stacker levers of issue 23, measured on the tuning split only (test is never loaded).

    python benchmarks/stacker_probe.py --corpus es-D --seeds 42 43 44 --json out.json

For each run seed: the shipped certification carve (``inner_train``, fraction 0.2, the run seed)
gives four fifths of train that fit and one fifth that tunes; CodiEsp dev (the certification split)
and test are dropped at load. :func:`medcoder.workflows.fusion.fit_fusion` fits the corpus's
non-neural views (``--views``) exactly as a training run does and hands back their out-of-fold
scores; the fitted views score the tuning notes once. Then each stacker arm is fitted on the same
out-of-fold scores and read on the same tuning scores, so the arms differ only in the stacker:

* ``lr``: the shipped :class:`medcoder.modeling.stacker.Stacker` (logistic regression);
* ``lr+category``: the same with per-view "parent category" features (the best score and rank of any
  code sharing the code's 3-character category in the note, and how many of them are in the top k);
* ``gbdt`` / ``gbdt+category``: a LightGBM gradient-boosted classifier on the same features,
  monotone increasing in each view's score (the views' beliefs can only raise a code).

Why a probe and not a sweep of train.py: the views are fitted once per seed, and the stacker arms
cost seconds on cached scores. The neural view is left out (its out-of-fold fits cost minutes per
seed on this CPU); the winning arm is then checked inside the full recipes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_result, git_commit, machine_info, set_offline_env  # noqa: E402

set_offline_env()

from datasets import DatasetDict  # noqa: E402

from medcoder.data import LabelSpace, load_codiesp, resolve_codiesp_root  # noqa: E402
from medcoder.data.splits import carve_certification  # noqa: E402
from medcoder.evaluation.metrics import codiesp_map, precision_at_k  # noqa: E402
from medcoder.modeling.stacker import Stacker, interaction_features, rank_in_note, top3_features  # noqa: E402
from medcoder.workflows.fusion import FusionPlan, TrainingCorpus, cross_fitted_logits, fit_fusion  # noqa: E402


def category_features(view_scores, views, codes, top_k):
    """Per view: best score / -log(1+best rank) over the code's 3-char category, and the category's
    count of codes in the note's top k."""
    cats = np.array([c.replace(".", "")[:3] for c in codes])
    uniq, inv = np.unique(cats, return_inverse=True)
    cols, names = [], []
    for v in views:
        s = view_scores[v].scores
        rank = rank_in_note(s)
        n = s.shape[0]
        best = np.full((n, len(uniq)), -np.inf, dtype=np.float32)
        np.maximum.at(best.T, inv, s.T)  # best[:, cat] = max over codes of cat
        best_rank = np.full((n, len(uniq)), np.iinfo(np.int64).max)
        np.minimum.at(best_rank.T, inv, rank.T)
        in_top = np.zeros((n, len(uniq)), dtype=np.float32)
        np.add.at(in_top.T, inv, (rank < top_k).T.astype(np.float32))
        cols += [best[:, inv], -np.log1p(best_rank[:, inv].astype(np.float32)), in_top[:, inv]]
        names += [f"{v}_cat_best", f"{v}_cat_rank", f"{v}_cat_top"]
    return np.stack([c.reshape(-1) for c in cols], axis=1).astype(np.float32), names


def cooc_features(ranks, views, label_counts, frequency, n_notes, labels=None, *, anchor_k=3, alpha=1.0):
    """Code co-occurrence given the note's likely codes: the anchors are the codes some view ranks in
    the note's top ``anchor_k``; for each code c, the log of the best smoothed P(c | anchor a != c) and
    its lift over P(c), from the fitting notes' labels. With ``labels`` (the fitting notes' own
    rows), each note's own labels are taken out of the counts first (leave-one-out), so a note never
    votes for its own codes."""
    shape = ranks[views[0]].shape
    anchor = np.zeros(shape, dtype=bool)
    for v in views:
        anchor |= ranks[v] < anchor_k
    freq = np.asarray(frequency, dtype=np.float64)
    best_p = np.zeros(shape, dtype=np.float32)
    best_lift = np.zeros(shape, dtype=np.float32)
    for i in range(shape[0]):
        a = np.flatnonzero(anchor[i])
        rows = label_counts[a].astype(np.float64)
        n_a, f, n = freq[a].copy(), freq.copy(), float(n_notes)
        if labels is not None:
            yi = labels[i].astype(np.float64)
            rows -= yi[a][:, None] * yi[None, :]
            n_a -= yi[a]
            f -= yi
            n -= 1
        prior = (f + 0.5) / (n + 1.0)
        cond = (rows + alpha * prior[None, :]) / (n_a[:, None] + alpha)
        cond[np.arange(len(a)), a] = 0.0
        m = cond.max(axis=0) if len(a) else prior
        best_p[i] = np.log(np.maximum(m, 1e-6))
        best_lift[i] = np.log(np.maximum(m, 1e-6) / prior)
    return [best_p, best_lift], ["cooc_logp", "cooc_lift"]


class Arm:
    def __init__(self, views, codes, *, category: bool, model: str, top_k=15, params=None, top3: bool = False,
                 logit: bool = False, inter: bool = False, cooc: bool = False, loo_frequency: bool = False,
                 C: float = 1.0, no_frequency: bool = False):
        self.no_frequency = no_frequency
        self.cooc = cooc
        self.loo_frequency = loo_frequency
        self.top3 = top3
        self.inter = inter
        self.logit = logit
        self.C = C
        self.base = Stacker(views, top_k=top_k, C=C)
        self.views, self.codes, self.category, self.model = views, codes, category, model
        self.params = params or {}

    def features(self, view_scores, frequency, labels=None):
        x, names = self.base.features(view_scores, frequency)
        ranks = {v: rank_in_note(view_scores[v].scores) for v in self.views}
        if self.loo_frequency and labels is not None:
            # a fitting note's own label out of its code's count: what a new note sees
            col = names.index("log_train_frequency")
            x[:, col] = np.log1p(np.asarray(frequency, np.float32)[None, :] - labels).reshape(-1)
        if self.no_frequency:  # the training-frequency prior left out
            keep = [j for j, n in enumerate(names) if n != "log_train_frequency"]
            x, names = x[:, keep], [names[j] for j in keep]
        if self.cooc:
            cols, extra = cooc_features(ranks, self.views, self.label_counts, frequency, self.n_fit, labels)
            x = np.concatenate([x, np.stack([c.reshape(-1) for c in cols], axis=1)], axis=1)
            names = names + extra
        if self.inter:  # the shipped fusion.stacker.interactions=true adds top3 + these
            cols, extra = interaction_features(view_scores, self.views, ranks, self.base.top_k)
            x = np.concatenate([x, np.stack([np.asarray(c, np.float32).reshape(-1) for c in cols], axis=1)], axis=1)
            names = names + extra
        if self.logit:
            cols, extra = [], []
            for v in self.views:
                sv = view_scores[v].scores
                if float(sv.min()) >= 0.0 and float(sv.max()) <= 1.0:  # a probability-like view
                    q = np.clip(sv, 1e-4, 1 - 1e-4)
                    cols.append(np.log(q / (1 - q)))
                    extra.append(f"{v}_logit")
            if cols:
                x = np.concatenate([x, np.stack([c.reshape(-1) for c in cols], axis=1).astype(np.float32)], axis=1)
                names = names + extra
        if self.top3:
            cols, extra = top3_features(self.views, ranks)
            x = np.concatenate([x, np.stack([c.reshape(-1) for c in cols], axis=1)], axis=1)
            names = names + extra
        if self.category:
            xc, nc = category_features(view_scores, self.views, self.codes, self.base.top_k)
            x, names = np.concatenate([x, xc], axis=1), names + nc
        return x, names

    def fit(self, view_scores, frequency, labels):
        lab = np.asarray(labels, dtype=np.float32)
        self.label_counts, self.n_fit = lab.T @ lab, lab.shape[0]
        x, names = self.features(view_scores, frequency, lab if self.cooc or self.loo_frequency else None)
        y = np.asarray(labels).reshape(-1).astype(np.int8)
        self.names = names
        if self.model == "lr":
            from sklearn.linear_model import LogisticRegression
            self.mean, self.scale = x.mean(0), x.std(0) + 1e-6
            self.clf = LogisticRegression(C=self.C, max_iter=1000).fit((x - self.mean) / self.scale, y)
        else:
            try:
                import lightgbm as lgb
            except ImportError as exc:  # measured once, not a medcoder dependency
                raise SystemExit("the gbdt arms need lightgbm (pip install lightgbm==4.7.0); "
                                 "it is not a medcoder dependency") from exc
            mono = [1 if n.endswith(("_score", "_cat_best")) else 0 for n in names]
            p = dict(n_estimators=300, learning_rate=0.05, num_leaves=31, min_child_samples=100,
                     subsample=1.0, colsample_bytree=1.0, reg_lambda=1.0, verbose=-1, n_jobs=2,
                     monotone_constraints=mono, random_state=0)
            p.update(self.params)
            self.clf = lgb.LGBMClassifier(**p).fit(x, y)
        return self

    def decision_function(self, view_scores, frequency):
        """The package Stacker's interface (``medcoder.workflows.fusion.cross_fitted_logits``)."""
        return self.decision(view_scores, frequency, view_scores[self.views[0]].scores.shape)

    def decision(self, view_scores, frequency, shape):
        x, _ = self.features(view_scores, frequency)
        if self.model == "lr":
            z = self.clf.decision_function((x - self.mean) / self.scale)
        else:
            z = self.clf.predict_proba(x, raw_score=True) if False else self.clf.predict(x, raw_score=True)
        return np.asarray(z, dtype=np.float32).reshape(shape)


ARMS = {
    "lr": dict(category=False, model="lr"),
    "lr+category": dict(category=True, model="lr"),
    "gbdt": dict(category=False, model="gbdt"),
    "gbdt+category": dict(category=True, model="gbdt"),
    "lr+top3": dict(category=False, model="lr", top3=True),
    "lr+logit": dict(category=False, model="lr", logit=True),
    "lr+inter": dict(category=False, model="lr", inter=True),
    "lr+top3+inter": dict(category=False, model="lr", top3=True, inter=True),
    "lr+loofreq": dict(category=False, model="lr", loo_frequency=True),
    "lr+top3+inter+loofreq": dict(category=False, model="lr", top3=True, inter=True, loo_frequency=True),
    "lr+cooc": dict(category=False, model="lr", cooc=True),
    "lr-freq": dict(category=False, model="lr", no_frequency=True),
    "lr+top3+inter+cooc": dict(category=False, model="lr", top3=True, inter=True, cooc=True),
}


def top_precision(z, y, shares=(0.1, 0.2, 0.3, 0.5)):
    """Precision of the highest-scored (note, code) pairs of the whole split, the top ``share`` x
    (number of gold pairs): how clean the top of the global ranking is (what auto-accept takes)."""
    order = np.argsort(-z.reshape(-1), kind="stable")
    gold = y.reshape(-1)[order]
    n_gold = int(y.sum())
    return {f"top{int(s * 100)}": round(float(gold[: max(1, int(s * n_gold))].mean()), 4) for s in shares}


def rare_share(z, y, frequency, *, counts=(1, 2, 3, 5, 10), targets=(0.90, 0.95)):
    """What the ``rare_code`` rule (``routing.min_train_count``) costs at the top: with codes seen in
    fewer than m fitting notes kept out, the largest share of the "predicted" pairs (the top
    n_gold pairs of the split, a stand-in for the decision threshold) whose best-scored eligible
    pairs still hold precision >= target, and that precision."""
    flat, gold = z.reshape(-1), y.reshape(-1)
    n_pred = int(gold.sum())
    predicted = np.argsort(-flat, kind="stable")[:n_pred]
    col = predicted % y.shape[1]
    out = {}
    for m in counts:
        hits = gold[predicted[np.asarray(frequency)[col] >= m]].astype(float)
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1) if len(hits) else np.array([])
        for t in targets:
            ok = np.flatnonzero(prec >= t)
            k = int(ok.max()) + 1 if len(ok) else 0
            out[f"m{m}@{t:.2f}"] = [round(k / max(1, n_pred), 3), round(float(prec[k - 1]), 3) if k else None]
    return out


def ltt_share(z, y, frequency, *, targets=(0.95, 0.90, 0.85), min_train_count=2, delta=0.1):
    """Learn-then-Test on this split as if it certified (the package's own
    :func:`medcoder.calibration.risk_control.select_accept_threshold`): the predicted pairs are the
    split's top n_gold, the eligible ones those of codes seen in ``min_train_count`` fitting notes
    (the shipped ``rare_code`` bar); per target, the share of predicted pairs accepted (0: nothing
    certified). A proxy for what dev certification will read: the very top of the ranking."""
    kept = np.broadcast_to(np.asarray(frequency)[None, :] >= min_train_count, z.shape)
    return ltt_on_pairs(z.reshape(-1), y.reshape(-1), kept.reshape(-1), targets=targets, delta=delta)


def ltt_on_pairs(z, y, kept, *, targets=(0.95, 0.90, 0.85), delta=0.1, min_coverage=0.0):
    """Learn-then-Test (:func:`medcoder.calibration.risk_control.select_accept_threshold`) over
    flat (note, code) pairs: the predicted pairs are the top n_gold by ``z``, the eligible ones those
    also ``kept`` by the routing rules; per target, the share of predicted pairs certified."""
    from medcoder.calibration.risk_control import select_accept_threshold
    from medcoder.modeling.scoring import sigmoid

    predicted = np.zeros(z.shape, dtype=bool)
    n_pred = int(y.sum())
    predicted[np.argsort(-z, kind="stable")[:n_pred]] = True
    eligible = predicted & kept
    probs = sigmoid(z.astype(np.float64))
    out = {}
    for t in targets:
        r = select_accept_threshold(probs, y, eligible, target_precision=t, delta=delta, min_coverage=min_coverage)
        out[f"{t:.2f}"] = round(r.n_calibration_accepted / max(1, n_pred), 3)
    return out


def predicted_top(z, y):
    """The pooled "predicted" pairs: the top n_gold by ``z`` (a stand-in for the decision threshold)."""
    predicted = np.zeros(z.shape, dtype=bool)
    predicted[np.argsort(-z, kind="stable")[: int(y.sum())]] = True
    return predicted


def read_top(z, y, kept):
    """How the top of a pooled held-out ranking reads (flat pairs): the errors among the best-scored
    eligible predicted pairs, and Learn-then-Test as the shipped routing runs it (``min_coverage``
    0.10 over the pairs ``kept`` by the rules). Shared by the ``--fifths`` judge and
    ``nested_corpus.py --read-fifths``, so both read the same way."""
    eligible = predicted_top(z, y) & kept
    order = np.argsort(-np.where(eligible, z, -np.inf), kind="stable")[: int(eligible.sum())]
    errors = np.cumsum(~y[order])
    return {"errors_in_best_eligible": {str(n): int(errors[n - 1]) for n in (50, 100, 200, 400, 800)
                                        if n <= len(errors)},
            "ltt_share": ltt_on_pairs(z, y, kept, min_coverage=0.10), "n_eligible": int(eligible.sum())}


def per_note_ap(scores, codes, gold):
    return np.array([codiesp_map(scores[i : i + 1], codes, [gold[i]]) for i in range(len(gold))])


def paired(a, b, *, n_boot=5000, seed=0):
    d = a - b
    d = d[~np.isnan(d)]  # notes without a gold code have no AP (CodiEsp-P: a few)
    rng = np.random.default_rng(seed)
    boots = rng.choice(d, size=(n_boot, len(d)), replace=True).mean(axis=1)
    return {"delta": round(float(d.mean()), 4), "ci95": [round(float(np.quantile(boots, 0.025)), 4),
                                                          round(float(np.quantile(boots, 0.975)), 4)]}


def make_plan(args, seed, language, code_type):
    """The fusion plan of a probe run: the corpus's lexicon sources and the shipped stacker settings."""
    sources = ("mentions", "descriptions") if language == "es" else ("descriptions",)
    if code_type == "P" and language == "en":
        sources = ()
    if code_type == "P" and language == "es":
        sources = ("mentions",)
    if args.projected:
        sources = (*sources, "projected_mentions")
    if args.spanish_titles:
        sources = (*sources, "spanish_titles")
    return FusionPlan(views=tuple(args.views), folds=args.folds, seed=seed, stacker_params={"top_k": 15, "C": 1.0},
                      lexicon_sources=sources, view_params=json.loads(args.view_params))


def run_seed(seed, args, corpus, language, code_type):
    splits = carve_certification(corpus, "inner_train", fraction=0.2, seed=seed)
    train, tune = splits["train"], splits["dev"]
    all_fit_codes = list(train["codes"])
    if args.fit_share < 1:  # a learning-curve point: fit on a random share of the fitting notes
        keep = np.sort(np.random.default_rng(seed).permutation(len(train))[: int(round(args.fit_share * len(train)))])
        train = train.select(keep.tolist())
    space = LabelSpace.from_codes(all_fit_codes if args.space_from_all else train["codes"], min_count=1,
                                  codeset_fy=2026)
    codes = list(space.codes)
    y_train = space.encode(train["codes"])
    y_tune = space.encode(tune["codes"]).astype(bool)
    gold = [list(c) for c in tune["codes"]]
    plan = make_plan(args, seed, language, code_type)
    t0 = time.time()
    fr = fit_fusion(plan, TrainingCorpus(language=language, code_type=code_type, codeset_fy=2026),
                    DatasetDict({"train": train}), space, y_train)
    fit_s = time.time() - t0
    tune_views = fr.scorer.score_views(list(tune["text"]))
    frequency = fr.scorer.frequency
    out = {"design": {"fit_notes": len(train), "tuning_notes": len(tune), "codes": len(codes), "views_fit_s": round(fit_s, 1)}}
    aps = {}
    for name in args.arms:
        t0 = time.time()
        arm = Arm(list(args.views), codes, **ARMS[name], **json.loads(args.stacker)).fit(fr.oof, frequency, y_train)
        z = arm.decision(tune_views, frequency, (len(tune), len(codes)))
        aps[name] = per_note_ap(z, codes, gold)
        out[name] = {"tuning_map": round(codiesp_map(z, codes, gold), 4),
                     "tuning_p_at_8": round(precision_at_k(z, y_tune, 8), 4), "fit_s": round(time.time() - t0, 1),
                     "tuning_top_precision": top_precision(z, y_tune),
                     "tuning_ltt": ltt_share(z, y_tune, frequency),
                     "rare_share": rare_share(z, y_tune, frequency)}
        if args.tuning_cv:  # the same arm fitted on held-out view scores: K folds over the tuning notes
            z_cv = cross_fitted_logits(lambda n=name: Arm(list(args.views), codes, **ARMS[n], **json.loads(args.stacker)),
                                       tune_views, frequency, y_tune, folds=args.tuning_cv, seed=seed)
            out[name]["tuning_cv_map"] = round(codiesp_map(z_cv, codes, gold), 4)
            out[name]["tuning_cv_top_precision"] = top_precision(z_cv, y_tune)
    if args.holdout_stacker:
        out["holdout"] = holdout_stacker(args, plan, train, tune, language, code_type, seed,
                                         refit=(tune_views, frequency, codes, y_tune))
    for name in args.arms:
        out[name]["paired_vs_lr"] = paired(aps[name], aps["lr"], seed=seed)
        print(args.corpus, seed, name, json.dumps(out[name]), flush=True)
    return out


def _concat(a, b):
    from medcoder.modeling.scorer import Scores

    return {v: Scores(scores=np.concatenate([a[v].scores, b[v].scores]),
                      flags={f: np.concatenate([np.asarray(a[v].flags[f]), np.asarray(b[v].flags[f])])
                             for f in a[v].flags})
            for v in a}


def held_out_fit(plan, corpus_meta, train, share, rng_seed):
    """The held-out stacker's setting: the views fitted on 1 - ``share`` of ``train`` (a seeded
    permutation), the other ``share`` left to fit a stacker on their scores. Returns the fitting
    part, the held-out part, the views part's label space, its fusion and the held-out notes' view
    scores."""
    perm = np.random.default_rng(rng_seed).permutation(len(train))
    n_hold = int(round(share * len(train)))
    fit_part, hold_part = train.select(np.sort(perm[n_hold:]).tolist()), train.select(np.sort(perm[:n_hold]).tolist())
    space = LabelSpace.from_codes(fit_part["codes"], min_count=1, codeset_fy=2026)
    fr = fit_fusion(plan, corpus_meta, DatasetDict({"train": fit_part}), space, space.encode(fit_part["codes"]))
    return fit_part, hold_part, space, fr, fr.scorer.score_views(list(hold_part["text"]))


def holdout_stacker(args, plan, train, tune, language, code_type, seed, *, refit):
    """One level down, the choice between the refit (views and an out-of-fold stacker on every
    labelled note) and a stacker fitted on held-out notes' scores of the views it will meet (views
    on the rest, no refit): the fitting notes split into a views part (1 - share) and a stacker part
    (share), both read on the same tuning notes as the arms above, which play the refit.
    ``held_out>refit``: the held-out stacker applied to the views fitted on every fitting note
    (``refit``: their tuning scores, frequency, codes and tuning labels), the pairing that lost EN-P's certification."""
    fit_part, hold_part, space, fr, hold_views = held_out_fit(
        plan, TrainingCorpus(language=language, code_type=code_type, codeset_fy=2026), train,
        args.holdout_stacker, seed + 7)
    codes = list(space.codes)
    frequency = fr.scorer.frequency
    tune_views = fr.scorer.score_views(list(tune["text"]))
    y_fit, y_hold = space.encode(fit_part["codes"]), space.encode(hold_part["codes"])
    y_tune = space.encode(tune["codes"]).astype(bool)
    gold = [list(c) for c in tune["codes"]]
    out = {"views_notes": len(fit_part), "stacker_notes": len(hold_part), "codes": len(codes)}
    sources = {"oof": (fr.oof, y_fit), "held_out": (hold_views, y_hold),
               "pooled": (_concat(fr.oof, hold_views), np.concatenate([y_fit, y_hold]))}
    for name in args.arms:
        for src, (views, y) in sources.items():
            arm = Arm(list(args.views), codes, **ARMS[name], **json.loads(args.stacker)).fit(views, frequency, y)
            z = arm.decision(tune_views, frequency, (len(tune), len(codes)))
            out[f"{name}:{src}"] = {"tuning_map": round(codiesp_map(z, codes, gold), 4),
                                    "tuning_top_precision": top_precision(z, y_tune),
                                    "tuning_ltt": ltt_share(z, y_tune, frequency)}
            if src == "held_out":
                r_views, r_frequency, r_codes, y_r = refit
                z = arm.decision(r_views, r_frequency, (len(tune), len(r_codes)))
                out[f"{name}:held_out>refit"] = {"tuning_map": round(codiesp_map(z, r_codes, gold), 4),
                                                 "tuning_top_precision": top_precision(z, y_r),
                                                 "tuning_ltt": ltt_share(z, y_r, r_frequency)}
    print(args.corpus, seed, "holdout", json.dumps(out), flush=True)
    return out


def run_fifths(seed, args, corpus, language, code_type):
    """The top of the ranking judged on all of train, held out fold by fold (``--fifths``).

    Why: one tuning fifth (100 notes) has no power where dev certification starts (its top 50
    codes may hold one error at 0.90), so a stacker change that dirties that band passed the tuning
    split and failed dev (choices.md section 9). Here the seed's permutation cuts train into five
    fifths; each fifth in turn is held out while the other four play the shipped carve's fitting
    notes (views and out-of-fold stacker fitted as :func:`run_seed` does), and each arm is paired
    three ways: ``ship`` (the out-of-fold stacker), ``held>refit`` (a stacker fitted on the scores
    of views fitted on 1 - ``--holdout-stacker`` of the four fifths, applied to the four-fifths
    views: what ``fusion.stacker_fit=tuning`` with the refit ships) and ``blend`` (the mean of the
    two logits; ``blend@w`` for other ``--blend-weights``: w on the held-out stacker). The five held-out fifths are pooled: 500 notes whose labels no fit of theirs saw,
    twice CodiEsp dev, read with MAP, the global top's precision, the errors among the best-scored
    eligible pairs, and Learn-then-Test as the shipped routing runs it (``min_coverage`` 0.10, the
    ``rare_code`` bar 2, δ 0.1; the predicted pairs are the pooled top n_gold). Dev and test are
    never loaded."""
    share = args.holdout_stacker or 0.25
    train_all = corpus["train"]
    perm = np.random.default_rng(seed).permutation(len(train_all))
    corpus_meta = TrainingCorpus(language=language, code_type=code_type, codeset_fy=2026)
    plan = make_plan(args, seed, language, code_type)
    pooled: dict[str, dict[str, list]] = {}
    for k in range(5):
        held = np.sort(perm[k::5])
        train = train_all.select(np.setdiff1d(np.arange(len(train_all)), held).tolist())
        tune = train_all.select(held.tolist())
        space = LabelSpace.from_codes(train["codes"], min_count=1, codeset_fy=2026)
        codes = list(space.codes)
        y_train, y_tune = space.encode(train["codes"]), space.encode(tune["codes"]).astype(bool)
        gold = [list(c) for c in tune["codes"]]
        fr = fit_fusion(plan, corpus_meta, DatasetDict({"train": train}), space, y_train)
        tune_views, frequency = fr.scorer.score_views(list(tune["text"])), fr.scorer.frequency
        _, hold_part, sspace, sfr, hold_views = held_out_fit(plan, corpus_meta, train, share, seed + 7 + k)
        shape = (len(tune), len(codes))
        eligible = np.broadcast_to(np.asarray(frequency)[None, :] >= 2, shape)
        for name in args.arms:
            settings = {**ARMS[name], **json.loads(args.stacker)}
            z_ship = Arm(list(args.views), codes, **settings).fit(fr.oof, frequency, y_train).decision(
                tune_views, frequency, shape)
            held_arm = Arm(list(args.views), list(sspace.codes), **settings).fit(
                hold_views, sfr.scorer.frequency, sspace.encode(hold_part["codes"]))
            z_held = held_arm.decision(tune_views, frequency, shape)
            blends = [(f"{name}:blend" if w == 0.5 else f"{name}:blend@{w:g}", (1 - w) * z_ship + w * z_held)
                      for w in args.blend_weights]
            for pairing, z in ((f"{name}:ship", z_ship), (f"{name}:held>refit", z_held), *blends):
                acc = pooled.setdefault(pairing, {"z": [], "y": [], "eligible": [], "ap": [], "note": []})
                acc["note"].append(np.repeat(held, len(codes)))  # the note's index in CodiEsp train
                acc["z"].append(z.reshape(-1))
                acc["y"].append(y_tune.reshape(-1))
                acc["eligible"].append(eligible.reshape(-1))
                acc["ap"].append(per_note_ap(z, codes, gold))
        print(args.corpus, seed, f"fifth {k} done", flush=True)
    out = {}
    dumped = {}
    for pairing, acc in pooled.items():
        z, y, elig = (np.concatenate(acc[key]) for key in ("z", "y", "eligible"))
        if args.dump_pairs:  # the predicted pairs only: what a certification procedure reads
            predicted = predicted_top(z, y)
            key = pairing.replace(":", "_").replace(">", "_").replace("@", "_w")
            dumped |= {f"{seed}/{key}/z": z[predicted], f"{seed}/{key}/y": y[predicted],
                       f"{seed}/{key}/eligible": elig[predicted],
                       f"{seed}/{key}/note": np.concatenate(acc["note"])[predicted]}
        out[pairing] = {"map": round(float(np.nanmean(np.concatenate(acc["ap"]))), 4),
                        "top_precision": top_precision(z, y), **read_top(z, y, elig), "n_pred": int(y.sum())}
        print(args.corpus, seed, pairing, json.dumps(out[pairing]), flush=True)
    if args.dump_pairs:
        out["_pairs"] = dumped
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="es-D", choices=["es-D", "es-P", "en-D", "en-P"])
    ap.add_argument("--views", nargs="+", default=["tfidf", "dictionary"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--arms", nargs="+", default=["lr"], choices=list(ARMS))
    ap.add_argument("--view-params", default="{}",
                    help='JSON, e.g. {"dictionary": {"loose_window": 6, "projection_min_notes": 3}}')
    ap.add_argument("--projected", action="store_true", help="add English projected mentions (en-*)")
    ap.add_argument("--spanish-titles", action="store_true", help="add the cie Spanish WHO titles (es-D)")
    ap.add_argument("--fit-share", type=float, default=1.0,
                    help="fit on this random share of the fitting notes (a learning-curve point; the tuning notes stay)")
    ap.add_argument("--space-from-all", action="store_true",
                    help="with --fit-share: the label space of all fitting notes (only the examples shrink)")
    ap.add_argument("--folds", type=int, default=3, help="K of the views' cross-fitting (fusion.folds)")
    ap.add_argument("--stacker", default="{}", help='JSON stacker settings for every arm, e.g. {"C": 0.1, "top_k": 10}')
    ap.add_argument("--word-view", action="store_true",
                    help="register a second TF-IDF view, 'tfidf_word' (word 1-2-grams), for --views to name")
    ap.add_argument("--tuning-cv", type=int, default=0, metavar="K",
                    help="also fit each arm by K folds over the tuning notes' view scores (tuning_cv_map)")
    ap.add_argument("--holdout-stacker", type=float, default=0.0, metavar="SHARE",
                    help="also fit the views on 1 - SHARE of the fitting notes and each arm's stacker on the "
                         "held-out SHARE's scores (vs out-of-fold, vs both pooled), read on the tuning notes")
    ap.add_argument("--fifths", action="store_true",
                    help="judge each arm on all of train held out fifth by fifth (shipped, held-out stacker "
                         "through the refit, their blend): see run_fifths")
    ap.add_argument("--blend-weights", type=float, nargs="+", default=[0.5],
                    help="with --fifths: the held-out stacker's weight in each blend ((1 - w) x ship + w x held)")
    ap.add_argument("--dump-pairs", type=Path, metavar="NPZ",
                    help="--fifths: also save every pairing's pooled predicted pairs (score, gold, eligible, "
                         "train note index) per seed, for benchmarks/ltt_grid_probe.py")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.word_view:
        import medcoder.modeling.views as view_table
        from medcoder.modeling.tfidf import TfidfScorer

        class WordTfidf(TfidfScorer):  # a probe arm, not a shipped view
            name = "tfidf_word"

            def __init__(self, **kw):
                super().__init__(**{"analyzer": "word", "ngram_range": (1, 2), **kw})

        view_table.SCORERS = view_table.SCORERS.with_entry("tfidf_word", WordTfidf)
    started = time.time()
    language, code_type = args.corpus.split("-")
    corpus = load_codiesp(resolve_codiesp_root(download=False), language=language, code_type=code_type)
    corpus = DatasetDict({"train": corpus["train"], "dev": corpus["dev"]})  # test never read
    if args.fifths:
        per_seed = {s: run_fifths(s, args, corpus, language, code_type) for s in args.seeds}
        if args.dump_pairs:
            arrays = {k: v for s in args.seeds for k, v in per_seed[s].pop("_pairs").items()}
            tmp = args.dump_pairs.with_name(args.dump_pairs.name + ".tmp.npz")
            np.savez_compressed(tmp, **arrays)
            tmp.replace(args.dump_pairs)
        summary = {p: {key: [per_seed[s][p][key] for s in args.seeds]
                       for key in ("map", "top_precision", "errors_in_best_eligible", "ltt_share")}
                   for p in per_seed[args.seeds[0]]}
        for row in summary.values():
            row["map_mean"] = round(float(np.mean(row["map"])), 4)
        print("summary", json.dumps(summary), flush=True)
        emit_result({"system": "stacker_probe_fifths", "commit": git_commit(), "command": " ".join(sys.argv),
                     "corpus": args.corpus, "views": args.views, "view_params": json.loads(args.view_params),
                     "per_seed": {str(k): v for k, v in per_seed.items()}, "summary": summary,
                     "wall_s": round(time.time() - started, 1), "machine": machine_info(with_torch=False)}, args.json)
        return
    per_seed = {s: run_seed(s, args, corpus, language, code_type) for s in args.seeds}
    summary = {}
    for name in args.arms:
        v = np.array([per_seed[s][name]["tuning_map"] for s in args.seeds])
        summary[name] = {"tuning_map": [round(float(v.mean()), 4), round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 4)],
                         "delta_per_seed": [per_seed[s][name]["paired_vs_lr"]["delta"] for s in args.seeds]}
        if args.tuning_cv:
            cv = np.array([per_seed[s][name]["tuning_cv_map"] for s in args.seeds])
            summary[name]["tuning_cv_map"] = [round(float(cv.mean()), 4), round(float(cv.std(ddof=1)) if len(cv) > 1 else 0.0, 4)]
    print("summary", json.dumps(summary), flush=True)
    emit_result({"system": "stacker_probe", "commit": git_commit(), "command": " ".join(sys.argv),
                 "corpus": args.corpus, "views": args.views, "view_params": json.loads(args.view_params),
                 "spanish_titles": args.spanish_titles, "projected": args.projected,
                 "per_seed": {str(k): v for k, v in per_seed.items()},
                 "summary": summary, "wall_s": round(time.time() - started, 1),
                 "machine": machine_info(with_torch=False)}, args.json)


if __name__ == "__main__":
    main()
