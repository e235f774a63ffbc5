"""Within-note correlation: does a note-level (cluster) Learn-then-Test change τ on CodiEsp?

    python benchmarks/cluster_ltt.py \\
        --bundle /work/before/outputs/bundles/47d7db8f32c9480aab51ca7b68104e87 \\
        --calibration-json /work/before/outputs/runs/47d7db8f32c9480aab51ca7b68104e87/calibration.json \\
        --arrays outputs/cluster_ltt/dev-47d7db8f.npz \\
        --out benchmarks/results/2026-12-03-cluster-ltt.md

The shipped test (``medcoder.calibration.risk_control``) treats the accepted codes as independent:
with ``n`` accepted and ``k`` wrong, ``p = P(Binom(n, α) ≤ k)``. Codes of one note share the note
(its writing, its length, its coder), so their errors may be correlated; then ``k`` is
over-dispersed against the binomial and the code-level test is too liberal. This script measures
how much, on the calibration split (dev) of a finished run, and what τ a note-level test gives.

1. **Arrays.** Dev is re-scored with the run's bundle (``Coder.load``: the bundle's scorer,
   calibrator and fitted policy): calibrated probabilities, gold labels, and the eligible mask
   (predicted codes no rule but ``low_confidence`` blocks: the set Learn-then-Test certifies on).
   They are saved to ``--arrays`` (re-used when present). The script checks that the shipped
   procedure on them reproduces the ``guarantee`` of ``--calibration-json`` (τ, accepted,
   eligible): if it does not, the arrays are not the population that certified τ, and it says so.
   With the code of the run's commit (4afd90c) the population is the one that certified τ
   (``no_evidence`` not applied); with a checkout that has ``score_for_routing`` (issue 19's one
   population) it is the new one, with ``no_evidence`` applied before certification.
2. **Tests, all on the same fixed sequence** (candidates = every distinct eligible score, from the
   same label-free start, :func:`select_accept_threshold`'s ``min_accepted``), each at δ:
   * ``code-level exact binomial``: the shipped test (its τ must equal the shipped τ);
   * ``note-level, Korn–Graubard``: the design-effect-adjusted effective sample size of
     Korn & Graubard (1998, *Survey Methodology* 24:193-201), the standard exact-style test for a
     proportion estimated from clustered data. At each τ the error rate ``r = K/N`` is a ratio
     over notes; its cluster-robust (linearised) variance ``v = n_notes/(n_notes-1) · Σ_i (e_i −
     r·m_i)² / N²`` (``m_i``, ``e_i``: note i's accepted and wrong codes) over the binomial
     variance ``r(1−r)/N`` is the design effect ``deff``, floored at 1 (the note-level test is never
     more liberal than the code-level one); ``N* = N/deff``, ``K* = r·N*`` and
     ``p = P(Binom(N*, α) ≤ K*)`` with the binomial CDF's continuous (regularised incomplete beta)
     extension. It equals the shipped p-value when ``deff = 1``. Why this one: it keeps the exact
     binomial tail the shipped test uses (a Wald/normal test is anti-conservative at 5-20 errors,
     see ``tests/unit/test_ltt_fwer.py``), it needs no model of the correlation, and its one
     estimated quantity (``deff``) is reported, so a reader can see what moved τ;
   * ``code bootstrap`` vs ``note bootstrap`` (``--boot`` resamples, seeded): the same percentile
     bootstrap test (``p`` = share of resamples with error rate ≥ α), resampling codes vs notes. A
     bootstrap test is approximate at a handful of errors; the pair isolates the effect of
     clustering from the effect of the bootstrap itself.
3. **What the correlation would cost the shipped test**: the intra-note correlation of errors
   ``ρ`` (one-way ANOVA estimator) among the accepted codes at the shipped τ; then, by simulation,
   the worst-case FWER of the shipped test at dev's start if the true precision were 0.899 everywhere
   and errors had that ``ρ`` within notes (beta-binomial per note, dev's accepted-per-note counts).

It prints dev numbers only (the test split is not read), and picks nothing: the shipped procedure is
not changed by what this script finds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import git_commit, load_splits, machine_info, set_offline_env
from scipy.special import betainc

ROOT = Path(__file__).resolve().parents[1]


# -- 1. arrays ---------------------------------------------------------------------------------
def score_dev(bundle: Path, *, language: str, code_type: str, split: str, batch_size: int) -> dict[str, Any]:
    """Calibrated probabilities, labels, eligible mask of ``split``, as the bundle routes them.

    Three generations of the routing API are supported, so the bundle can be scored with the code
    of the commit that made it (the population that certified its τ) or with a newer checkout."""
    import medcoder.routing.policy as policy_mod
    from medcoder.inference import coder as coder_mod

    coder = coder_mod.Coder.load(bundle)
    dev = load_splits(language=language, code_type=code_type)[split]
    notes = list(dev["text"])
    t0 = time.perf_counter()
    if hasattr(coder_mod, "score_for_routing"):  # issue 19: one population, no_evidence applied
        scored = coder_mod.score_for_routing(coder.scorer, notes, evidence_top_k=3, batch_size=batch_size,
                                             max_note_chars=coder.max_note_chars)
        probs = coder.calibrator.transform(scored.fused.logits)
        eligible = coder.policy.eligible_mask(coder_mod.routing_inputs(coder.policy, coder.label_space, scored,
                                                                       probs))
        population = "score_for_routing + routing_inputs + eligible_mask (no_evidence applied before LTT)"
    else:  # 4afd90c / 98fc8f4: what calibrate certified on (no_evidence applied after routing only)
        from medcoder.modeling.hybrid import routing_flags

        limit = coder.max_note_chars
        texts = [t[:limit] if limit is not None else t for t in notes]
        fused = coder.scorer.score(texts, batch_size=batch_size)
        probs = coder.calibrator.transform(fused.logits)
        cut = np.array([len(n) > len(t) for n, t in zip(notes, texts, strict=True)], dtype=bool)
        facts = (probs, coder.label_space.codes, coder.label_space.frequency, np.asarray(fused.truncated, bool) | cut,
                 np.array([not t.strip() for t in texts], dtype=bool), routing_flags(fused.views))
        if hasattr(policy_mod, "RoutingInputs"):  # 98fc8f4
            eligible = coder.policy.eligible_mask(policy_mod.RoutingInputs(*facts))
        else:  # 4afd90c
            eligible = coder.policy.eligible_mask(*facts)
        population = "Coder.scorer.score + routing_flags + eligible_mask (no_evidence not applied before LTT)"
    return {
        "probs": np.asarray(probs, dtype=np.float64),
        "y": coder.label_space.encode(list(dev["codes"])).astype(np.int8),
        "eligible": np.asarray(eligible, dtype=bool),
        "note_ids": np.array([str(i) for i in dev["id"]]),
        "population": np.array(population),
        "medcoder_source": np.array(str(Path(coder_mod.__file__).resolve().parents[2])),
        "bundle_id": np.array(str(coder.bundle_id)),
        "score_seconds": np.array(time.perf_counter() - t0),
    }


# -- 2. tests on one fixed sequence -------------------------------------------------------------
def binom_cdf_cont(k: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """``P(Binom(n, α) ≤ k)`` extended to real ``n``, ``k`` (regularised incomplete beta)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    out = np.ones_like(n)
    ok = (n > 0) & (k < n)
    out[ok] = betainc(n[ok] - k[ok], k[ok] + 1.0, 1.0 - alpha)
    return out


def fixed_sequence(pvals: np.ndarray, delta: float) -> int:
    above = np.flatnonzero(pvals > delta)
    return int(above[0]) if above.size else int(pvals.size)


def per_note_counts(s: np.ndarray, wrong: np.ndarray, note: np.ndarray, n_notes: int, grid: np.ndarray):
    """``m[i, g]``, ``e[i, g]``: accepted and wrong eligible codes of note ``i`` at τ = ``grid[g]``."""
    accepted = s[:, None] >= grid[None, :]  # (codes, grid)
    onehot = np.zeros((n_notes, s.size))
    onehot[note, np.arange(s.size)] = 1.0
    return onehot @ accepted, onehot @ (accepted & wrong[:, None]), accepted


def design_effect(m: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per τ (columns): cluster-robust variance of the error-rate ratio over the binomial one."""
    n_notes = m.shape[0]
    N, K = m.sum(0), e.sum(0)
    r = np.where(N > 0, K / np.maximum(N, 1), 0.0)
    v_clu = n_notes / (n_notes - 1) * ((e - r * m) ** 2).sum(0) / np.maximum(N, 1) ** 2
    v_bin = r * (1 - r) / np.maximum(N, 1)
    deff = np.where(v_bin > 0, v_clu / np.where(v_bin > 0, v_bin, 1.0), 1.0)
    return deff, r


def icc_anova(m_i: np.ndarray, e_i: np.ndarray) -> float:
    """One-way ANOVA intra-cluster correlation of a 0/1 outcome (clusters with m_i ≥ 1)."""
    keep = m_i > 0
    m, e = m_i[keep].astype(float), e_i[keep].astype(float)
    k, n_tot = m.size, m.sum()
    if k < 2 or n_tot <= k:
        return float("nan")
    p_i, p = e / m, e.sum() / n_tot
    msb = (m * (p_i - p) ** 2).sum() / (k - 1)
    msw = (e - m * p_i ** 2).sum() / (n_tot - k)  # Σ_i Σ_j (y_ij − p_i)² = e_i − m_i p_i²
    m0 = (n_tot - (m ** 2).sum() / n_tot) / (k - 1)
    return float((msb - msw) / (msb + (m0 - 1) * msw))


def worst_case_fwer(m_start: np.ndarray, rho: float, crit: int, reps: int, seed: int,
                    error_rate: float) -> tuple[float, float]:
    """P(K ≤ crit) with note-level error probabilities Beta(mean error_rate, ICC rho) (rho=0:
    binomial) for dev's accepted-per-note counts at the start: the FWER of the shipped test when the
    true precision is just below the target everywhere (any certification is an error)."""
    rng = np.random.default_rng(seed)
    m = m_start[m_start > 0].astype(np.int64)
    if rho <= 0:
        p = np.full((reps, m.size), error_rate)
    else:
        ab = 1.0 / rho - 1.0
        p = rng.beta(error_rate * ab, (1 - error_rate) * ab, size=(reps, m.size))
    k_tot = rng.binomial(m[None, :], p).sum(1)
    f = float((k_tot <= crit).mean())
    return f, math.sqrt(f * (1 - f) / reps)


def analyse(arrays: dict[str, Any], *, target: float, delta: float, min_coverage: float, boot: int,
            seed: int, sim_reps: int) -> dict[str, Any]:
    from medcoder.calibration.risk_control import binomial_p_values, select_accept_threshold

    probs, y, elig = arrays["probs"], arrays["y"], arrays["eligible"]
    targets = {"target_precision": target, "delta": delta, "min_coverage": min_coverage}
    alpha = 1.0 - target
    res = select_accept_threshold(probs, y, elig, **targets)
    note, _ = np.nonzero(elig)
    s = probs[elig]
    wrong = ~y[elig].astype(bool)
    n_notes = probs.shape[0]
    grid = np.unique(s)[::-1]
    n_acc = np.searchsorted(-np.sort(s)[::-1], -grid, side="right")
    grid, n_acc = grid[n_acc >= res.min_accepted], n_acc[n_acc >= res.min_accepted]
    m, e, accepted = per_note_counts(s, wrong, note, n_notes, grid)
    N, K = m.sum(0), e.sum(0)
    assert np.array_equal(N, n_acc)

    p_code = binomial_p_values(N.astype(int), K.astype(int), alpha)
    deff_raw, r = design_effect(m, e)
    deff = np.maximum(deff_raw, 1.0)
    n_eff = N / deff
    p_kg = binom_cdf_cont(r * n_eff, n_eff, alpha)

    rng = np.random.default_rng(seed)
    w_note = rng.multinomial(n_notes, np.full(n_notes, 1.0 / n_notes), size=boot).astype(np.float64)
    Nb, Kb = w_note @ m, w_note @ e
    p_note_boot = ((Kb / np.maximum(Nb, 1)) >= alpha).mean(0)
    w_code = rng.multinomial(s.size, np.full(s.size, 1.0 / s.size), size=boot).astype(np.float64)
    Nc, Kc = w_code @ accepted, w_code @ (accepted & wrong[:, None])
    p_code_boot = ((Kc / np.maximum(Nc, 1)) >= alpha).mean(0)

    def chosen(p: np.ndarray) -> dict[str, Any]:
        n_rej = fixed_sequence(p, delta)
        if n_rej == 0:
            return {"tau": None, "accepted": 0, "wrong": 0, "precision": None, "deff": None, "n_eff": None}
        i = n_rej - 1
        return {"tau": float(grid[i]), "accepted": int(N[i]), "wrong": int(K[i]),
                "precision": round(1 - float(r[i]), 4), "deff": round(float(deff_raw[i]), 3),
                "n_eff": round(float(n_eff[i]), 1), "p": float(p[i])}

    methods = {
        "code-level exact binomial (shipped)": chosen(p_code),
        "note-level Korn-Graubard (deff-adjusted n_eff)": chosen(p_kg),
        f"code bootstrap ({boot} resamples)": chosen(p_code_boot),
        f"note (cluster) bootstrap ({boot} resamples)": chosen(p_note_boot),
    }
    shipped = methods["code-level exact binomial (shipped)"]
    assert shipped["tau"] == res.tau and shipped["accepted"] == res.n_calibration_accepted

    # Correlation among the accepted codes at the start, at the shipped τ, and over all eligible codes.
    i_shipped = max(fixed_sequence(p_code, delta) - 1, 0)
    m_all = np.bincount(note, minlength=n_notes).astype(float)
    e_all = np.bincount(note, weights=wrong.astype(float), minlength=n_notes)
    deff_all, _ = design_effect(m_all[:, None], e_all[:, None])
    at = {}
    for label, m_i, e_i, d in (("start", m[:, 0], e[:, 0], deff_raw[0]),
                               ("shipped tau", m[:, i_shipped], e[:, i_shipped], deff_raw[i_shipped]),
                               ("all eligible", m_all, e_all, deff_all[0])):
        n_i, k_i = int(m_i.sum()), int(e_i.sum())
        p_c = float(binomial_p_values(np.array([n_i]), np.array([k_i]), alpha)[0])
        n_e = n_i / max(float(d), 1.0)
        at[label] = {"accepted": n_i, "wrong": k_i,
                     "notes_with_accepted": int((m_i > 0).sum()), "max_per_note": int(m_i.max()),
                     "m_weighted_mean": round(float((m_i ** 2).sum() / m_i.sum()), 2), "deff": round(float(d), 3),
                     "n_eff": round(n_e, 1), "icc": round(icc_anova(m_i, e_i), 4), "p_code": p_c,
                     "p_kg": float(binom_cdf_cont(np.array([k_i / n_i * n_e]), np.array([n_e]), alpha)[0])}
    # What a within-note correlation ρ would cost one shipped (code-level) test at dev's note
    # structure: at the start, and at the shipped τ (worst case: true precision 0.899 everywhere).
    rhos = sorted({0.0, 0.05, 0.1, 0.2, 0.3, *(round(max(a["icc"], 0.0), 3) for a in at.values()
                                                 if not math.isnan(a["icc"]))})
    sims = {}
    for label, idx in (("start", 0), ("shipped tau", i_shipped)):
        n0 = int(N[idx])
        pk = binomial_p_values(np.full(n0 + 1, n0), np.arange(n0 + 1), alpha)
        crit = int(np.flatnonzero(pk <= delta)[-1]) if (pk <= delta).any() else -1
        rows = {}
        for rho in rhos:
            f, se = worst_case_fwer(m[:, idx], rho, crit, sim_reps, seed + 1, error_rate=alpha + 0.001)
            rows[rho] = {"fwer": round(f, 4), "se": round(se, 4),
                         "kish_deff": round(1 + (at[label]["m_weighted_mean"] - 1) * rho, 3)}
        sims[label] = {"accepted": n0, "critical_wrong": crit, "by_rho": rows}
    seq = [{"tau": float(grid[i]), "accepted": int(N[i]), "wrong": int(K[i]), "deff": round(float(deff_raw[i]), 3),
            "p_code": round(float(p_code[i]), 4), "p_kg": round(float(p_kg[i]), 4),
            "p_code_boot": round(float(p_code_boot[i]), 4), "p_note_boot": round(float(p_note_boot[i]), 4)}
           for i in range(min(grid.size, max(fixed_sequence(p_kg, delta), fixed_sequence(p_code, delta)) + 3))]
    return {"targets": targets, "n_notes": n_notes, "n_eligible": int(s.size),
            "start": int(res.min_accepted), "shipped_message": res.message, "methods": methods, "at": at,
            "worst_case_fwer": sims, "sim_reps": sim_reps,
            "sequence_head": seq}


# -- report -------------------------------------------------------------------------------------
def summary(result: dict[str, Any]) -> str:
    """One plain paragraph from the numbers (nothing is decided from it)."""
    methods = list(result["methods"].values())
    code, kg, cboot, nboot = methods
    at = result["at"]["shipped tau"]

    def where(c: dict[str, Any]) -> str:
        return "no τ" if c["tau"] is None else f"τ = {c['tau']:.6f} ({c['accepted']} dev codes, {c['wrong']} wrong)"

    worst = result["worst_case_fwer"]["shipped tau"]["by_rho"]
    rho = max(at["icc"], 0.0) if not math.isnan(at["icc"]) else 0.0
    near = min(worst, key=lambda r: abs(float(r) - rho))
    return (f"The shipped code-level test certifies {where(code)}. At that τ the accepted codes sit in "
            f"{at['notes_with_accepted']} notes (Σm²/Σm = {at['m_weighted_mean']}); the cluster-robust design "
            f"effect is {at['deff']} (effective sample size {at['n_eff']} of {at['accepted']}; intra-note "
            f"correlation of errors {at['icc']}, {result['at']['all eligible']['icc']} over all "
            f"{result['at']['all eligible']['accepted']} eligible codes). The note-level Korn–Graubard test "
            f"certifies {where(kg)}; the note bootstrap {where(nboot)}, "
            f"{'the same as' if nboot['tau'] == cboot['tau'] else 'against'} the code bootstrap's "
            f"{where(cboot)}. A single exact-binomial test with dev's note structure at the certified τ and "
            f"ρ = {near} certifies a model 0.001 below the target with probability {worst[near]['fwer']} "
            f"(± {worst[near]['se']}) against {worst[0.0]['fwer']} with independent codes (ρ = 0).")


def markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    t = result["targets"]
    lines = [
        f"# Within-note correlation and Learn-then-Test on CodiEsp ({meta['date']})",
        "",
        "```", meta["command"], "```", "",
        f"- script commit: `{meta['commit']}`; dev scored with the medcoder of `{meta['medcoder_source']}`; "
        f"bundle `{meta['bundle']}` (bundle_id `{meta['bundle_id']}`)",
        f"- population: {meta['population']}",
        f"- calibration split: {meta['split']} ({result['n_notes']} notes, {result['n_eligible']} eligible codes); "
        f"target {t['target_precision']}, δ {t['delta']}, min_coverage {t['min_coverage']}: "
        f"sequence start {result['start']} accepted codes",
        f"- reproduces calibration.json's guarantee: {meta['reproduces']}",
        f"- machine: {meta['machine']}",
        "",
        "## Summary", "",
        summary(result), "",
        "## τ by test (same fixed sequence, same label-free start, level δ)",
        "",
        "| test | τ | accepted on dev | wrong | dev precision | deff at τ | n_eff at τ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, c in result["methods"].items():
        tau = "none" if c["tau"] is None else f"{c['tau']:.6f}"
        lines.append(f"| {name} | {tau} | {c['accepted']} | {c['wrong']} | {c['precision']} | {c['deff']} | "
                     f"{c['n_eff']} |")
    lines += ["", "## Clustering of the accepted codes", "",
              "| codes | accepted | wrong | notes with ≥1 | max per note | Σm²/Σm | deff (cluster-robust) | n_eff | "
              "ICC ρ (ANOVA) | p code-level | p note-level (KG) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for where, a in result["at"].items():
        lines.append(f"| {where} | {a['accepted']} | {a['wrong']} | {a['notes_with_accepted']} | {a['max_per_note']} | "
                     f"{a['m_weighted_mean']} | {a['deff']} | {a['n_eff']} | {a['icc']} | {a['p_code']:.4f} | "
                     f"{a['p_kg']:.4f} |")
    lines += ["", f"## What within-note correlation would cost one shipped test (simulation, {result['sim_reps']} "
              "reps)", "",
              "True precision 0.899 everywhere (any certification is an error); dev's accepted codes per note "
              "at that point of the sequence; each note's error probability Beta-distributed with intra-note "
              "correlation ρ (ρ = 0: the binomial the shipped test assumes). The shipped test at the start is "
              "the whole sequence's FWER in this worst case.", "",
              "| point (accepted, certifies with ≤ k wrong) | ρ | Kish deff 1+(Σm²/Σm−1)ρ | P(certify) | SE |",
              "|---|---|---|---|---|"]
    for where, w in result["worst_case_fwer"].items():
        for rho, v in w["by_rho"].items():
            lines.append(f"| {where} ({w['accepted']}, k ≤ {w['critical_wrong']}) | {rho} | {v['kish_deff']} | "
                         f"{v['fwer']} | {v['se']} |")
    lines += ["", "## Head of the sequence (dev)", "",
              "| τ | accepted | wrong | deff | p code | p KG | p code boot | p note boot |",
              "|---|---|---|---|---|---|---|---|"]
    for row in result["sequence_head"]:
        lines.append(f"| {row['tau']:.6f} | {row['accepted']} | {row['wrong']} | {row['deff']} | {row['p_code']} | "
                     f"{row['p_kg']} | {row['p_code_boot']} | {row['p_note_boot']} |")
    lines += ["", f"Scoring took {meta['score_seconds']:.0f} s; analysis {meta['analysis_seconds']:.1f} s. "
              "Only dev was read; this script decides nothing.", ""]
    return "\n".join(lines)


def _machine() -> str:
    info = machine_info(with_torch=False)
    return f"{info.get('cpu_model')}, {info.get('nproc')} CPUs, {info.get('mem_total_gib')} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--calibration-json", type=Path, help="the run's calibration.json (default: the bundle's)")
    ap.add_argument("--arrays", type=Path, default=ROOT / "outputs" / "cluster_ltt" / "dev.npz",
                    help="dev arrays cache (written when absent, re-used when present)")
    ap.add_argument("--language", default="en")
    ap.add_argument("--code-type", default="D")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--sim-reps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write the Markdown report here too")
    args = ap.parse_args()
    set_offline_env()
    cal_path = args.calibration_json or args.bundle / "calibration.json"
    calibration = json.loads(cal_path.read_text())
    targets = calibration["targets"]
    if args.arrays.exists():
        arrays = dict(np.load(args.arrays))
    else:
        arrays = score_dev(args.bundle, language=args.language, code_type=args.code_type, split=args.split,
                           batch_size=args.batch_size)
        args.arrays.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.arrays, **arrays)
    t0 = time.perf_counter()
    result = analyse(arrays, target=float(targets["target_precision"]), delta=float(targets["delta"]),
                     min_coverage=float(targets.get("min_coverage", 0.0)), boot=args.boot, seed=args.seed,
                     sim_reps=args.sim_reps)
    g = calibration["guarantee"]
    shipped = result["methods"]["code-level exact binomial (shipped)"]
    same = (g["tau"] is not None and shipped["tau"] is not None and abs(g["tau"] - shipped["tau"]) < 1e-6
            and g["n_calibration_accepted"] == shipped["accepted"]
            and g["n_calibration_eligible"] == result["n_eligible"])
    got = (f"tau={shipped['tau']}, {shipped['accepted']} of {result['n_eligible']} (calibration.json: "
           f"tau={g['tau']}, {g['n_calibration_accepted']} of {g['n_calibration_eligible']})")
    # τ itself may differ in the 8th digit: calibrate scored from the frozen encoder's float16
    # state cache, Coder.load scores from the weights.
    reproduces = f"yes: {got}" if same else f"NO: {got}"
    meta = {
        "date": dt.date.today().isoformat(),
        "command": " ".join([sys.executable, *sys.argv]),
        "commit": git_commit(),
        "bundle": str(args.bundle),
        "bundle_id": str(arrays["bundle_id"]),
        "population": str(arrays["population"]),
        "split": args.split,
        "reproduces": reproduces,
        "medcoder_source": str(arrays.get("medcoder_source", "")),
        "machine": _machine(),
        "score_seconds": float(arrays["score_seconds"]),
        "analysis_seconds": time.perf_counter() - t0,
    }
    report = markdown(result, meta)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
