"""Re-decide on DEV the recipe choices that were first made on test (issue 19, point 3).

Run by hand (CPU; the neural part takes ~10-20 min on a 2-core machine):

    python benchmarks/dev_choices.py levers  --workdir /tmp/devchoices --out /tmp/devchoices/levers.json
    python benchmarks/dev_choices.py routing --bundle <bundle dir> --out /tmp/devchoices/routing.json
    python benchmarks/dev_choices.py report --levers /tmp/devchoices/levers.json \\
        --routing /tmp/devchoices/routing.json --prefix benchmarks/results/<date>-dev-choices

Decision rules, fixed before any number is looked at:

* ``levers`` (the CPU quickstart levers of benchmarks/README.md): each alternative is one
  ``scripts/train.py experiment=quickstart ... <override>`` run in its own process, sharing the
  encoder-state cache. The option with the higher **dev MAP** wins (the field's headline metric);
  dev micro-F1 and dev P@8 are printed for context, test MAP is printed alongside and decides
  nothing.
* ``routing`` (the ``negated_mention`` / ``sibling_conflict`` routing rules): on the dev split, a
  rule is kept on if it raises the dev precision of the codes that remain accepted (the codes the
  policy would accept at the dev-certified threshold with the rule on vs off) **without lowering
  the dev-certified share at target 0.90**. Also reported: the dev precision of the predicted codes
  the rule flags vs the rest, and the certified share at 0.85. Test numbers are not read at all.

Certification (Learn-then-Test) is run on dev here for both arms of a comparison; this is a
comparison of rules, not a new guarantee.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
       "TOKENIZERS_PARALLELISM": "false"}

# (name, override or None for the shipped quickstart, which choice it bears on)
LEVERS: list[tuple[str, str | None, str]] = [
    ("baseline", None, "shipped quickstart: stride 2, min_count 1, description init"),
    ("min_count2", "labels.min_count=2", "labels.min_count 2 vs shipped 1"),
    ("label_init_random", "model.label_init=random", "label_init random vs shipped description"),
    ("stride1", "model.token_pool_stride=1", "token_pool_stride 1 vs shipped 2"),  # slowest: last
]
DEV_KEYS = ("dev_map", "dev_micro_f1", "dev_p_at_8", "dev_label_coverage")
TEST_KEYS = ("test_map", "test_micro_f1", "test_p_at_8")


def _git_sha() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def lever_decisions(rows: list[dict]) -> list[dict]:
    """Each alternative against the shipped baseline: the higher dev MAP wins."""
    base = next((r for r in rows if r["name"] == "baseline"), None)
    out = []
    for r in rows:
        if r["name"] == "baseline" or base is None or r.get("dev_map") is None or base.get("dev_map") is None:
            continue
        winner = r["name"] if r["dev_map"] > base["dev_map"] else "baseline"
        out.append({"choice": r["what"], "baseline_dev_map": base["dev_map"],
                    "alternative_dev_map": r["dev_map"], "winner_on_dev_map": winner,
                    "agrees_with_shipped": winner == "baseline"})
    return out


def _finished_run(root: Path, name: str) -> str | None:
    """The run id of a finished run ``name`` under ``root`` (its metrics.json written), else None."""
    id_file = root / "outputs" / "checkpoints" / name / "mlflow_run_id.txt"
    if not id_file.is_file():
        return None
    run_id = id_file.read_text().strip()
    return run_id if (root / "outputs" / "runs" / run_id / "metrics.json").is_file() else None


def _dev_map_by_epoch(root: Path, name: str) -> list[list[float]]:
    """``[[epoch, dev MAP], ...]`` from the newest checkpoint's trainer_state.json (the Trainer's
    per-epoch evaluation on dev): what an unfinished run has measured so far."""
    states = sorted((root / "outputs" / "checkpoints" / name).glob("checkpoint-*/trainer_state.json"),
                    key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        return []
    history = json.loads(states[-1].read_text()).get("log_history", [])
    return [[h["epoch"], round(h["eval_map"], 4)] for h in history if "eval_map" in h]


def run_levers(workdir: Path, only: list[str] | None, *, root_per_run: bool = False, no_run: bool = False) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ENV}
    rows = []
    for name, override, what in LEVERS:
        if only and name not in only:
            continue
        # --root-per-run: own paths.root_dir (own MLflow store: runs may go in parallel), one shared
        # encoder-state cache; otherwise every run under workdir, as a single sequence.
        root = workdir / "runs" / name if root_per_run or (workdir / "runs" / name).is_dir() else workdir
        done = None
        for cand in (workdir / "runs" / name, workdir):  # a finished run of either layout is reused
            done = _finished_run(cand, name)
            if done:
                root = cand
                break
        root.mkdir(parents=True, exist_ok=True)
        log = workdir / f"{name}.log"
        row: dict = {"name": name, "override": override, "what": what, "log": str(log)}
        if done or no_run:
            row.update({"rc": 0 if done else None, "wall_s": None, "run_id": done, "reused": True})
        else:
            cmd = [str(PY), str(REPO / "scripts" / "train.py"), "experiment=quickstart",
                   f"paths.root_dir={root}", f"paths.cache_dir={workdir / 'outputs' / 'cache'}",
                   "trainer.disable_tqdm=true", f"run_name={name}"]
            if override:
                cmd.append(override)
            print("+", " ".join(cmd), flush=True)
            t0 = time.time()
            with log.open("w") as fh:
                proc = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=fh, text=True)
            run_id = next((line.split("=", 1)[1].strip() for line in proc.stdout.splitlines()
                           if line.startswith("run_id=")), None)
            row.update({"rc": proc.returncode, "wall_s": round(time.time() - t0, 1), "run_id": run_id})
        row["dev_map_by_epoch"] = _dev_map_by_epoch(root, name)
        if row["run_id"]:
            metrics = json.loads((root / "outputs" / "runs" / row["run_id"] / "metrics.json").read_text())
            row.update({k: metrics.get(k) for k in DEV_KEYS + TEST_KEYS})
        rows.append(row)
        print(json.dumps(row), flush=True)
    decisions = lever_decisions(rows)
    return {"rule": "higher dev MAP wins; test numbers printed, never deciding",
            "rows": rows, "decisions": decisions}


# ---------------------------------------------------------------- routing rules


RULES_TO_DECIDE = ("negated_mention", "sibling_conflict")


def _prec(mask, y) -> dict:
    n = int(mask.sum())
    tp = int((mask & y).sum())
    return {"n": n, "correct": tp, "precision": round(tp / n, 4) if n else None}


def run_routing(bundle: Path, targets: list[float], split: str = "dev") -> dict:

    from medcoder import Coder
    from medcoder.calibration.risk_control import RiskTargets
    from medcoder.data import load_codiesp
    from medcoder.data.resolve import resolve_codiesp_root
    from medcoder.inference.coder import routing_inputs, score_for_routing
    from medcoder.routing.policy import RoutingPolicy

    coder = Coder.load(bundle)
    base = coder.policy
    corpus = load_codiesp(resolve_codiesp_root(download=False), language="en", code_type="D", splits=(split,))
    notes = corpus[split]
    t0 = time.time()
    scored = score_for_routing(coder.scorer, list(notes["text"]), evidence_top_k=base.evidence_top_k)
    score_s = time.time() - t0
    probs = coder.calibrator.transform(scored.fused.logits)
    y = coder.label_space.encode(list(notes["codes"])).astype(bool)
    # the procedure the bundle was certified with (calibration.json "targets": delta, min_coverage);
    # Coder.load does not carry it on the policy
    recorded = json.loads((Path(bundle) / "calibration.json").read_text()).get("targets")
    base_targets = base.targets or (RiskTargets.from_dict(recorded) if recorded else RiskTargets())

    def policy_with(**flags: bool) -> RoutingPolicy:
        d = base.to_dict()
        d.update(flags)
        p = RoutingPolicy.from_dict(d)
        p.codeset = base.codeset
        return p

    shipped = {"check_negated_mention": bool(base.check_negated_mention),
               "check_sibling_conflict": bool(base.check_sibling_conflict)}
    out: dict = {"bundle": str(bundle), "split": split, "n_notes": len(notes), "score_s": round(score_s, 1),
                 "shipped": shipped, "targets": base_targets.to_dict(),
                 "rule": ("keep a rule on iff, at target 0.90, the dev precision of the codes accepted at the "
                          "dev-certified tau is higher with the rule on than off AND the dev-certified share "
                          "(accepted / predicted) is not lower; dev labels only, test never read"),
                 "rules": {}}
    for rule in RULES_TO_DECIDE:
        key = f"check_{rule}"
        off = policy_with(**{**shipped, key: False})
        on = policy_with(**{**shipped, key: True})
        inputs = routing_inputs(on, coder.label_space, scored, probs)  # flags do not depend on the toggles
        predicted, masks, _ = on._masks(inputs)
        flagged = masks[rule]
        elig_off = off.eligible_mask(inputs)
        row: dict = {
            "n_predicted": int(predicted.sum()),
            "flagged_of_predicted": _prec(flagged, y),
            "rest_of_predicted": _prec(predicted & ~flagged, y),
            "flagged_of_eligible_off": _prec(elig_off & flagged, y),
            "rest_of_eligible_off": _prec(elig_off & ~flagged, y),
            "by_target": {},
        }
        for t in targets:
            arms = {}
            for arm, pol in (("off", off), ("on", on)):
                res = pol.certify(inputs, y, base_targets.with_target(t))
                arms[arm] = {"tau": res.tau, "n_eligible": res.n_calibration_eligible,
                             "n_accepted": res.n_calibration_accepted,
                             "share_of_predicted": round(res.n_calibration_accepted / max(int(predicted.sum()), 1), 4),
                             "precision_accepted": None if res.calibration_precision is None
                             else round(res.calibration_precision, 4)}
            row["by_target"][f"{t:.2f}"] = arms
        a = row["by_target"].get("0.90")
        if a:
            p_on, p_off = a["on"]["precision_accepted"], a["off"]["precision_accepted"]
            keep = (p_on is not None and (p_off is None or p_on > p_off)
                    and a["on"]["share_of_predicted"] >= a["off"]["share_of_predicted"])
            row["decision"] = "on" if keep else "off"
            row["shipped"] = "on" if shipped[key] else "off"
            row["agrees_with_shipped"] = row["decision"] == row["shipped"]
        out["rules"][rule] = row
        print(rule, json.dumps(row), flush=True)
    return out


def _f(v, fmt: str = ".4f") -> str:
    return "—" if v is None else format(v, fmt)


def write_report(levers: dict | None, routing: dict | None, prefix: Path, command: str) -> None:
    """Merge the parts' JSON into ``<prefix>.json`` and a readable ``<prefix>.md``."""
    lines = [f"# Recipe choices re-decided on dev ({time.strftime('%Y-%m-%d')})", "", f"`{command}`", ""]
    if levers:
        lines += [f"## Quickstart levers (commit `{levers['commit'][:7]}`)", "",
                  f"Rule (fixed before the runs): {levers['rule']}.", "",
                  "| run | override | **dev MAP** | dev micro-F1 | dev P@8 | dev label cov. | test MAP (not deciding) "
                  "| wall s | run id |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in levers["rows"]:
            lines.append(f"| {r['name']} | `{r['override'] or '(shipped quickstart)'}` | {_f(r.get('dev_map'))} | "
                         f"{_f(r.get('dev_micro_f1'))} | {_f(r.get('dev_p_at_8'))} | {_f(r.get('dev_label_coverage'), '.3f')} "
                         f"| {_f(r.get('test_map'))} | {r['wall_s']:.0f} | `{(r.get('run_id') or 'failed')[:8]}` |")
        lines += [""] + [f"- {d['choice']}: dev MAP {d['baseline_dev_map']:.4f} (shipped) vs "
                         f"{d['alternative_dev_map']:.4f} → **{d['winner_on_dev_map']}**" for d in levers["decisions"]]
        if levers.get("not_run"):
            lines.append(f"- not run: {', '.join(levers['not_run'])}")
        lines.append("")
    if routing:
        t = routing["targets"]
        lines += [f"## Routing rules (commit `{routing['commit'][:7]}`, bundle `{routing['bundle']}`, "
                  f"{routing['n_notes']} {routing['split']} notes; LTT δ {t['delta']}, min_coverage {t['min_coverage']})",
                  "", f"Rule (fixed before the numbers): {routing['rule']}.", "",
                  "| rule | flagged predicted codes (prec.) | other predicted codes (prec.) | arm | 0.90: accepted "
                  "(share of predicted) @ dev prec. | 0.85: accepted (share) @ dev prec. | decision |",
                  "|---|---|---|---|---|---|---|"]
        for name, row in routing["rules"].items():
            fl, rest = row["flagged_of_predicted"], row["rest_of_predicted"]
            for arm in ("off", "on"):
                cells = []
                for tg in ("0.90", "0.85"):
                    a = row["by_target"].get(tg, {}).get(arm)
                    cells.append("none certified" if not a or a["tau"] is None else
                                 f"{a['n_accepted']} ({a['share_of_predicted']:.1%}) @ {_f(a['precision_accepted'], '.3f')}")
                lead = (f"| {name} | {fl['n']} ({_f(fl['precision'], '.3f')}) | {rest['n']} ({_f(rest['precision'], '.3f')})"
                        if arm == "off" else "| | | ")
                dec = f"**{row.get('decision')}** (shipped: {row.get('shipped')})" if arm == "off" else ""
                lines.append(f"{lead} | {arm} | {cells[0]} | {cells[1]} | {dec} |")
        lines.append("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps({"levers": levers, "routing": routing}, indent=2) + "\n")
    prefix.with_suffix(".md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    lv = sub.add_parser("levers")
    lv.add_argument("--workdir", type=Path, required=True)
    lv.add_argument("--only", nargs="*", default=None)
    lv.add_argument("--root-per-run", action="store_true",
                    help="each run its own paths.root_dir under WORKDIR/runs (parallel-safe), shared state cache")
    lv.add_argument("--no-run", action="store_true", help="only collect the runs already finished")
    lv.add_argument("--out", type=Path, required=True)
    rt = sub.add_parser("routing")
    rt.add_argument("--bundle", type=Path, required=True)
    rt.add_argument("--targets", type=float, nargs="*", default=[0.90, 0.85])
    rt.add_argument("--out", type=Path, required=True)
    rp = sub.add_parser("report", help="merge levers/routing JSON into <prefix>.json and .md")
    rp.add_argument("--levers", type=Path, nargs="*", default=None,
                    help="one or more `levers` outputs (e.g. runs made in parallel with --only); rows merged")
    rp.add_argument("--routing", type=Path, default=None)
    rp.add_argument("--prefix", type=Path, required=True, help="e.g. benchmarks/results/2026-12-03-dev-choices")
    args = ap.parse_args()
    if args.what == "report":
        levers = None
        if args.levers:
            parts = [json.loads(p.read_text()) for p in args.levers]
            order = [name for name, _, _ in LEVERS]
            rows = sorted((r for part in parts for r in part["rows"] if r.get("run_id")),
                          key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
            levers = {"commit": ",".join(sorted({p["commit"] for p in parts})), "rule": parts[0]["rule"],
                      "rows": rows, "decisions": lever_decisions(rows),
                      "not_run": [n for n in order if n not in {r["name"] for r in rows}]}
        routing = json.loads(args.routing.read_text()) if args.routing else None
        write_report(levers, routing, args.prefix, "python benchmarks/dev_choices.py " + " ".join(sys.argv[1:]))
        return
    sha = _git_sha()
    if args.what == "levers":
        report = run_levers(args.workdir, args.only, root_per_run=args.root_per_run, no_run=args.no_run)
    else:
        report = run_routing(args.bundle, args.targets)
    report = {"commit": sha, "what": args.what, **report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
