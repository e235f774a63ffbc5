"""A bounded load test of ``mlflow models serve`` with real CodiEsp notes, then abuse: a ~5 MB note,
an oversized body and malformed JSON, after which the server must still answer.

    python benchmarks/serve_load.py --model-uri models:/medcoder-icd10@champion            # project store
    python benchmarks/serve_load.py --model-uri models:/medcoder-icd10@candidate \\
        --tracking-uri sqlite:////path/to/mlflow.db --workers 1 2
    python benchmarks/serve_load.py --bundle outputs/bundles/<run_id>   # a bundle, wrapped as a local model
    python benchmarks/serve_load.py --model-uri DIR --levels 1 4 --requests 8 --out /tmp/x  # smoke check

Why a separate benchmark: ``predict_speed.py`` times ``Coder.predict`` in one process; a deployment
runs the same model behind MLflow's scoring server (FastAPI + uvicorn, ``invocations`` run in
``asyncio.to_thread``'s default pool, so several requests score *at once* in one worker), and what
matters there is latency under concurrency, whether errors appear, how memory grows, and whether a
hostile request costs the service.

For each ``--workers`` value the script starts ``mlflow models serve -m <uri> --env-manager local
-h 127.0.0.1 -p <free port> -w <workers>`` in its own process group, waits for ``/ping``, sends
``--warmup`` requests, then for each concurrency level in ``--levels`` sends ``--requests`` requests
(one CodiEsp-D English test note each, the same notes in the same order at every level) from that
many asyncio tasks (``aiohttp``), stopping early at ``--time-limit`` seconds per level. Per level:
throughput (requests/s and notes/s of the answered requests over the level's wall time), p50/p95/p99
latency, errors by status, and the RSS of the server's process tree (``psutil``: the ``mlflow`` CLI,
the uvicorn process and its workers, summed) before and after. Then the edge cases, each followed by
``/ping`` and one normal prediction, and the worker PIDs before and after (a changed set means a
worker died and was restarted). The server is stopped by its process group id.

Writes ``<out>.md`` and ``<out>.json`` (default ``benchmarks/results/<date>-serve-load``) headed by
the exact command, the git commit and the machine. Numbers are only comparable on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import git_commit, machine_info, set_offline_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: Text that the ~5 MB note starts with, so we can check that no response or log echoes note text.
MARKER = "MEDCODER-SERVE-LOAD-MARKER"


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port the OS says is free now (there is a small race until the server binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_status(url: str, timeout: float = 5.0) -> int:
    """Status of a GET, 0 when nothing answers (the server is still starting or is gone)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


def tree_rss(pid: int) -> dict[str, Any]:
    """RSS of ``pid`` and all its descendants, summed, plus one entry per process.

    Why a sum over the tree: ``mlflow models serve`` is a Python CLI that starts ``bash -c exec
    uvicorn``; with ``--workers N > 1`` uvicorn is a supervisor with N spawned workers, each holding
    its own copy of the model. ``psutil`` (a dependency of accelerate) when importable, else /proc.
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with accelerate
        return _tree_rss_proc(pid)
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {"total_mib": 0.0, "processes": []}
    rows = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            rows.append({"pid": p.pid, "ppid": p.ppid(), "rss_mib": round(p.memory_info().rss / 2**20, 1),
                         "what": _describe(p.cmdline())})
    return {"total_mib": round(sum(r["rss_mib"] for r in rows), 1), "processes": rows}


def _tree_rss_proc(pid: int) -> dict[str, Any]:
    """The same as :func:`tree_rss` from /proc (Linux), for an environment without psutil."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier]
        tree += frontier
    rows = []
    for p in tree:
        with contextlib.suppress(OSError, ValueError):
            status = (Path("/proc") / str(p) / "status").read_text()
            kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            cmd = (Path("/proc") / str(p) / "cmdline").read_bytes().split(b"\0")
            rows.append({"pid": p, "ppid": parents.get(p), "rss_mib": round(kib / 1024, 1),
                         "what": _describe([c.decode(errors="replace") for c in cmd if c])})
    return {"total_mib": round(sum(r["rss_mib"] for r in rows), 1), "processes": rows}


def _describe(cmdline: list[str]) -> str:
    """A short label for a server process (the model path is long and says nothing here)."""
    text = " ".join(cmdline)
    if "multiprocessing" in text and "resource_tracker" in text:
        return "multiprocessing resource tracker"
    if "multiprocessing" in text or "spawn_main" in text:
        return "uvicorn worker (spawned)"
    if "uvicorn" in text:
        return "uvicorn"
    if "models serve" in text or "mlflow" in text:
        return "mlflow models serve (CLI)"
    return text[:60]


@dataclass
class Server:
    """A running ``mlflow models serve``: where it answers, its PID (= process group) and its log."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    workers: int
    command: list[str]
    startup_s: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """PIDs of the processes that score requests: uvicorn's workers (or uvicorn itself if alone)."""
        procs = tree_rss(self.proc.pid)["processes"]
        spawned = [p["pid"] for p in procs if p["what"] == "uvicorn worker (spawned)"]
        return sorted(spawned or [p["pid"] for p in procs if p["what"] == "uvicorn"])


@contextlib.contextmanager
def serve(model_uri: str, *, workers: int, env: dict[str, str], log_path: Path, timeout_s: int,
          startup_timeout_s: float = 600.0) -> Iterator[Server]:
    """Start ``mlflow models serve`` on 127.0.0.1 and a free port; stop it (its process group) after.

    ``--env-manager local``: the model runs in this virtual environment, as the README deploys it.
    The uvicorn executable is looked up on PATH by MLflow, so the venv's bin goes first.
    """
    port = free_port()
    bindir = str(Path(sys.executable).parent)
    full_env = {**os.environ, **env, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(Path(bindir) / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", str(workers), "-t", str(timeout_s)]
    log_fh = log_path.open("w")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=full_env, stdout=log_fh, stderr=subprocess.STDOUT, cwd=log_path.parent,
                            start_new_session=True)
    server = Server(proc=proc, port=port, log_path=log_path, workers=workers, command=cmd)
    try:
        deadline = time.perf_counter() + startup_timeout_s
        while http_status(f"{server.base}/ping", timeout=2) != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"server did not answer /ping in {startup_timeout_s:.0f} s")
            time.sleep(0.5)
        server.startup_s = time.perf_counter() - started
        yield server
    finally:
        stop_process_group(proc)
        log_fh.close()


def stop_process_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the server's process group (it was started in a new session), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --------------------------------------------------------------------------------------------
# requests
# --------------------------------------------------------------------------------------------


def split_body(rows: list[tuple[str | None, str]]) -> bytes:
    """A ``dataframe_split`` request body (the format the README documents)."""
    return json.dumps({"dataframe_split": {"columns": ["id", "text"], "data": [list(r) for r in rows]}}).encode()


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    concurrency: int
    requested: int
    sent: int = 0
    ok: int = 0
    notes_ok: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    stopped_by_time_limit: bool = False
    rss_before: dict[str, Any] = field(default_factory=dict)
    rss_after: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_s)
        errors = self.sent - self.ok
        return {
            "concurrency": self.concurrency, "requested": self.requested, "sent": self.sent, "ok": self.ok,
            "errors": errors, "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "stopped_by_time_limit": self.stopped_by_time_limit, "wall_s": round(self.wall_s, 2),
            "req_per_s": round(self.ok / self.wall_s, 3) if self.wall_s else None,
            "notes_per_s": round(self.notes_ok / self.wall_s, 3) if self.wall_s else None,
            "p50_s": percentile(lat, 50), "p95_s": percentile(lat, 95), "p99_s": percentile(lat, 99),
            "max_s": round(lat[-1], 3) if lat else None,
            "rss_before_mib": self.rss_before.get("total_mib"), "rss_after_mib": self.rss_after.get("total_mib"),
            "rss_after_processes": self.rss_after.get("processes"),
        }


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), without numpy in the client."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return round(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo), 3)


async def run_level(url: str, bodies: list[bytes], concurrency: int, time_limit_s: float,
                    request_timeout_s: float) -> LevelResult:
    """Send every body (one note each) from ``concurrency`` tasks; no new request after the limit.

    Latency is measured per request, from just before ``post`` until the whole answer is read, for
    answered requests of any status; a connection error or client timeout counts as status
    ``"error:<type>"`` without a latency.
    """
    import aiohttp

    result = LevelResult(concurrency=concurrency, requested=len(bodies))
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    deadline = time.perf_counter() + time_limit_s
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            if time.perf_counter() > deadline:
                result.stopped_by_time_limit = result.stopped_by_time_limit or not queue.empty()
                return
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result.sent += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    payload = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                result.statuses[f"error:{type(exc).__name__}"] += 1
                continue
            result.latencies_s.append(time.perf_counter() - t0)
            result.statuses[status] += 1
            if status == 200:
                result.ok += 1
                result.notes_ok += len(json.loads(payload)["predictions"])

    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        t_start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - t_start
    return result


def post(url: str, body: bytes, content_type: str = "application/json",
         timeout_s: float = 300.0) -> dict[str, Any]:
    """One blocking POST: status, seconds, and the first 300 characters of the answer."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            status, text = int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        status, text = int(err.code), err.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
        status, text = 0, f"{type(exc).__name__}: {exc}"
    return {"status": status, "seconds": round(time.perf_counter() - t0, 2), "body_bytes": len(body),
            "answer_head": text[:300], "echoes_note_text": MARKER in text}


def still_healthy(server: Server, normal_body: bytes) -> dict[str, Any]:
    """``/ping``, ``/health`` and one normal prediction, after an abusive request."""
    answer = post(f"{server.base}/invocations", normal_body)
    return {"ping": http_status(f"{server.base}/ping"), "health": http_status(f"{server.base}/health"),
            "predict_status": answer["status"], "predict_seconds": answer["seconds"]}


def edge_cases(server: Server, note: str, normal_body: bytes, big_note_mb: float,
               oversize_body_mb: float) -> list[dict[str, Any]]:
    """The abusive requests, one at a time, each followed by :func:`still_healthy` and the RSS.

    * a ~``big_note_mb`` MB note (a real note repeated, under ``MARKER``): above the default
      ``MEDCODER_MAX_REQUEST_CHARS`` (2,000,000) but below ``MEDCODER_MAX_REQUEST_BYTES``
      (16,000,000), so it is parsed and refused by the model's request limits;
    * a body of ``oversize_body_mb`` MB: above ``MEDCODER_MAX_REQUEST_BYTES``, refused before parsing;
    * malformed JSON (cut off mid-string) and a body that is not UTF-8.
    """
    url = f"{server.base}/invocations"
    reps = int(big_note_mb * 1e6 / max(len(note), 1)) + 1
    big_text = (MARKER + " " + note * reps)[: int(big_note_mb * 1e6)]
    cases: list[tuple[str, bytes]] = [
        (f"{big_note_mb:g} MB note ({len(big_text):,} characters, one row)", split_body([("big", big_text)])),
        (f"{oversize_body_mb:g} MB body (one note)",
         split_body([("huge", (MARKER + " x") * int(oversize_body_mb * 1e6 / (len(MARKER) + 2)))])),
        ("malformed JSON (cut off inside a string)",
         b'{"dataframe_split": {"columns": ["id", "text"], "data": [["n1", "' + MARKER.encode() + b" fever"),
        ("not UTF-8 (a latin-1 byte in the note)",
         b'{"dataframe_split": {"columns": ["id", "text"], "data": [["n1", "fi\xe8vre ' + MARKER.encode() + b'"]]}}'),
    ]
    out = []
    for name, body in cases:
        pids_before = server.worker_pids()
        answer = post(url, body)
        health = still_healthy(server, normal_body)
        rss = tree_rss(server.proc.pid)
        out.append({"case": name, **answer, **health, "rss_after_mib": rss["total_mib"],
                    "worker_pids_before": pids_before, "worker_pids_after": server.worker_pids()})
        print(f"  edge {name}: {answer['status']} in {answer['seconds']} s; then ping {health['ping']}, "
              f"predict {health['predict_status']}; RSS {rss['total_mib']} MiB", flush=True)
    return out


def worker_cpu_s(server: Server) -> float:
    """CPU seconds (user + system) used so far by the server's scoring processes."""
    import psutil

    total = 0.0
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def timeout_probe(server: Server, ids: list[str], texts: list[str], n_rows: int, normal_body: bytes,
                  settle_s: float = 600.0) -> dict[str, Any]:
    """One request of ``n_rows`` notes that takes longer than the server timeout: what the client
    gets, and how much CPU the server spends on it *after* answering.

    Why: the scoring server's timeout is ``asyncio.wait_for`` around the request, while the model
    runs in ``asyncio.to_thread``; a thread cannot be cancelled, so the 504 frees the client, not the
    CPU. The probe sends the request, then samples the workers' CPU time each second until they
    idle (< 5 % of a core for 3 s) and sends one normal request right after the 504.
    """
    url = f"{server.base}/invocations"
    body = split_body([(ids[i % len(ids)], texts[i % len(texts)]) for i in range(n_rows)])
    cpu0 = worker_cpu_s(server)
    answer = post(url, body)
    cpu_at_answer = worker_cpu_s(server)
    t_answer = time.perf_counter()
    follow = post(url, normal_body)
    quiet, last = 0, worker_cpu_s(server)
    while quiet < 3 and time.perf_counter() - t_answer < settle_s:
        time.sleep(1.0)
        now = worker_cpu_s(server)
        quiet = quiet + 1 if now - last < 0.05 else 0
        last = now
    busy_after = time.perf_counter() - t_answer - quiet
    out = {"rows": n_rows, "chars": sum(len(texts[i % len(texts)]) for i in range(n_rows)),
           "status": answer["status"], "seconds": answer["seconds"], "answer_head": answer["answer_head"][:200],
           "cpu_s_until_answer": round(cpu_at_answer - cpu0, 1), "cpu_s_after_answer": round(last - cpu_at_answer, 1),
           "busy_s_after_answer": round(busy_after, 1), "next_request_status": follow["status"],
           "next_request_seconds": follow["seconds"]}
    print(f"  timeout probe ({n_rows} notes): {answer['status']} after {answer['seconds']} s; the workers then "
          f"used {out['cpu_s_after_answer']} CPU s more over {out['busy_s_after_answer']} s; next request "
          f"{follow['status']} in {follow['seconds']} s", flush=True)
    return out


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def load_notes(n: int) -> tuple[list[str], list[str]]:
    """The first ``n`` CodiEsp-D English test notes, read with the package's loader (local copy)."""
    from medcoder.data import load_codiesp, resolve_codiesp_root

    test = load_codiesp(resolve_codiesp_root(download=False), language="en", code_type="D")["test"]
    test = test.select(range(min(n, len(test))))
    return list(test["id"]), list(test["text"])


def bundle_as_local_model(bundle: str, dest: Path) -> str:
    """Wrap a bundle directory as a local MLflow pyfunc model (what export logs), without a registry.

    Why: serving a freshly exported bundle must not register versions in anyone's store. Same
    ``MedCoderModel``, signature and metadata as ``scripts/export.py``; requirements are given (not
    inferred, which would load the model once more) and unused with ``--env-manager local``.
    """
    import mlflow

    from medcoder.tracking import pyfunc

    path = dest / "model"
    kwargs: dict[str, Any] = {}
    if hasattr(pyfunc, "model_signature"):
        kwargs["signature"] = pyfunc.model_signature()
    if hasattr(pyfunc, "model_metadata"):
        kwargs["metadata"] = pyfunc.model_metadata()
    mlflow.pyfunc.save_model(str(path), python_model=pyfunc.MedCoderModel(), artifacts={"bundle": str(bundle)},
                             pip_requirements=["medcoder"],
                             # an unregistered bundle has no registry tag to carry an audit status: say
                             # so explicitly, or the served model fails closed (docs/ops.md)
                             model_config={pyfunc.CONFIG_AUDIT_STATUS_URI: "none"}, **kwargs)
    return str(path)


def log_findings(log_path: Path) -> dict[str, Any]:
    """Counts of tracebacks / errors in the server log and whether it ever contains note text."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return {"tracebacks": text.count("Traceback (most recent call last)"),
            "error_lines": sum(1 for line in text.splitlines() if " ERROR " in line or line.startswith("ERROR")),
            "echoes_note_text": MARKER in text, "tail": text[-1500:]}


def run_workers(args: argparse.Namespace, model_uri: str, workers: int, ids: list[str], texts: list[str],
                env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """One server with ``workers`` workers: warm-up, every level, the edge cases."""
    log_path = workdir / f"serve-w{workers}.log"
    print(f"== workers={workers}: starting {model_uri}", flush=True)
    report: dict[str, Any] = {"workers": workers}
    with serve(model_uri, workers=workers, env=env, log_path=log_path, timeout_s=args.server_timeout,
               startup_timeout_s=args.startup_timeout) as server:
        report["startup_s"] = round(server.startup_s, 1)
        report["server_command"] = shlex.join(server.command)
        report["rss_idle"] = tree_rss(server.proc.pid)
        url = f"{server.base}/invocations"
        normal = split_body([(ids[0], texts[0])])
        # Warm-up: with N workers, N+ requests so that each has scored once (uvicorn balances by
        # accept, so this is likely, not certain).
        report["warmup"] = [post(url, normal)["status"] for _ in range(args.warmup * workers)]
        levels = []
        for level in args.levels:
            bodies = [split_body([(ids[i % len(ids)], texts[i % len(texts)])]) for i in range(args.requests)]
            rss_before = tree_rss(server.proc.pid)
            res = asyncio.run(run_level(url, bodies, level, args.time_limit, args.server_timeout + 30))
            res.rss_before, res.rss_after = rss_before, tree_rss(server.proc.pid)
            s = res.summary()
            levels.append(s)
            print(f"  c={level}: {s['ok']}/{s['sent']} ok, {s['req_per_s']} req/s, p50 {s['p50_s']} s, "
                  f"p95 {s['p95_s']} s, p99 {s['p99_s']} s, errors {s['errors']} {s['statuses']}, "
                  f"RSS {s['rss_before_mib']} -> {s['rss_after_mib']} MiB", flush=True)
        report["levels"] = levels
        report["edge_cases"] = edge_cases(server, texts[0], normal, args.big_note_mb, args.oversize_body_mb)
        if args.timeout_probe_rows:
            report["timeout_probe"] = timeout_probe(server, ids, texts, args.timeout_probe_rows, normal)
        report["rss_end"] = tree_rss(server.proc.pid)
    report["log"] = log_findings(log_path)
    return report


def _n(value: Any, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    out = [
        f"# Serving under load: `mlflow models serve`, {report['date']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- git commit: `{report['git_commit']}`; model `{report['model_uri']}`"
        + (f" (tracking URI `{report['tracking_uri']}`)" if report.get("tracking_uri") else ""),
        f"- machine: {m.get('nproc')} CPUs (affinity {m.get('affinity_cpus')}), {m.get('cpu_model')}, "
        f"{m.get('mem_total_gib')} GiB RAM; load average (1/5/15 min) at start {report['loadavg_start']}, at end "
        f"{report.get('loadavg_end')}; "
        f"torch {report.get('torch', '?')}, mlflow {report.get('mlflow', '?')}, uvicorn {report.get('uvicorn', '?')}",
        f"- notes: CodiEsp-D English test, first {report['n_notes']} notes cycled, one note per request "
        f"(mean {report['mean_note_chars']:,.0f} characters); concurrency levels {report['levels'] or 'none'}, "
        f"{report['requests']} requests per level, "
        f"time limit {report['time_limit_s']} s per level; server timeout {report['server_timeout_s']} s; "
        f"extra server env: {report['server_env'] or 'none'}",
        "",
        "| workers | concurrency | ok/sent | req/s | notes/s | p50 s | p95 s | p99 s | errors | RSS before → after MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for w in report["runs"]:
        for s in w.get("levels", []):
            errs = str(s["errors"]) + ("" if not s["errors"] else f" ({s['statuses']})")
            out.append(f"| {w['workers']} | {s['concurrency']} | {s['ok']}/{s['sent']} | {_n(s['req_per_s'])} | "
                       f"{_n(s['notes_per_s'])} | {_n(s['p50_s'])} | {_n(s['p95_s'])} | {_n(s['p99_s'])} | "
                       f"{errs} | {_n(s['rss_before_mib'], '{:,.0f}')} → {_n(s['rss_after_mib'], '{:,.0f}')} |")
    out += ["", "Start-up (`mlflow models serve` until `/ping` answers) and idle RSS per server:", ""]
    for w in report["runs"]:
        procs = ", ".join(f"{p['what']} {p['rss_mib']:,.0f}" for p in w.get("rss_idle", {}).get("processes", []))
        out.append(f"- {w['workers']} worker(s): {_n(w.get('startup_s'), '{:.0f}')} s; idle "
                   f"{_n(w.get('rss_idle', {}).get('total_mib'), '{:,.0f}')} MiB ({procs})"
                   + (f"; **failed**: {w['error']}" if w.get("error") else ""))
    out += ["", "## Abusive requests (each followed by `/ping`, `/health` and one normal prediction)", "",
            "| workers | request | status | s | answer (first 120 chars) | then ping / health / predict | "
            "RSS after MiB | worker PIDs unchanged |",
            "|---:|---|---:|---:|---|---|---:|---|"]
    for w in report["runs"]:
        for e in w.get("edge_cases", []):
            head = e["answer_head"][:120].replace("|", "\\|").replace("\n", " ")
            out.append(f"| {w['workers']} | {e['case']} | {e['status']} | {e['seconds']} | `{head}` | "
                       f"{e['ping']} / {e['health']} / {e['predict_status']} | {e['rss_after_mib']:,.0f} | "
                       f"{'yes' if e['worker_pids_before'] == e['worker_pids_after'] else 'NO'} |")
    probes = [w for w in report["runs"] if w.get("timeout_probe")]
    if probes:
        out += ["", f"## A request that outlasts the server timeout ({report['server_timeout_s']} s)", "",
                "| workers | notes (characters) | status | s | worker CPU s until the answer | worker CPU s "
                "after it | busy s after it | next normal request |",
                "|---:|---|---:|---:|---:|---:|---:|---|"]
        for w in probes:
            t = w["timeout_probe"]
            out.append(f"| {w['workers']} | {t['rows']} ({t['chars']:,}) | {t['status']} | {t['seconds']} | "
                       f"{t['cpu_s_until_answer']} | {t['cpu_s_after_answer']} | {t['busy_s_after_answer']} | "
                       f"{t['next_request_status']} in {t['next_request_seconds']} s |")
    out += ["", "Server logs: " + "; ".join(
        f"{w['workers']} worker(s): {w['log']['tracebacks']} tracebacks, {w['log']['error_lines']} ERROR lines, "
        f"note text {'FOUND' if w['log']['echoes_note_text'] else 'never'} in the log"
        for w in report["runs"] if "log" in w) + ".", "",
        "*req/s*, *notes/s*: answered-OK requests (notes) / wall time of the level, first send to last answer. "
        "*p50/p95/p99*: per-request latency (send to whole answer read) of answered requests, linear "
        "interpolation. *RSS*: sum over the server's process tree (the `mlflow` CLI, uvicorn, its workers), "
        "`psutil`, sampled before and after the level, not a peak.", ""]
    if report.get("notes"):
        out += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(out)


def output_paths(out: str | None, date: str) -> tuple[Path, Path]:
    stem = Path(out) if out else HERE / "results" / f"{date}-serve-load"
    if stem.suffix in (".md", ".json"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-uri", help="models:/name@alias, runs:/..., or a local MLflow model directory")
    src.add_argument("--bundle", help="a bundle directory, wrapped as a local MLflow model in a temp dir")
    p.add_argument("--tracking-uri", default=None,
                   help="for models:/ and runs:/ URIs (default $MLFLOW_TRACKING_URI or sqlite:///<root>/mlflow.db)")
    p.add_argument("--workers", type=int, nargs="+", default=[1],
                   help="uvicorn workers; one server per value, one after another (default 1)")
    p.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16],
                   help="concurrency levels (default 1 4 16; none: only the edge cases)")
    p.add_argument("--requests", type=int, default=48, help="requests per level, one note each (default 48)")
    p.add_argument("--n-notes", type=int, default=48, help="distinct notes, cycled (default 48)")
    p.add_argument("--time-limit", type=float, default=240.0, help="seconds per level; no new request after it")
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests per worker (default 2)")
    p.add_argument("--server-timeout", type=int, default=60,
                   help="mlflow models serve -t (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT; default 60)")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--big-note-mb", type=float, default=5.0)
    p.add_argument("--oversize-body-mb", type=float, default=20.0, help="> MEDCODER_MAX_REQUEST_BYTES (16 MB)")
    p.add_argument("--timeout-probe-rows", type=int, default=0,
                   help="also send one request of N notes meant to outlast --server-timeout, and measure the "
                        "CPU the server spends on it after its 504 (default 0: skip)")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the server, e.g. OMP_NUM_THREADS=1 (repeatable)")
    p.add_argument("--out", default=None, help="output path without suffix (default benchmarks/results/<date>-serve-load)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    set_offline_env()
    from importlib.metadata import version

    now = dt.datetime.now()
    md_path, json_path = output_paths(args.out, now.strftime("%Y-%m-%d"))
    ids, texts = load_notes(args.n_notes)
    server_env = dict(kv.split("=", 1) for kv in args.server_env)
    tracking_uri = None
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        workdir = Path(tmp)
        if args.bundle:
            model_uri = bundle_as_local_model(args.bundle, workdir)
            shown_uri = f"bundle {args.bundle} (wrapped as a local model)"
        else:
            model_uri = shown_uri = args.model_uri
            if model_uri.startswith(("models:/", "runs:/")):
                tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") \
                    or f"sqlite:///{ROOT / 'mlflow.db'}"
                server_env.setdefault("MLFLOW_TRACKING_URI", tracking_uri)
        report: dict[str, Any] = {
            "benchmark": "serve-load", "date": now.strftime("%Y-%m-%d %H:%M"),
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "git_commit": git_commit(), "machine": machine_info(with_torch=False),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "model_uri": shown_uri, "tracking_uri": tracking_uri, "n_notes": len(texts),
            "mean_note_chars": sum(map(len, texts)) / len(texts), "requests": args.requests,
            "levels": args.levels, "time_limit_s": args.time_limit, "server_timeout_s": args.server_timeout,
            "server_env": {k: v for k, v in server_env.items() if k != "MLFLOW_TRACKING_URI"},
            "runs": [],
        }
        for lib in ("torch", "mlflow", "uvicorn", "fastapi", "aiohttp"):
            with contextlib.suppress(Exception):
                report[lib] = version(lib)
        for workers in args.workers:
            try:
                report["runs"].append(run_workers(args, model_uri, workers, ids, texts, server_env, workdir))
            except (RuntimeError, OSError) as exc:  # a server that does not start is a result too
                log_path = workdir / f"serve-w{workers}.log"
                report["runs"].append({"workers": workers, "error": str(exc)[:2000], "log": log_findings(log_path)})
                print(f"  workers={workers} failed: {str(exc)[:500]}", flush=True)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(markdown(report))
    print(f"wrote {md_path} and {json_path}", flush=True)
    return report


if __name__ == "__main__":
    main()
