"""Speed and scale of the review workbench (issue 20): import, page latency, concurrent reviewers.

    python benchmarks/review_workbench.py --predictions <codiesp_test_en.jsonl> --n 100000
    python benchmarks/review_workbench.py --predictions <file> --n 5000 --duration 30      # smoke
    python benchmarks/review_workbench.py --predictions <file> --n 100000 --postgres       # throwaway PG 15
    python benchmarks/review_workbench.py --predictions <file> --db-url postgresql+psycopg://...

1. **Import**: the predictions file (the README main job's, ``scripts/predict.py`` on the CodiEsp
   English test notes) repeated under new ids (``<id>~r<k>``) up to ``--n`` notes, the texts from the
   CodiEsp test folder (``--notes``; default the resolved CodiEsp copy); one
   ``ReviewStore.import_predictions`` call (one transaction), timed.
2. **Pages**: the workbench served by uvicorn on a free loopback port (a thread of this process,
   as ``scripts/review.py`` serves it), wrapped in an ASGI timer that measures each request inside
   the server (from the request's arrival to the last byte handed to the server, i.e. without the
   client): the queue page (first page, and filtered by reason / code / probability), and note
   pages (a reviewer's: claim, a POST, + the page it redirects to; an auditor's: read only),
   ``--page-samples`` each; p50/p95.
3. **Concurrent reviewers**: ``--reviewers`` threads, each a logged-in HTTP client over loopback,
   for ``--duration`` seconds (and at most ``--max-notes`` notes each): pick an open note from a
   random queue offset (so reviewers sometimes collide), claim it (409: another holds it, pick
   again), decide every routed code (accept, reject or query) with the version it read, submit.
   Every acknowledged write (201) is recorded; at the end the store's events are compared with
   them: events lost (acknowledged, missing), duplicated (two events with the same (note, seq), or
   an event nobody was told about) and the decision p95 (client round trip and server-side).

Writes ``<out>.md`` and ``<out>.json`` (default ``benchmarks/results/<date>-review-workbench``)
with the exact command, the git commit, the machine and its load. Figures are only comparable on
an idle machine: the load average at the start is in the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import re
import shlex
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._common import git_commit, machine_info  # noqa: E402
from medcoder.review import ReviewStore  # noqa: E402
from medcoder.web import WebSettings, create_app  # noqa: E402

PASSWORD = "benchmark password 0123456789"
#: A queue variant whose warm-up request takes longer than this is timed once, not sampled.
SLOW_S = 5.0
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ms(x: float | None) -> str:
    return "—" if x is None else f"{1000 * x:.1f}"


# -- data -----------------------------------------------------------------------------------------
def default_notes() -> Path:
    from medcoder.data import resolve_codiesp_root

    return resolve_codiesp_root(download=False) / "test" / "text_files_en"


def repeat_predictions(src: Path, notes: Path, n: int, out: Path) -> dict[str, str]:
    """Write ``n`` prediction lines (``src`` repeated, ids ``<id>~r<k>``) to ``out``; the texts by new
    id (the same string objects for every repeat: memory stays that of the source notes)."""
    lines = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = {}
    for row in lines:
        with (notes / f"{row['id']}.txt").open(encoding="utf-8-sig") as fh:
            texts[row["id"]] = fh.read()
    mapping: dict[str, str] = {}
    with out.open("w", encoding="utf-8") as fh:
        k = 0
        while len(mapping) < n:
            for row in lines:
                if len(mapping) >= n:
                    break
                new_id = f"{row['id']}~r{k:05d}"
                fh.write(json.dumps({**row, "id": new_id}, ensure_ascii=False) + "\n")
                mapping[new_id] = texts[row["id"]]
            k += 1
    return mapping


# -- server ---------------------------------------------------------------------------------------
class Timer:
    """ASGI wrapper: server-side duration of each request, by a label of its route."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.lock = threading.Lock()

    @staticmethod
    def label(method: str, path: str) -> str:
        if path.startswith("/api/notes/"):
            tail = path.split("/")[4:]
            return f"{method} /api/notes/{{key}}" + (f"/{tail[0]}" if tail else "")
        if path.startswith("/notes/"):
            tail = path.split("/")[3:]
            return f"{method} /notes/{{key}}" + (f"/{tail[0]}" if tail else "")
        return f"{method} {path}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            with self.lock:
                self.samples[self.label(scope["method"], scope["path"])].append(time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def login(base: str, username: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=60)
    token = _CSRF.search(client.get("/login").text).group(1)
    r = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    if r.status_code not in (200, 303) or "medcoder_session" not in client.cookies:
        raise RuntimeError(f"login of {username} failed: {r.status_code}")
    return client, client.get("/api/me").json()["csrf_token"]


# -- phases ---------------------------------------------------------------------------------------
def settled(timer: Timer, label: str) -> list[float]:
    """The samples of ``label`` once the last request's timing has landed (the server records it
    just after the client has its answer)."""
    time.sleep(0.1)
    with timer.lock:
        return list(timer.samples.get(label, []))


def page_timings(base: str, timer: Timer, keys: list[str], samples: int, rng: random.Random) -> dict[str, Any]:
    reviewer, reviewer_csrf = login(base, "bench-pages")
    auditor, _ = login(base, "bench-auditor")
    queue_urls = {"first page, no filter": "/queue", "reason=low_confidence": "/queue?reason=low_confidence",
                  "code=R52": "/queue?code=R52", "probability 0.2-0.6": "/queue?p_min=0.2&p_max=0.6",
                  "status=open, offset 5000": "/queue?status=open&offset=5000"}
    # warm-up (not timed): the first note page loads the fiscal-year code set, the first queue
    # page warms the database cache; a server answers many pages after that
    too_slow: dict[str, float] = {}
    for name, url in queue_urls.items():
        t0 = time.perf_counter()
        with contextlib.suppress(httpx.TimeoutException):
            auditor.get(url, timeout=SLOW_S * 10)
        if time.perf_counter() - t0 > SLOW_S:  # not sampled further: one answer is figure enough
            too_slow[name] = time.perf_counter() - t0
    auditor.get(f"/notes/{keys[-1]}")
    queue: dict[str, list[float]] = {}
    for name, url in queue_urls.items():
        if name in too_slow:
            queue[name] = [too_slow[name]]
            continue
        timer.samples.clear()
        for _ in range(max(5, samples // len(queue_urls))):
            r = auditor.get(url)
            assert r.status_code == 200, r.status_code
        queue[name] = settled(timer, "GET /queue")
    timer.samples.clear()
    for key in rng.sample(keys, samples):
        assert auditor.get(f"/notes/{key}").status_code == 200
    read_only = settled(timer, "GET /notes/{key}")
    timer.samples.clear()
    for key in rng.sample(keys, samples):
        # as the page's "claim" form does: a CSRF-checked POST (a GET never takes a hold), then
        # the note page it redirects to; the sample is the two server-side times added
        r = reviewer.post(f"/notes/{key}/claim", data={"csrf_token": reviewer_csrf})
        assert r.status_code == 303, r.status_code
        assert reviewer.get(r.headers["location"]).status_code == 200
    claims = settled(timer, "POST /notes/{key}/claim")
    reads = settled(timer, "GET /notes/{key}")
    assert len(claims) == len(reads) == samples, (len(claims), len(reads))
    claimed = [a + b for a, b in zip(claims, reads, strict=True)]
    timer.samples.clear()
    reviewer.close()
    auditor.close()

    def row(values: list[float]) -> dict[str, Any]:
        return {"n": len(values), "p50_s": pct(values, 50), "p95_s": pct(values, 95), "max_s": max(values)}

    return {**{f"queue page ({name})": row(values) for name, values in queue.items()},
            "queue page (all of the above)": row([v for values in queue.values() for v in values]),
            "note page (auditor: read)": row(read_only), "note page (reviewer: claim + read)": row(claimed)}


def reviewer_loop(base: str, name: str, stop_at: float, max_notes: int, total: int, seed: int,
                  acked: list[tuple[str, int, str, str]], latencies: list[float], stats: dict[str, int],
                  lock: threading.Lock) -> None:
    rng = random.Random(seed)
    client, csrf = login(base, name)
    headers = {"X-CSRF-Token": csrf}
    done = 0
    while time.monotonic() < stop_at and done < max_notes:
        offset = rng.randrange(0, max(1, min(total, 400)))
        page = client.get("/api/queue", params={"status": "open", "offset": offset, "limit": 1}).json()
        if not page["items"]:
            page = client.get("/api/queue", params={"status": "open", "limit": 1}).json()
            if not page["items"]:
                break
        key = page["items"][0]["note_key"]
        r = client.post(f"/api/notes/{key}/claim", headers=headers)
        if r.status_code == 409:
            with lock:
                stats["claim_conflicts"] += 1
            continue
        r.raise_for_status()
        token = r.json()["token"]
        note = client.get(f"/api/notes/{key}").json()
        version = note["version"]
        routed = [c["code"] for c in note["codes"] if c["decision"] == "human_review" and c["current"] is None]
        ok = True
        for code in routed:
            action = rng.choice(("accept", "accept", "reject", "query"))
            body = {"action": action, "code": code, "lease_token": token, "expected_version": version}
            if action == "query":
                body["comment"] = "Please confirm this diagnosis."
            t0 = time.perf_counter()
            r = client.post(f"/api/notes/{key}/decisions", json=body, headers=headers)
            dt_s = time.perf_counter() - t0
            if r.status_code == 201:
                ev = r.json()
                with lock:
                    latencies.append(dt_s)
                    acked.append((key, ev["seq"], ev["action"], name))
                    stats["decisions"] += 1
                version = ev["seq"]
            else:
                with lock:
                    stats[f"decision_{r.status_code}"] += 1
                ok = False
                break
            if time.monotonic() >= stop_at:
                ok = False
                break
        if not ok:
            continue
        r = client.post(f"/api/notes/{key}/submit", json={"lease_token": token, "expected_version": version},
                        headers=headers)
        if r.status_code == 201:
            ev = r.json()
            with lock:
                acked.append((key, ev["seq"], "submit", name))
                stats["submits"] += 1
            done += 1
        else:
            with lock:
                stats[f"submit_{r.status_code}"] += 1
    client.close()


def concurrent(base: str, store: ReviewStore, timer: Timer, reviewers: int, duration: float, max_notes: int,
               total: int) -> dict[str, Any]:
    acked: list[tuple[str, int, str, str]] = []
    latencies: list[float] = []
    stats: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    timer.samples.clear()
    stop_at = time.monotonic() + duration
    threads = [threading.Thread(target=reviewer_loop, args=(base, f"bench-r{i}", stop_at, max_notes, total, i,
                                                            acked, latencies, stats, lock)) for i in range(reviewers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    server_side = settled(timer, "POST /api/notes/{key}/decisions")
    # what the store holds for the notes that were written to
    keys = sorted({k for k, _, _, _ in acked})
    stored: list[tuple[str, int, str, str]] = []
    for key in keys:
        stored += [(e.note_key, e.seq, e.action, e.username) for e in store.events(key)]
    acked_set, stored_set = set(acked), set(stored)
    seqs = [(k, s) for k, s, _, _ in stored]
    return {
        "reviewers": reviewers, "duration_s": duration, "wall_s": wall,
        "decisions_acknowledged": stats["decisions"], "submits_acknowledged": stats["submits"],
        "claim_conflicts_409": stats["claim_conflicts"],
        "other_refusals": {k: v for k, v in stats.items() if k.startswith(("decision_", "submit_"))},
        "events_lost": len(acked_set - stored_set),
        "events_duplicated": (len(seqs) - len(set(seqs))) + len(stored_set - acked_set),
        "decision_p50_s": pct(latencies, 50), "decision_p95_s": pct(latencies, 95),
        "decision_server_p95_s": pct(server_side, 95),
        "decisions_per_s": stats["decisions"] / wall if wall else None,
    }


def run(args: argparse.Namespace, db_url: str, work: Path) -> dict[str, Any]:
    rng = random.Random(0)
    notes = Path(args.notes) if args.notes else default_notes()
    predictions = work / "predictions.jsonl"
    t0 = time.perf_counter()
    mapping = repeat_predictions(Path(args.predictions), notes, args.n, predictions)
    build_s = time.perf_counter() - t0
    store = ReviewStore.open(db_url)
    try:
        t0 = time.perf_counter()
        say(f"importing {args.n} notes into {db_url.split('://', 1)[0]}")
        result = store.import_predictions(predictions, mapping)
        import_s = time.perf_counter() - t0
        say(f"imported {result.n_imported} notes in {import_s:.1f} s")
        reimport_s = None
        if args.reimport:
            t0 = time.perf_counter()
            again = store.import_predictions(predictions, mapping)
            reimport_s = time.perf_counter() - t0
            assert again.n_imported == 0, again
        del mapping
        for name, role in [*((f"bench-r{i}", "reviewer") for i in range(args.reviewers)),
                           ("bench-pages", "reviewer"), ("bench-auditor", "auditor")]:
            store.create_user(name, PASSWORD, role)
        keys = [i.note_key for i in store.queue(offset=max(0, args.n - 3 * args.page_samples - 10),
                                                limit=3 * args.page_samples).items]
        app = create_app(store, WebSettings(secret_key="benchmark-secret-0123456789abcdefghijklmnop"))
        timer = Timer(app)
        with Server(timer) as server:
            base = f"http://127.0.0.1:{server.port}"
            say("timing pages")
            pages = page_timings(base, timer, keys, args.page_samples, rng)
            say(f"{args.reviewers} reviewers for {args.duration:.0f} s")
            reviewers = concurrent(base, store, timer, args.reviewers, args.duration, args.max_notes, args.n)
        return {"db": db_url.split("://", 1)[0], "n_notes": result.n_notes, "n_imported": result.n_imported,
                "n_routed_codes": result.n_routed_codes, "build_input_s": build_s, "import_s": import_s,
                "reimport_s": reimport_s, "pages": pages, "reviewers": reviewers}
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictions", required=True, help="a predictions .jsonl from scripts/predict.py")
    ap.add_argument("--notes", default=None, help="the notes predicted (default: CodiEsp test/text_files_en)")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--db-url", default=None, help="default: a SQLite file in a temp folder")
    ap.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL 15 (tests/helpers/postgres.py)")
    ap.add_argument("--reviewers", type=int, default=8)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--max-notes", type=int, default=10_000, help="notes per reviewer, at most")
    ap.add_argument("--page-samples", type=int, default=200)
    ap.add_argument("--reimport", action="store_true", help="also time a re-import (must change nothing)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = dt.datetime.now(dt.timezone.utc)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="review-bench-") as tmp:
        work = Path(tmp)
        if args.postgres:
            from tests.helpers.postgres import postgres_server

            with postgres_server() as pg:
                result = run(args, pg.new_database(), work)
                result["db_note"] = "throwaway PostgreSQL 15 on a unix socket, fsync and full_page_writes off"
        else:
            db_url = args.db_url or f"sqlite:///{work / 'review.db'}"
            result = run(args, db_url, work)
    report = {"command": "python " + shlex.join(sys.argv), "started": started.isoformat(timespec="seconds"),
              "git_commit": git_commit(), "machine": machine_info(with_torch=False),
              "load_average_at_start": load, "args": vars(args), "result": result}
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{started:%Y-%m-%d}-review-workbench")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(report) + "\n")
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    r = report["result"]
    rv = r["reviewers"]
    lines = [
        f"# Review workbench: import, pages, {rv['reviewers']} concurrent reviewers ({r['db']})", "",
        f"Command: `{report['command']}`  ", f"Started {report['started']}, commit `{report['git_commit']}`, "
        f"load average at start {', '.join(f'{x:.2f}' for x in report['load_average_at_start'])} "
        f"on {os.cpu_count()} CPUs (shared with other jobs: figures are pessimistic).", "",
        "| measure | value | target (issue 20) |", "| --- | --- | --- |",
        f"| notes imported | {r['n_imported']:,} of {r['n_notes']:,} ({r['n_routed_codes']:,} routed codes) | 100,000 |",
        f"| import (one transaction) | {r['import_s']:.1f} s | < 60 s |",
    ]
    if r.get("reimport_s") is not None:
        lines.append(f"| re-import of the same file (changes nothing) | {r['reimport_s']:.1f} s | — |")
    for name, row in r["pages"].items():
        lines.append(f"| {name}: server-side p50 / p95 / max (n={row['n']}) | {ms(row['p50_s'])} / "
                     f"{ms(row['p95_s'])} / {ms(row['max_s'])} ms | p95 < 150 ms |")
    lines += [
        f"| reviewers, time bound | {rv['reviewers']}, {rv['duration_s']:.0f} s (wall {rv['wall_s']:.1f} s) | 8, 2 min |",
        f"| decisions / submits acknowledged | {rv['decisions_acknowledged']:,} / {rv['submits_acknowledged']:,} "
        f"({rv['decisions_per_s']:.1f} decisions/s) | — |",
        f"| claim conflicts (409, another reviewer held the note) | {rv['claim_conflicts_409']} | — |",
        f"| other refusals | {rv['other_refusals'] or 'none'} | — |",
        f"| events lost / duplicated | {rv['events_lost']} / {rv['events_duplicated']} | 0 / 0 |",
        f"| decision p50 / p95 (client round trip) | {ms(rv['decision_p50_s'])} / {ms(rv['decision_p95_s'])} ms "
        "| p95 < 300 ms |",
        f"| decision p95 (server-side) | {ms(rv['decision_server_p95_s'])} ms | — |",
    ]
    if r.get("db_note"):
        lines += ["", f"Database: {r['db_note']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
