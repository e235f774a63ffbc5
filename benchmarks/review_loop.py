"""The review loop measured (issue 21): false alarms and time to detection of the audit alarm, the
recovery curve of a coder retrained on reviewed notes, and a simulated code-set change.

A simulated reviewer / auditor answers with CodiEsp's gold codes (CodiEsp-D English). Every draw is
seeded; every measurement is one MLflow run (experiment ``review_loop``, sqlite store under
``--home``) and one JSON file in ``--home``; ``report`` turns the JSON files into the markdown and
the plot. Run from the repository root after the README's main command (``bash scripts/quickstart.sh``,
which writes the bundle and the test predictions this script defaults to):

    python benchmarks/review_loop.py false-alarms              # 17 min (7 settings x 1,000 streams x 5,000 codes)
    python benchmarks/review_loop.py detection                 # 7 min (re-scores the 250 test notes once)
    python benchmarks/review_loop.py recovery                  # 18 train+calibrate runs, ~1 min each when idle
    python benchmarks/review_loop.py codeset                   # 6 min (stops once half the F1 is reached)
    python benchmarks/review_loop.py report --out benchmarks/results/<date>-review-loop.md [--notes FILE]

(times measured on the 2-core CPU VM, no GPU, while other jobs shared it.) ``--seed`` (before the
subcommand) sets every draw; ``recovery`` writes ``recovery_s<seed>.json``, and ``report`` shows every
seed it finds (the table: ``--seed``'s).

What each one does (the alarm is :func:`medcoder.review.monitor.alarm_step`, at the bundle's own
``targets`` from ``calibration.json``):

* ``false-alarms``: the main job's auto-accepted codes on the test notes, scored against gold, per
  note. An audit draws auto-accepted notes (notes with at least one auto-accepted code) at random
  and scores every auto-accepted code of a drawn note, so a stream is a sequence of whole notes.
  Two stream models: (i) the real pool in a random order, each note once (the finite test set); (ii)
  notes re-sampled with replacement from the pool up to ``--horizon`` audited codes (a long
  deployment whose notes look like the test notes). The share of streams that ever suspend, with a
  95 % Clopper-Pearson interval, at the bundle's target, at the pool's own precision (the null
  holding with equality: the hardest case for the δ promise), and at targets the pool does not
  meet (a bundle "certified" above what it delivers). Codes re-sampled one by one (no clustering)
  are shown beside it to see what auditing whole notes costs.
* ``detection``: the model degraded so that its true auto-accept precision is about 0.75, two ways:
  (a) the stacker's weights perturbed (Gaussian noise, scaled to the weight vector's RMS; the
  fused scores recomputed from the bundle's per-view scores of the test notes and routed by the
  bundle's own calibrator, τ and policy through :func:`medcoder.inference.coder.routing_inputs`);
  the noise size walks ``--sigmas`` (noise seeds in order) and, where the precision crosses
  ``--degraded-precision``, is bisected until it lands within ``--tolerance`` with at least 100
  accepted codes; (b) the bundle's predictions unchanged, the gold codes remapped for a seeded set of codes
  (a hospital that codes them otherwise: each becomes a sibling code), added until the precision
  is about the same. Audited codes and audited notes until suspension (median, IQR), and notes
  processed until suspension at each audit rate: each processed note is drawn from the test notes
  with replacement and, when it has an auto-accepted code, audited with probability ``rate``.
* ``recovery``: the cheapest honest retraining recipe on this CPU: ``experiment=hybrid
  fusion.views=[tfidf,dictionary]`` (the main job's TF-IDF and ICD-10-CM dictionary views and
  stacker, without the neural head; ~1 min for train + calibrate instead of ~25 min), each step
  ``scripts/train.py`` + ``scripts/calibrate.py`` in its own process on ``data=jsonl`` files (train:
  the notes reviewed so far; dev and test: CodiEsp's). Start: ``--start`` train notes; then
  batches of ``--batch`` notes from the rest of train (labels = gold), retraining after each, in
  two orders: random, and most-uncertain-first (the remaining notes ranked by how many of their
  codes the current coder routes to review with a calibrated probability in [τ/2, τ); τ is the
  certified one, or the target when none is certified; ties by the sum of those probabilities).
  The full-train reference is the same recipe on all train notes.
* ``codeset``: ``--n-codes`` seeded codes with at least ``--min-train`` training notes lose every
  training label (as if new); reviewed notes (random order) give them back, ``--batch`` at a time,
  retraining as in ``recovery``; per step the test micro-F1 over those codes and how the policy
  routes their test predictions (share per reason), until they reach half their full-train F1.

Test labels are read to *report* (they are the simulated auditors' answers); nothing here is
chosen on them except the degradation size, which sets up the experiment (the target precision
of the degraded model) and decides nothing about the product.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, git_commit, load_splits, machine_info, set_offline_env  # noqa: E402

PY = ROOT / ".venv" / "bin" / "python"
EXPERIMENT = "review_loop"
RECIPE = ["experiment=hybrid", "fusion.views=[tfidf,dictionary]"]
PREDICTIONS_NAME = "codiesp_test_en.jsonl"


# -- inputs -------------------------------------------------------------------------------------
def _quickstart_first(what: str) -> SystemExit:
    return SystemExit(f"review_loop: no {what} under {ROOT / 'outputs'}; run `bash scripts/quickstart.sh` first "
                      f"(or pass --bundle/--predictions)")


def find_bundle(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    found = sorted((ROOT / "outputs" / "bundles").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise _quickstart_first("bundle")
    return found[-1].parent


def find_predictions(arg: str | None, bundle: Path) -> Path:
    if arg:
        return Path(arg)
    same = ROOT / "outputs" / "predictions" / bundle.name / PREDICTIONS_NAME
    if same.is_file():
        return same
    found = sorted((ROOT / "outputs" / "predictions").glob(f"*/{PREDICTIONS_NAME}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise _quickstart_first("test predictions")
    return found[-1]


def gold_test() -> dict[str, set[str]]:
    test = load_splits()["test"]
    return {str(i): set(c) for i, c in zip(test["id"], test["codes"], strict=True)}


def read_predictions(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def accepted_outcomes(preds: list[dict[str, Any]], gold: dict[str, set[str]]) -> list[np.ndarray]:
    """Per note (file order): 1/0 for each auto-accepted code (correct against gold)."""
    missing = [p["id"] for p in preds if p["id"] not in gold]
    if missing:
        raise SystemExit(f"review_loop: {len(missing)} predicted notes have no gold codes (e.g. {missing[0]})")
    return [np.array([c["code"] in gold[p["id"]] for c in p["codes"] if c["decision"] == "auto_accept"], dtype=bool)
            for p in preds]


def bundle_targets(bundle: Path) -> dict[str, float]:
    cal = json.loads((bundle / "calibration.json").read_text())
    return {"target": float(cal["targets"]["target_precision"]), "delta": float(cal["targets"]["delta"]),
            "tau": cal["policy"].get("tau_accept")}


# -- streams -------------------------------------------------------------------------------------
def cp95(k: int, n: int) -> tuple[float, float]:
    from medcoder.review.monitor import clopper_pearson

    return clopper_pearson(k, n, level=0.95)


def simulate_streams(pool: list[np.ndarray], *, n_streams: int, target: float, delta: float, seed: int,
                     horizon: int | None, per_code: bool = False) -> dict[str, np.ndarray]:
    """``n_streams`` audit streams over ``pool`` (per-note outcome arrays, each non-empty).

    ``horizon`` None: the pool's notes once each, in a random order. Otherwise notes (or, with
    ``per_code``, single codes) drawn with replacement until ``horizon`` audited codes. Returns per
    stream the audited codes and audited notes at the alarm (NaN where it never fired) and the
    stream length in codes.
    """
    from medcoder.review.monitor import alarm_step

    rng = np.random.default_rng(seed)
    if per_code:
        pool = [np.array([v]) for o in pool for v in o]
    lens = np.array([len(o) for o in pool])
    flat = np.concatenate(pool)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    codes_at = np.full(n_streams, np.nan)
    notes_at = np.full(n_streams, np.nan)
    length = np.zeros(n_streams)
    for s in range(n_streams):
        if horizon is None:
            idx = rng.permutation(len(pool))
        else:
            n_draw = int(horizon / lens.mean() * 1.2) + 10
            idx = rng.integers(len(pool), size=n_draw)
            while lens[idx].sum() < horizon:
                idx = np.concatenate([idx, rng.integers(len(pool), size=n_draw)])
            idx = idx[: int(np.searchsorted(np.cumsum(lens[idx]), horizon)) + 1]
        y = np.concatenate([flat[starts[i]: starts[i] + lens[i]] for i in idx])
        cum = np.cumsum(lens[idx])
        length[s] = y.size
        at = alarm_step(y, target=target, delta=delta)
        if at is not None:
            codes_at[s] = at
            notes_at[s] = int(np.searchsorted(cum, at)) + 1
    return {"codes_at": codes_at, "notes_at": notes_at, "length": length}


def share_row(sim: dict[str, np.ndarray]) -> dict[str, float]:
    fired = ~np.isnan(sim["codes_at"])
    k, n = int(fired.sum()), int(fired.size)
    lo, hi = cp95(k, n)
    row = {"streams": n, "suspended": k, "share": k / n, "ci95_low": lo, "ci95_high": hi,
           "mean_codes_per_stream": float(sim["length"].mean())}
    if k:
        row["median_codes_at_alarm"] = float(np.median(sim["codes_at"][fired]))
    return row


def quantiles(x: np.ndarray) -> dict[str, float]:
    x = x[~np.isnan(x)]
    if not x.size:
        return {"n": 0}
    q1, q2, q3 = np.percentile(x, [25, 50, 75])
    return {"n": int(x.size), "median": float(q2), "q1": float(q1), "q3": float(q3)}


# -- MLflow -------------------------------------------------------------------------------------
def log_measurement(home: Path, name: str, params: dict[str, Any], metrics: dict[str, float], result: Path) -> str:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(
        EXPERIMENT, artifact_location=(home / "mlartifacts").resolve().as_uri())
    with mlflow.start_run(experiment_id=exp_id, run_name=name) as run:
        mlflow.set_tags({"medcoder.benchmark": "review_loop", "medcoder.git_sha": git_commit(),
                         "review_loop.measurement": name})
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and v == v})
        mlflow.log_artifact(str(result))
        return run.info.run_id


def write_result(home: Path, name: str, payload: dict[str, Any]) -> Path:
    path = home / f"{name}.json"
    payload = {"measurement": name, "command": " ".join(sys.argv), "git_commit": git_commit(),
               "machine": machine_info(with_torch=False), **payload}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


# -- 1. false alarms ------------------------------------------------------------------------------
def bundle_inputs(args: argparse.Namespace) -> tuple[Path, Path, Path, float, Any]:
    """What the bundle-based measurements start from: home, bundle, its predictions file, the
    start time and the bundle's targets."""
    bundle = find_bundle(args.bundle)
    return args.home, bundle, find_predictions(args.predictions, bundle), time.time(), bundle_targets(bundle)


def cmd_false_alarms(args: argparse.Namespace) -> None:
    home, bundle, preds_path, started, t = bundle_inputs(args)
    outcomes = accepted_outcomes(read_predictions(preds_path), gold_test())
    pool = [o for o in outcomes if o.size]
    n_codes, n_ok = sum(o.size for o in pool), int(sum(o.sum() for o in pool))
    p_pool = n_ok / n_codes
    print(f"pool: {len(pool)} of {len(outcomes)} test notes have auto-accepted codes; {n_codes} codes, "
          f"precision {p_pool:.4f}; bundle target {t['target']}, delta {t['delta']}", flush=True)
    settings = [("bundle target", t["target"])]
    settings += [("pool precision (null at equality)", p_pool)]
    settings += [(f"pool precision + {d:.2f} (target not met)", min(p_pool + d, 0.999)) for d in (0.01, 0.02)]
    rows = []
    for label, target in settings:
        for model, horizon, per_code in (("pool once, random order", None, False),
                                         (f"notes re-sampled, {args.horizon} codes", args.horizon, False),
                                         (f"codes re-sampled one by one, {args.horizon} codes", args.horizon, True)):
            if per_code and label.startswith("pool precision +"):
                continue
            sim = simulate_streams(pool, n_streams=args.streams, target=target, delta=t["delta"], seed=args.seed,
                                   horizon=horizon, per_code=per_code)
            row = {"setting": label, "target": target, "stream": model, **share_row(sim)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    payload = {"bundle": str(bundle), "predictions": str(preds_path), "seed": args.seed, "delta": t["delta"],
               "bundle_target": t["target"], "tau": t["tau"], "pool_notes": len(pool), "test_notes": len(outcomes),
               "pool_codes": n_codes, "pool_precision": p_pool, "horizon": args.horizon, "rows": rows,
               "wall_s": time.time() - started}
    path = write_result(home, "false_alarms", payload)
    main_rows = [r for r in rows if r["setting"] == "bundle target"]
    log_measurement(home, "false_alarms", {"bundle": bundle, "streams": args.streams, "seed": args.seed,
                                           "horizon": args.horizon},
                    {"pool_precision": p_pool, "pool_codes": n_codes,
                     **{f"share_{i}": r["share"] for i, r in enumerate(main_rows)}}, path)
    print(f"wrote {path} ({time.time() - started:.0f}s)")


# -- 2. time to detection -------------------------------------------------------------------------
def rescore(bundle: Path, cache: Path) -> dict[str, Any]:
    """The bundle's coder on the test notes: scored views (kept in memory), and what it routes."""
    from medcoder.inference.coder import Coder, routing_inputs, score_for_routing

    coder = Coder.load(bundle)
    test = load_splits()["test"]
    t0 = time.time()
    scored = score_for_routing(coder.scorer, list(test["text"]), evidence_top_k=coder.policy.evidence_top_k,
                               batch_size=8, progress=False)
    print(f"scored {len(test)} test notes with the bundle in {time.time() - t0:.0f}s", flush=True)
    y = coder.label_space.encode(test["codes"]).astype(bool)
    return {"coder": coder, "scored": scored, "y": y, "ids": [str(i) for i in test["id"]],
            "routing_inputs": routing_inputs, "score_s": time.time() - t0}


def route_with(ctx: dict[str, Any], stacker: Any) -> np.ndarray:
    """Accept mask of the bundle's calibrator + policy on the test notes, fused by ``stacker``."""
    from medcoder.inference.coder import ScoredNotes
    from medcoder.modeling.hybrid import FusedScores

    coder, scored = ctx["coder"], ctx["scored"]
    f = scored.fused
    logits = stacker.decision_function(f.views, coder.scorer.frequency)
    fused = FusedScores(logits, f.views, f.truncated, f.support_top_k, _evidence=f._evidence)
    notes = ScoredNotes(fused, scored.texts, scored.truncated, scored.empty)
    probs = coder.calibrator.transform(logits)
    _, accept, _ = coder.policy.route_arrays(ctx["routing_inputs"](coder.policy, coder.label_space, notes, probs))
    return accept


def outcomes_from_mask(accept: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    return [y[i, accept[i]] for i in range(accept.shape[0])]


def precision_of(outcomes: list[np.ndarray]) -> tuple[float, int]:
    n = sum(o.size for o in outcomes)
    return (float(sum(o.sum() for o in outcomes)) / n if n else float("nan")), n


def degrade_stacker(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    stacker = ctx["coder"].scorer.stacker
    if stacker is None:
        raise SystemExit("review_loop: the bundle has no stacker (a single-view bundle); detection (a) needs one")
    base = outcomes_from_mask(route_with(ctx, stacker), ctx["y"])
    p0, n0 = precision_of(base)
    coef = np.asarray(stacker.coef_, dtype=np.float64)
    rms = float(np.sqrt(np.mean(coef ** 2)))
    tried = []
    goal, tol = args.degraded_precision, args.tolerance
    for noise_seed in range(args.noise_seeds):
        z = np.random.default_rng(args.seed * 1000 + noise_seed).standard_normal(coef.size)

        def attempt(sigma: float, noise_seed: int = noise_seed, z: np.ndarray = z) -> tuple[Any, Any, float, int]:
            s2 = copy.copy(stacker)
            s2.coef_ = coef + sigma * rms * z
            outs = outcomes_from_mask(route_with(ctx, s2), ctx["y"])
            p, n = precision_of(outs)
            tried.append({"noise_seed": noise_seed, "sigma": sigma, "precision": p, "n_accepted": n})
            return s2, outs, p, n

        prev = 0.0
        for sigma in args.sigmas:
            s2, outs, p, n = attempt(sigma)
            lo, hi = prev, sigma
            # crossed the goal between two grid sizes: bisect the size (precision falls with it locally)
            for _ in range(8 if p == p and p < goal - tol else 0):
                if n >= 100 and abs(p - goal) <= tol:
                    break
                mid = (lo + hi) / 2
                s2, outs, p, n = attempt(mid)
                sigma = mid
                if p == p and p < goal - tol:
                    hi = mid
                else:
                    lo = mid
            if n >= 100 and p == p and abs(p - goal) <= tol:
                return {"how": "stacker weights + sigma * RMS(weights) * N(0,1) noise", "noise_seed": noise_seed,
                        "sigma": sigma, "precision": p, "n_accepted": n, "undegraded_precision": p0,
                        "undegraded_n_accepted": n0, "tried": tried, "outcomes": outs,
                        "changed_weights": {k: [float(a), float(b)] for k, a, b in
                                            zip(stacker.feature_names_, coef, s2.coef_, strict=True)}}
            if p == p and p < goal - tol:
                break  # past the goal without landing: next noise direction
            prev = sigma
    raise SystemExit(f"review_loop: no perturbation on the grid lands within {args.tolerance} of "
                     f"{args.degraded_precision}; tried {[(t['sigma'], round(t['precision'], 3)) for t in tried]}")


def degrade_remap(preds: list[dict[str, Any]], gold: dict[str, set[str]], args: argparse.Namespace,
                  label_codes: list[str]) -> dict[str, Any]:
    """Gold codes remapped (a hospital that codes a seeded set of codes as a sibling) until the bundle's
    auto-accepted precision is about ``--degraded-precision``; the predictions are unchanged."""
    accepted = [(p["id"], c["code"]) for p in preds for c in p["codes"] if c["decision"] == "auto_accept"]
    codes = sorted({c for _, c in accepted})
    order = [codes[i] for i in np.random.default_rng(args.seed).permutation(len(codes))]
    by_cat: dict[str, list[str]] = {}
    for c in label_codes:
        by_cat.setdefault(c.split(".")[0], []).append(c)

    def sibling(c: str) -> str | None:
        others = [o for o in by_cat.get(c.split(".")[0], []) if o != c]
        if others:
            return sorted(others)[0]
        return c.split(".")[0] if "." in c else None  # a three-character code with no sibling: left alone

    def precision(remap: dict[str, str]) -> float:
        return float(np.mean([c in {remap.get(g, g) for g in gold[i]} for i, c in accepted]))

    remap: dict[str, str] = {}
    for c in order:
        if precision(remap) <= args.degraded_precision + args.tolerance / 2:
            break
        to = sibling(c)
        if to is None:
            continue
        trial = {**remap, c: to}
        if precision(trial) >= args.degraded_precision - args.tolerance:
            remap = trial
    new_gold = {i: {remap.get(c, c) for c in g} for i, g in gold.items()}
    outs = accepted_outcomes(preds, new_gold)
    p, n = precision_of(outs)
    return {"how": "gold codes of the test notes remapped to a sibling code (same category) for a seeded set "
                   "of auto-accepted codes", "remap": remap, "precision": p, "n_accepted": n, "outcomes": outs}


def detection_table(outcomes: list[np.ndarray], args: argparse.Namespace, *, target: float, delta: float,
                    seed: int) -> dict[str, Any]:
    pool = [o for o in outcomes if o.size]
    sim = simulate_streams(pool, n_streams=args.streams, target=target, delta=delta, seed=seed,
                           horizon=args.horizon)
    fired = ~np.isnan(sim["codes_at"])
    out: dict[str, Any] = {"detected_within_horizon": float(fired.mean()), "audited_codes": quantiles(sim["codes_at"]),
                           "audited_notes": quantiles(sim["notes_at"]), "per_rate": {}}
    # Notes processed: each is audited with probability rate * (share of notes with an accepted code);
    # the k-th audited note comes after k + NegBin(k, q) processed notes.
    share_auto = len(pool) / len(outcomes)
    rng = np.random.default_rng(seed + 7)
    k = sim["notes_at"][fired].astype(int)
    for rate in args.rates:
        q = rate * share_auto
        processed = k + rng.negative_binomial(k, q) if k.size else np.array([])
        out["per_rate"][f"{rate:g}"] = {"audit_prob_per_note": q, "notes_processed": quantiles(processed.astype(float))}
    out["share_notes_with_accepted"] = share_auto
    return out


def cmd_detection(args: argparse.Namespace) -> None:
    home, bundle, preds_path, started, t = bundle_inputs(args)
    gold = gold_test()
    preds = read_predictions(preds_path)
    ctx = rescore(bundle, home)
    # check: the re-scored routing is the predictions file's (same bundle, same notes, same code path)
    base_accept = route_with(ctx, ctx["coder"].scorer.stacker)
    file_pairs = {(p["id"], c["code"]) for p in preds for c in p["codes"] if c["decision"] == "auto_accept"}
    codes = ctx["coder"].label_space.codes
    re_pairs = {(ctx["ids"][i], codes[j]) for i, j in zip(*np.nonzero(base_accept), strict=True)}
    check = {"file_accepted": len(file_pairs), "rescored_accepted": len(re_pairs), "same": file_pairs == re_pairs,
             "only_file": len(file_pairs - re_pairs), "only_rescored": len(re_pairs - file_pairs)}
    print(f"re-scored routing vs predictions file: {check}", flush=True)
    a = degrade_stacker(ctx, args)
    print(f"(a) stacker: sigma {a['sigma']} (noise seed {a['noise_seed']}): precision {a['precision']:.4f} on "
          f"{a['n_accepted']} accepted codes (undegraded {a['undegraded_precision']:.4f} on "
          f"{a['undegraded_n_accepted']})", flush=True)
    b = degrade_remap(preds, gold, args, list(codes))
    print(f"(b) remap: {len(b['remap'])} codes remapped: precision {b['precision']:.4f} on {b['n_accepted']}",
          flush=True)
    results = {}
    for name, d in (("stacker_perturbed", a), ("codes_remapped", b)):
        results[name] = {k: v for k, v in d.items() if k != "outcomes"}
        results[name]["detection"] = detection_table(d["outcomes"], args, target=t["target"], delta=t["delta"],
                                                     seed=args.seed)
        print(name, json.dumps(results[name]["detection"]), flush=True)
    payload = {"bundle": str(bundle), "predictions": str(preds_path), "seed": args.seed, "target": t["target"],
               "delta": t["delta"], "rescore_check": check, "rescore_s": ctx["score_s"], "streams": args.streams,
               "horizon": args.horizon, "rates": args.rates, "results": results, "wall_s": time.time() - started}
    path = write_result(home, "detection", payload)
    metrics = {}
    for name, r in results.items():
        metrics[f"{name}_precision"] = r["precision"]
        metrics[f"{name}_median_audited_codes"] = r["detection"]["audited_codes"].get("median", float("nan"))
        metrics[f"{name}_median_audited_notes"] = r["detection"]["audited_notes"].get("median", float("nan"))
    log_measurement(home, "detection", {"bundle": bundle, "streams": args.streams, "seed": args.seed,
                                        "rates": args.rates, "sigma": a["sigma"], "remapped": len(b["remap"])},
                    metrics, path)
    print(f"wrote {path} ({time.time() - started:.0f}s)")


# -- retraining steps (3 and 4) ---------------------------------------------------------------------
def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
            "TOKENIZERS_PARALLELISM": "false", "MEDCODER_HOME": str(home)}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"id": r["id"], "text": r["text"], "codes": list(r["codes"])}) + "\n")


def _rows(ds: Any) -> list[dict[str, Any]]:
    return [{"id": str(i), "text": t, "codes": list(c)} for i, t, c in zip(ds["id"], ds["text"], ds["codes"],
                                                                           strict=True)]


def train_step(home: Path, tag: str, train_rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """``scripts/train.py`` + ``scripts/calibrate.py`` of the recipe on ``train_rows`` (dev, test: CodiEsp's),
    each in its own process; resumable (``steps.jsonl`` in ``home``)."""
    done = home / "steps.jsonl"
    if done.exists():
        for line in done.read_text().splitlines():
            rec = json.loads(line)
            if rec["tag"] == tag:
                return rec
    data = home / "data"
    _write_jsonl(data / f"{tag}.train.jsonl", train_rows)
    for split in ("dev", "test"):
        if not (data / f"{split}.jsonl").exists():
            _write_jsonl(data / f"{split}.jsonl", _rows(load_splits()[split]))
    cmd = [str(PY), "scripts/train.py", *RECIPE, "data=jsonl", f"data.train={data / f'{tag}.train.jsonl'}",
           f"data.dev={data / 'dev.jsonl'}", f"data.test={data / 'test.jsonl'}", f"seed={seed}", f"run_name=rl_{tag}"]
    t0 = time.time()
    log = home / "logs" / f"{tag}.train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=ROOT, env=_env(home), stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc:
        raise SystemExit(f"review_loop: train failed for {tag} (exit {rc}); see {log}")
    run_id = [ln.split("=", 1)[1] for ln in log.read_text().splitlines() if ln.startswith("run_id=")][-1]
    t1 = time.time()
    clog = home / "logs" / f"{tag}.cal.log"
    with clog.open("w") as fh:
        rc = subprocess.run([str(PY), "scripts/calibrate.py", f"run_id={run_id}"], cwd=ROOT, env=_env(home),
                            stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    if rc:
        raise SystemExit(f"review_loop: calibrate failed for {tag} (exit {rc}); see {clog}")
    run_dir = home / "outputs" / "runs" / run_id
    m = json.loads((run_dir / "metrics.json").read_text())
    cal = json.loads((run_dir / "calibration.json").read_text())
    ev, g = cal["evaluation"], cal["guarantee"]
    f85 = next((r for r in cal.get("frontier", []) if abs(r["target_precision"] - 0.85) < 1e-9), {})
    rec = {"tag": tag, "run_id": run_id, "n_train_notes": len(train_rows), "test_map": m["test_map"],
           "test_micro_f1": m["test_micro_f1"], "dev_map": m.get("dev_map"), "tau": g["tau"],
           "certified_n": g["n_calibration_accepted"], "test_share_auto_090": ev["auto_accept_coverage"],
           "test_precision_auto_090": ev.get("auto_accept_precision"),
           "test_gold_auto_accepted_090": ev.get("gold_auto_accepted"),
           "tau_085": f85.get("tau"), "test_n_auto_085": f85.get("test_n_auto_accepted"),
           "test_precision_auto_085": f85.get("test_auto_accept_precision"), "test_n_predicted": ev.get("n_predicted"),
           "train_s": t1 - t0, "calibrate_s": time.time() - t1}
    if rec["test_n_auto_085"] is not None and ev.get("n_predicted"):
        rec["test_share_auto_085"] = rec["test_n_auto_085"] / ev["n_predicted"]
    with done.open("a") as fh:
        fh.write(json.dumps(rec) + "\n")
    print(f"  {tag}: {len(train_rows)} train notes, test MAP {rec['test_map']:.4f}, share auto@0.90 "
          f"{rec['test_share_auto_090']:.3f}, tau {rec['tau']}, {rec['train_s']:.0f}+{rec['calibrate_s']:.0f}s",
          flush=True)
    return rec


def run_coder(home: Path, run_id: str) -> Any:
    """A ``Coder`` over a run folder (views + stacker, its calibration.json): the one inference path."""
    from medcoder.calibration import calibrator_from_dict
    from medcoder.data import LabelSpace
    from medcoder.inference.coder import Coder
    from medcoder.modeling.hybrid import HybridScorer
    from medcoder.routing.policy import RoutingPolicy

    run_dir = home / "outputs" / "runs" / run_id
    ls = LabelSpace.from_json(run_dir / "labels.json")
    cal = json.loads((run_dir / "calibration.json").read_text())
    freq = np.array([ls.frequency.get(c, 0) for c in ls.codes], dtype=np.float32)
    return Coder(HybridScorer.load(run_dir, freq), ls, calibrator_from_dict(cal["calibrator"]),
                 RoutingPolicy.from_dict(cal["policy"]))


def uncertainty(coder: Any, rows: list[dict[str, Any]], target: float) -> np.ndarray:
    """Per note: routed codes with calibrated probability in [τ/2, τ) (τ: certified, else ``target``), plus
    a tie-break under 1 (their mean probability)."""
    tau = coder.policy.threshold
    tau = target if tau is None else float(tau)
    preds = coder.predict([r["text"] for r in rows], [r["id"] for r in rows], progress=False)
    out = np.zeros(len(rows))
    for i, p in enumerate(preds):
        near = [c.probability for c in p.codes if c.decision == "human_review" and tau / 2 <= c.probability < tau]
        out[i] = len(near) + (float(np.mean(near)) * 0.999 if near else 0.0)
    return out


def cmd_recovery(args: argparse.Namespace) -> None:
    home = args.home
    started = time.time()
    splits = load_splits()
    train = _rows(splits["train"])
    perm = np.random.default_rng(args.seed).permutation(len(train))
    start = [train[i] for i in perm[: args.start]]
    rest = [train[i] for i in perm[args.start:]]
    ref = train_step(home, f"full_s{args.seed}", train, args.seed)
    first = train_step(home, f"start{args.start}_s{args.seed}", start, args.seed)
    # The orders advance in turn (one batch each), so a run stopped early has curves of equal length;
    # the JSON is rewritten after every step (a partial run still reports).
    curves: dict[str, list[dict[str, Any]]] = {o: [{**first, "reviewed": 0}] for o in args.orders}
    state = {o: {"pool": list(rest), "taken": list(start), "rec": first} for o in args.orders}
    goal = ref["test_map"] - 0.02

    def save(final: bool) -> Path:
        reach = {o: next((s["reviewed"] for s in st if s["test_map"] >= goal), None) for o, st in curves.items()}
        payload = {"recipe": " ".join(RECIPE), "seed": args.seed, "start": args.start, "batch": args.batch,
                   "max_reviewed": args.max_reviewed, "target": args.target, "reference": ref, "complete": final,
                   "goal_map": goal, "reaches_goal_at": reach, "curves": curves, "wall_s": time.time() - started}
        return write_result(home, f"recovery_s{args.seed}", payload)

    while True:
        active = [o for o in args.orders
                  if state[o]["pool"] and len(state[o]["taken"]) - args.start < args.max_reviewed]
        if not active:
            break
        for order in active:
            st = state[order]
            pool = st["pool"]
            if order == "random":
                batch, pool = pool[: args.batch], pool[args.batch:]
            else:
                t0 = time.time()
                score = uncertainty(run_coder(home, st["rec"]["run_id"]), pool, args.target)
                top = set(np.argsort(-score, kind="stable")[: args.batch].tolist())
                batch = [r for i, r in enumerate(pool) if i in top]
                pool = [r for i, r in enumerate(pool) if i not in top]
                print(f"  ranked {len(pool) + len(batch)} pool notes in {time.time() - t0:.0f}s; batch has "
                      f"{int(np.floor(score[sorted(top)]).sum())} codes near tau", flush=True)
            st["pool"], st["taken"] = pool, st["taken"] + batch
            reviewed = len(st["taken"]) - args.start
            st["rec"] = train_step(home, f"{order}_{reviewed}_s{args.seed}", st["taken"], args.seed)
            curves[order].append({**st["rec"], "reviewed": reviewed})
            save(False)
    path = save(True)
    reach = json.loads(path.read_text())["reaches_goal_at"]
    metrics = {"reference_test_map": ref["test_map"], "start_test_map": first["test_map"]}
    for o, r in reach.items():
        metrics[f"{o}_reaches_goal_at"] = float("nan") if r is None else r
    log_measurement(home, f"recovery_s{args.seed}", {"recipe": " ".join(RECIPE), "seed": args.seed, "start": args.start,
                                       "batch": args.batch, "max_reviewed": args.max_reviewed}, metrics, path)
    print(f"goal MAP {goal:.4f}: reached at {reach}; wrote {path} ({time.time() - started:.0f}s)")


# -- 4. code-set change ----------------------------------------------------------------------------
def code_f1_and_routing(coder: Any, test_rows: list[dict[str, Any]], codes: set[str]) -> dict[str, Any]:
    preds = coder.predict([r["text"] for r in test_rows], [r["id"] for r in test_rows], progress=False)
    tp = fp = fn = 0
    reasons: dict[str, int] = {}
    n_pred = n_auto = 0
    for r, p in zip(test_rows, preds, strict=True):
        gold = set(r["codes"]) & codes
        pred = {c.code for c in p.codes} & codes
        tp, fp, fn = tp + len(gold & pred), fp + len(pred - gold), fn + len(gold - pred)
        for c in p.codes:
            if c.code in codes:
                n_pred += 1
                n_auto += c.decision == "auto_accept"
                for reason in c.reasons:
                    reasons[reason] = reasons.get(reason, 0) + 1
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return {"micro_f1": f1, "tp": tp, "fp": fp, "fn": fn, "n_predicted": n_pred, "n_auto_accepted": n_auto,
            "reason_counts": reasons,
            "reason_shares": {k: v / n_pred for k, v in sorted(reasons.items())} if n_pred else {}}


def cmd_codeset(args: argparse.Namespace) -> None:
    home = args.home
    started = time.time()
    splits = load_splits()
    train, test = _rows(splits["train"]), _rows(splits["test"])
    counts: dict[str, int] = {}
    for r in train:
        for c in set(r["codes"]):
            counts[c] = counts.get(c, 0) + 1
    eligible = sorted(c for c, n in counts.items() if n >= args.min_train)
    rng = np.random.default_rng(args.seed)
    held = sorted(eligible[i] for i in rng.choice(len(eligible), size=args.n_codes, replace=False))
    held_set = set(held)
    ref = train_step(home, f"full_s{args.seed}", train, args.seed)
    ref_eval = code_f1_and_routing(run_coder(home, ref["run_id"]), test, held_set)
    half = ref_eval["micro_f1"] / 2
    print(f"held out {held} (train notes {[counts[c] for c in held]}); full-train micro-F1 on them "
          f"{ref_eval['micro_f1']:.3f}, half {half:.3f}", flush=True)
    order = np.random.default_rng(args.seed + 1).permutation(len(train))
    # 0 reviewed notes: no training label carries the held codes, so they are not in the label space
    # (LabelSpace.from_codes of the training labels): never predicted, F1 0. Not trained, by construction.
    steps: list[dict[str, Any]] = [{"reviewed": 0, "reviewed_with_held_codes": 0, "run_id": None, "micro_f1": 0.0,
                                    "n_predicted": 0, "n_auto_accepted": 0, "reason_counts": {}, "reason_shares": {},
                                    "note": "held codes outside the label space (derived, not trained)"}]
    reached = None
    for reviewed in range(args.batch, args.max_reviewed + 1, args.batch):
        back = {int(i) for i in order[:reviewed]}
        rows = [r if i in back else {**r, "codes": [c for c in r["codes"] if c not in held_set]}
                for i, r in enumerate(train)]
        rec = train_step(home, f"codeset_{reviewed}_s{args.seed}", rows, args.seed)
        ev = code_f1_and_routing(run_coder(home, rec["run_id"]), test, held_set)
        n_back = sum(1 for i in back if set(train[i]["codes"]) & held_set)
        steps.append({"reviewed": reviewed, "reviewed_with_held_codes": n_back, "run_id": rec["run_id"],
                      "test_map": rec["test_map"], **ev})
        print(f"  reviewed {reviewed} ({n_back} with held codes): F1 {ev['micro_f1']:.3f}, predicted "
              f"{ev['n_predicted']}, reasons {ev['reason_counts']}", flush=True)
        if ev["micro_f1"] >= half:
            reached = reviewed
        payload = {"recipe": " ".join(RECIPE), "seed": args.seed, "held_codes": held,
                   "held_train_notes": {c: counts[c] for c in held}, "reference": {**ref, **ref_eval},
                   "half_f1": half, "reached_half_at": reached, "complete": reached is not None, "steps": steps,
                   "wall_s": time.time() - started}
        path = write_result(home, "codeset", payload)
        if reached is not None:
            break
    log_measurement(home, "codeset", {"seed": args.seed, "n_codes": args.n_codes, "held": ",".join(held)},
                    {"reference_f1": ref_eval["micro_f1"],
                     "reached_half_at": float("nan") if reached is None else reached}, path)
    print(f"reached half F1 at {reached}; wrote {path} ({time.time() - started:.0f}s)")


# -- report -----------------------------------------------------------------------------------------
def _fmt(v: Any, d: int = 3) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}f}"


def _q(q: dict[str, float], d: int = 0) -> str:
    return "—" if not q.get("n") else f"{q['median']:.{d}f} ({q['q1']:.{d}f}–{q['q3']:.{d}f})"


def _steps(rc: dict[str, Any]) -> list[dict[str, Any]]:
    """The distinct train + calibrate runs of one recovery result (reference, start, every step)."""
    runs = {rc["reference"]["tag"]: rc["reference"]}
    for st in rc["curves"].values():
        runs.update({s["tag"]: s for s in st})
    return list(runs.values())


def cmd_report(args: argparse.Namespace) -> None:
    home = args.home
    load = (lambda n: json.loads((home / f"{n}.json").read_text()) if (home / f"{n}.json").exists() else None)  # noqa: E731
    fa, de, cs = load("false_alarms"), load("detection"), load("codeset")
    seeds = [json.loads(f.read_text()) for f in sorted(home.glob("recovery_s*.json"))]
    rc = next((r for r in seeds if r["seed"] == args.seed), seeds[0] if seeds else None)
    out = Path(args.out)
    lines = ["# Review loop (issue 21) — `benchmarks/review_loop.py`", ""]
    any_ = next(x for x in (fa, de, rc, cs) if x)
    mi = any_["machine"]
    lines += [f"Machine: {mi.get('nproc')}-core CPU VM ({mi.get('cpu_model')}), {mi.get('mem_total_gib')} GiB, "
              f"no GPU; commit `{any_['git_commit'][:12]}`. Simulated auditor/reviewer = CodiEsp-D English gold.", ""]
    if fa:
        lines += ["## 1. False alarms", "",
                  f"`{fa['command']}` ({fa['wall_s']:.0f} s). Bundle `{Path(fa['bundle']).name[:12]}`, target "
                  f"{fa['bundle_target']}, δ {fa['delta']}. Pool: {fa['pool_notes']} of {fa['test_notes']} test notes "
                  f"have auto-accepted codes, {fa['pool_codes']} codes, precision {fa['pool_precision']:.4f}.", "",
                  "| alarm target | stream (each a sequence of audited notes) | streams | suspended | share "
                  "[95 % CI] |", "|---|---|---:|---:|---|"]
        for r in fa["rows"]:
            lines.append(f"| {r['setting']}: {r['target']:.4f} | {r['stream']} | {r['streams']} | {r['suspended']} | "
                         f"{r['share']:.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}] |")
        lines.append("")
    if de:
        lines += ["## 2. Time to detection", "",
                  f"`{de['command']}` ({de['wall_s']:.0f} s; re-scoring the test notes with the bundle "
                  f"{de['rescore_s']:.0f} s; re-scored routing = predictions file: {de['rescore_check']['same']}). "
                  f"Alarm at target {de['target']}, δ {de['delta']}; {de['streams']} streams per row, notes re-sampled "
                  f"with replacement.", "",
                  "| degradation | true precision (accepted codes) | audited codes to alarm, median (IQR) | "
                  "audited notes | notes processed @2 % | @5 % | @10 % |", "|---|---|---|---|---|---|---|"]
        for name, r in de["results"].items():
            d = r["detection"]
            pr = [_q(d["per_rate"].get(k, {}).get("notes_processed", {})) for k in ("0.02", "0.05", "0.1")]
            how = (f"stacker weights + noise (σ = {r['sigma']}×RMS)" if name == "stacker_perturbed"
                   else f"{len(r['remap'])} codes remapped in gold")
            lines.append(f"| {how} | {r['precision']:.3f} ({r['n_accepted']}) | {_q(d['audited_codes'])} | "
                         f"{_q(d['audited_notes'])} | {pr[0]} | {pr[1]} | {pr[2]} |")
        lines.append("")
    if rc:
        lines += ["## 3. Recovery curve", "",
                  f"`{rc['command']}` (train + calibrate of all {len(_steps(rc))} runs: "
                  f"{sum(x['train_s'] + x['calibrate_s'] for x in _steps(rc)) / 60:.0f} min; median per run "
                  f"{np.median([x['train_s'] + x['calibrate_s'] for x in _steps(rc)]):.0f} s). "
                  f"Recipe `{rc['recipe']}` (TF-IDF + dictionary "
                  f"views and stacker, no neural head), seed {rc['seed']}. Full-train reference test MAP "
                  f"{rc['reference']['test_map']:.4f}; goal (−0.02) {rc['goal_map']:.4f}: reached at "
                  + ", ".join(f"{o}: {v if v is not None else 'not within the run'}"
                              for o, v in rc["reaches_goal_at"].items()) + " reviewed notes.", "",
                  "| reviewed notes | " + " | ".join(f"{o} MAP | {o} auto@0.90 | {o} auto@0.85" for o in rc["curves"])
                  + " |", "|---:|" + "---:|---:|---:|" * len(rc["curves"])]
        counts = sorted({s["reviewed"] for st in rc["curves"].values() for s in st})
        for n in counts:
            cells = []
            for st in rc["curves"].values():
                s = next((x for x in st if x["reviewed"] == n), None)
                cells += ["—"] * 3 if s is None else [_fmt(s["test_map"], 4), _fmt(s["test_share_auto_090"]),
                                                      _fmt(s.get("test_share_auto_085"))]
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        lines += ["", f"![recovery]({out.with_suffix('.png').name})", ""]
        if len(seeds) > 1:
            lines += [f"Every seed (its own start notes, order and certification carve; the table above is seed "
                      f"{rc['seed']}):", "", "| seed | complete | full-train MAP | start MAP | "
                      + " | ".join(f"{o} reaches goal at" for o in rc["curves"]) + " |",
                      "|---:|---|---:|---:|" + "---:|" * len(rc["curves"])]
            for r in seeds:
                lines.append(f"| {r['seed']} | {r.get('complete')} | {r['reference']['test_map']:.4f} | "
                             f"{r['curves'][next(iter(r['curves']))][0]['test_map']:.4f} | "
                             + " | ".join(str(r["reaches_goal_at"].get(o)) for o in rc["curves"]) + " |")
            done = [r for r in seeds if r.get("complete") and {"random", "uncertain"} <= set(r["curves"])]
            if len(done) > 1:
                lines += ["", f"Test MAP, mean over the {len(done)} complete seeds (uncertain − random per seed):", "",
                          "| reviewed notes | random | uncertain-first | difference per seed |", "|---:|---:|---:|---|"]
                for n in counts:
                    pairs = [(next((x["test_map"] for x in r["curves"]["random"] if x["reviewed"] == n), None),
                              next((x["test_map"] for x in r["curves"]["uncertain"] if x["reviewed"] == n), None))
                             for r in done]
                    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                    if pairs:
                        lines.append(f"| {n} | {np.mean([a for a, _ in pairs]):.4f} | {np.mean([b for _, b in pairs]):.4f} | "
                                     + ", ".join(f"{b - a:+.4f}" for a, b in pairs) + " |")
            lines.append("")
        _plot([r for r in seeds if r.get("complete")] or [rc], out.with_suffix(".png"))
    if cs:
        lines += ["## 4. Code-set change", "",
                  f"`{cs['command']}` ({cs['wall_s'] / 60:.0f} min, the reference run reused). Held out: {', '.join(cs['held_codes'])}. "
                  f"Full-train micro-F1 on them {cs['reference']['micro_f1']:.3f}; half reached at "
                  f"{cs['reached_half_at']} reviewed notes.", "",
                  "| reviewed notes (with held codes) | test micro-F1 on held codes | predicted | auto-accepted | "
                  "reasons (share of predicted) |", "|---|---:|---:|---:|---|"]
        for s in cs["steps"]:
            rs = ", ".join(f"{k} {v:.2f}" for k, v in s["reason_shares"].items()) or "—"
            lines.append(f"| {s['reviewed']} ({s['reviewed_with_held_codes']}) | {s['micro_f1']:.3f} | "
                         f"{s['n_predicted']} | {s['n_auto_accepted']} | {rs} |")
        lines.append("")
    if args.notes:
        lines += [Path(args.notes).read_text().rstrip(), ""]
    out.write_text("\n".join(lines) + "\n")
    bundle = {k: v for k, v in (("false_alarms", fa), ("detection", de), ("recovery", seeds), ("codeset", cs)) if v}
    out.with_suffix(".json").write_text(json.dumps(bundle, indent=1, default=float) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


def _plot(seeds: list[dict[str, Any]], path: Path) -> None:
    """Test MAP and the auto-accepted share against reviewed notes: one faint line per seed, the mean
    over the seeds that reached each count in bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = {"random": "tab:blue", "uncertain": "tab:orange"}
    for order in seeds[0]["curves"]:
        by_n: dict[int, list[dict[str, Any]]] = {}
        for r in seeds:
            st = r["curves"].get(order, [])
            for s in st:
                by_n.setdefault(s["reviewed"], []).append(s)
            if len(seeds) > 1:
                ax1.plot([s["reviewed"] for s in st], [s["test_map"] for s in st], color=colours.get(order), alpha=0.3)
        x = sorted(by_n)

        def mean(key: str, n: int, by_n: dict[int, list[dict[str, Any]]] = by_n) -> float:
            return float(np.mean([s.get(key) or 0.0 for s in by_n[n]]))

        ax1.plot(x, [mean("test_map", n) for n in x], marker="o", color=colours.get(order),
                 label=f"{order} (mean of {len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
        ax2.plot(x, [mean("test_share_auto_090", n) for n in x], marker="o", color=colours.get(order),
                 label=f"{order}, target 0.90 (shipped)")
        ax2.plot(x, [mean("test_share_auto_085", n) for n in x], marker="x", ls="--", color=colours.get(order),
                 label=f"{order}, target 0.85")
    ref = float(np.mean([r["reference"]["test_map"] for r in seeds]))
    ax1.axhline(ref, color="k", lw=0.8, label="full train (same recipe)")
    ax1.axhline(ref - 0.02, color="k", lw=0.8, ls=":", label="full train − 0.02")
    ax1.set(xlabel="reviewed notes (after the 100 start notes)", ylabel="test MAP",
            title="TF-IDF + dictionary + stacker, retrained per batch")
    ax2.set(xlabel="reviewed notes", ylabel="share of predicted test codes auto-accepted",
            title="certified on dev (Learn-then-Test, δ 0.1)")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- CLI ----------------------------------------------------------------------------------------------
def main() -> None:
    set_offline_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=ROOT / "outputs" / "review_loop",
                        help="MLflow store, JSON results, retraining runs (MEDCODER_HOME of the subprocesses)")
    parser.add_argument("--seed", type=int, default=42)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("false-alarms", "detection"):
        p = sub.add_parser(name)
        p.add_argument("--bundle", help="bundle folder (default: the newest under outputs/bundles)")
        p.add_argument("--predictions", help="its predictions on the CodiEsp-D English test notes "
                                             f"(default: outputs/predictions/<bundle>/{PREDICTIONS_NAME})")
        p.add_argument("--streams", type=int, default=1000)
    sub.choices["false-alarms"].add_argument("--horizon", type=int, default=5000,
                                             help="audited codes per re-sampled stream")
    d = sub.choices["detection"]
    d.add_argument("--horizon", type=int, default=5000, help="audited codes at most per stream")
    d.add_argument("--rates", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    d.add_argument("--degraded-precision", type=float, default=0.75)
    d.add_argument("--tolerance", type=float, default=0.02)
    d.add_argument("--noise-seeds", type=int, default=10)
    d.add_argument("--sigmas", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0])
    r = sub.add_parser("recovery")
    r.add_argument("--start", type=int, default=100)
    r.add_argument("--batch", type=int, default=50)
    r.add_argument("--max-reviewed", type=int, default=400)
    r.add_argument("--orders", nargs="+", default=["random", "uncertain"], choices=["random", "uncertain"])
    r.add_argument("--target", type=float, default=0.90, help="stands in for τ when none is certified")
    c = sub.add_parser("codeset")
    c.add_argument("--n-codes", type=int, default=20)
    c.add_argument("--min-train", type=int, default=15, help="'frequent': at least this many training notes")
    c.add_argument("--batch", type=int, default=50)
    c.add_argument("--max-reviewed", type=int, default=500)
    p = sub.add_parser("report")
    p.add_argument("--notes", help="a markdown file appended to the report (the reading of the numbers)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"{time.strftime('%Y-%m-%d')}-review-loop.md"))
    args = parser.parse_args()
    args.home = args.home.resolve()
    args.home.mkdir(parents=True, exist_ok=True)
    {"false-alarms": cmd_false_alarms, "detection": cmd_detection, "recovery": cmd_recovery,
     "codeset": cmd_codeset, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
