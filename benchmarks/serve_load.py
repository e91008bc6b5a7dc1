"""Load benchmark: the prediction service against the web framework's floor, in one run.

Two uvicorn servers on 127.0.0.1, started with the same ``nice`` value:

- **service**: ``healthtransfer serve`` (schema validation, API-key auth, SQLite audit log in
  WAL mode with synchronous=NORMAL (the default ``audit_sync``), drift monitor, metrics, request log, the compiled array path
  of the bundle), ``--workers`` uvicorn workers (default 1);
- **floor**: a bare FastAPI + uvicorn endpoint (this file, ``--floor-server``) that turns the
  same JSON record into a numpy row and runs ``LogisticRegression.predict_proba`` on it: no
  bundle, no validation, no auth, no audit. No service can beat it on this machine.

The same asyncio + httpx load generator drives both, **interleaved**: every phase is cut into
``--rounds`` chunks, and the chunks alternate service / floor (the order flips every round), so
both sides see the same machine (it is shared; the load average is recorded).

1. *fixed rate* (open loop): ``--rate`` single-record requests/s; latency counted from the
   moment a request was *due* (no coordinated omission); requests not started within the
   chunk's duration + ``--grace`` are "not sent";
2. *saturation* (closed loop): ``--concurrency`` clients as fast as answered;
3. *batch*: requests of ``--batch-size`` records, one at a time.

Then a **profile** of where a single-record request's time goes in the service: each stage
(validation, auth, model, audit, drift, JSON) timed in-process on the same payloads, beside
the server CPU per request measured under saturation (the rest is HTTP + the framework), and
the top functions of a cProfile of those stages.

Goals (issue 18): saturation throughput >= 0.6x the floor with one worker; single-record p99
< 25 ms at 100 req/s open loop; a batch of 1,000 records p95 < 100 ms.

Run: ``nice python benchmarks/serve_load.py`` (about 4 minutes); writes
``benchmarks/results/serve_load.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GOALS = {"single_p99_ms": 25.0, "batch_p95_ms": 100.0, "throughput_ratio": 0.6}
NICE = 5  # both servers run at this niceness


# -- the floor (runs in its own process) -------------------------------------------------------------
def floor_server(port: int) -> None:
    """FastAPI + uvicorn + ``LogisticRegression.predict_proba`` on a numpy row, nothing else."""
    import uvicorn
    from fastapi import Body, FastAPI
    from sklearn.linear_model import LogisticRegression

    from healthtransfer.data.sources import HEART_FEATURES as FEATURES

    uci_frames = _uci_test_bundles().uci_frames

    _, train, _ = uci_frames()
    X = train[FEATURES].to_numpy(float)
    med = np.nanmedian(X, axis=0)
    X = np.where(np.isnan(X), med, X)
    lr = LogisticRegression(max_iter=2000).fit(X, train["disease"].to_numpy())
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(body: dict = Body(...)):
        items = body["records"] if "records" in body else [body["record"]]
        row = np.array([[r.get(f) if r.get(f) is not None else np.nan for f in FEATURES]
                        for r in items], dtype=float)
        row = np.where(np.isnan(row), med, row)
        proba = lr.predict_proba(row)[:, 1]
        return {"predictions": [{"probability": float(p)} for p in proba]}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning",
                server_header=False)


# -- processes -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, log: Path, timeout: float = 180.0) -> subprocess.Popen:
    import httpx

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(log, "ab") as fh:
        proc = subprocess.Popen(["nice", "-n", str(NICE), *cmd], stdout=fh,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"server did not start in {timeout} s: {log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# -- load generation ---------------------------------------------------------------------------------
def pct(xs, qs=(50, 95, 99)) -> dict:
    if not len(xs):
        return {f"p{q}_ms": None for q in qs} | {"max_ms": None}
    a = 1000 * np.asarray(xs)
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 2) for q in qs} | {
        "max_ms": round(float(a.max()), 2)}


async def _post(client, body, kinds: dict) -> bool:
    """POST one prediction request; count failures by kind (HTTP status or exception)."""
    try:
        r = await client.post("/v1/predict", content=body)
    except Exception as exc:
        kinds[type(exc).__name__] = kinds.get(type(exc).__name__, 0) + 1
        return False
    if r.status_code != 200:
        kinds[f"HTTP {r.status_code}"] = kinds.get(f"HTTP {r.status_code}", 0) + 1
        return False
    return True


async def fixed_rate(client, bodies, rate, duration, max_inflight, grace):
    loop = asyncio.get_running_loop()
    n = int(round(rate * duration))
    sem = asyncio.Semaphore(max_inflight)
    lat, service, lag, fails = [], [], [], 0
    unsent, kinds = 0, {}
    t0 = loop.time() + 0.05

    async def one(i, due):
        nonlocal fails, unsent
        async with sem:
            start = loop.time()
            if start - t0 > duration + grace:
                unsent += 1
                return
            ok = await _post(client, bodies[i % len(bodies)], kinds)
            end = loop.time()
            if ok:
                lat.append(end - due)
                service.append(end - start)
                lag.append(start - due)
            else:
                fails += 1

    tasks = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - t0
    return {"requests": n, "ok": len(lat), "failed": fails, "failures": kinds,
            "not_sent": unsent,
            "target_rate": rate, "achieved_rate": round(len(lat) / elapsed, 1),
            "elapsed_s": round(elapsed, 2),
            "latency_from_due": pct(lat), "latency_from_send": pct(service),
            "client_queueing_p99_ms": pct(lag)["p99_ms"], "_lat": lat, "_svc": service}


async def closed_loop(client, bodies, total, concurrency):
    loop = asyncio.get_running_loop()
    lat, fails, kinds = [], 0, {}
    counter = iter(range(total))

    async def worker():
        nonlocal fails
        for i in counter:
            t = loop.time()
            ok = await _post(client, bodies[i % len(bodies)], kinds)
            if ok:
                lat.append(loop.time() - t)
            else:
                fails += 1

    t0 = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = loop.time() - t0
    return {"requests": total, "ok": len(lat), "failed": fails, "failures": kinds,
            "concurrency": concurrency,
            "elapsed_s": round(elapsed, 2), "throughput_rps": round(len(lat) / elapsed, 1),
            "latency": pct(lat), "_lat": lat}


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server and its worker processes (Linux /proc): unlike
    wall-clock latency on a shared machine, the CPU a server spends per request hardly depends
    on what else runs."""
    total = 0.0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(p.name) == pid or int(fields[2]) == pid or int(fields[3]) == pid:
            total += _proc_cpu(int(p.name))
    return total


def _merge(parts: list[dict], key: str) -> dict:
    """One phase's chunks (interleaved with the other server's) as one result."""
    out = {"chunks": len(parts), "requests": sum(p["requests"] for p in parts),
           "ok": sum(p["ok"] for p in parts), "failed": sum(p["failed"] for p in parts),
           "failures": {}, "elapsed_s": round(sum(p["elapsed_s"] for p in parts), 2)}
    for p in parts:
        for k, v in p["failures"].items():
            out["failures"][k] = out["failures"].get(k, 0) + v
    lat = sum((p["_lat"] for p in parts), [])
    if key == "fixed_rate":
        out.update(target_rate=parts[0]["target_rate"],
                   not_sent=sum(p["not_sent"] for p in parts),
                   achieved_rate=round(out["ok"] / max(out["elapsed_s"], 1e-9), 1),
                   latency_from_due=pct(lat), latency_from_send=pct(sum((p["_svc"] for p in parts), [])))
    else:
        out.update(throughput_rps=round(out["ok"] / max(out["elapsed_s"], 1e-9), 1),
                   latency=pct(lat))
    return out


async def drive(targets: dict, singles, batches, args) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=args.max_inflight,
                          max_keepalive_connections=args.max_inflight)
    clients = {name: httpx.AsyncClient(base_url=t["url"], headers=t["headers"], limits=limits,
                                       timeout=httpx.Timeout(60.0))
               for name, t in targets.items()}
    parts: dict = {name: {"fixed_rate": [], "saturation": [], "batch": []} for name in targets}
    cpu: dict = {name: {"fixed_rate": 0.0, "saturation": 0.0, "batch": 0.0} for name in targets}
    load: dict = {name: [] for name in targets}
    R = args.rounds
    try:
        for name, c in clients.items():  # warm-up: connections, caches, first-call costs
            for i in range(50):
                await c.post("/v1/predict", content=singles[i % len(singles)])
            for b in batches[:2]:
                await c.post("/v1/predict", content=b)
        phases = [
            ("fixed_rate", lambda c: fixed_rate(c, singles, args.rate, args.duration / R,
                                                args.max_inflight, args.grace)),
            ("saturation", lambda c: closed_loop(c, singles, args.sat_requests // R,
                                                 args.concurrency)),
            ("batch", lambda c: closed_loop(c, batches, max(1, args.batch_requests // R), 1)),
        ]
        for key, run in phases:
            for rnd in range(R):
                order = list(clients) if rnd % 2 == 0 else list(clients)[::-1]
                for name in order:
                    print(f"[{name}] {key} round {rnd + 1}/{R}", flush=True)
                    pid = targets[name]["pid"]
                    cpu0 = cpu_seconds(pid)
                    load[name].append(os.getloadavg()[0])
                    r = await run(clients[name])
                    cpu[name][key] += cpu_seconds(pid) - cpu0
                    parts[name][key].append(r)
    finally:
        for c in clients.values():
            await c.aclose()
    results: dict = {}
    for name in targets:
        results[name] = {}
        for key in ("fixed_rate", "saturation", "batch"):
            r = _merge(parts[name][key], key)
            records = r["ok"] * (args.batch_size if key == "batch" else 1)
            r["server_cpu_s"] = round(cpu[name][key], 2)
            r["server_cpu_ms_per_record"] = round(1000 * cpu[name][key] / max(records, 1), 3)
            if key == "batch":
                r["batch_size"] = args.batch_size
                r["records_per_s"] = round(r["throughput_rps"] * args.batch_size, 0)
            results[name][key] = r
        results[name]["loadavg_1m_mean"] = round(float(np.mean(load[name])), 2)
    return results


def _uci_test_bundles():
    """``tests/_bundles.py`` (the UCI heart bundle and frames the tests use), loaded by path: it is a
    test fixture, not part of the package."""
    import importlib.util

    if "_bundles" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_bundles", HERE.parent / "tests" / "_bundles.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["_bundles"] = mod
    return sys.modules["_bundles"]


def payloads(batch_size: int):
    from healthtransfer.data.sources import HEART_FEATURES as FEATURES

    uci_frames = _uci_test_bundles().uci_frames

    _, train, test = uci_frames()
    ints = {"sex", "cp", "fbs", "restecg", "exang"}
    recs = [{k: (None if v != v else (int(v) if k in ints else float(v))) for k, v in r.items()}
            for r in pd_records(test[FEATURES]) + pd_records(train[FEATURES])]
    singles = [json.dumps({"record": r}).encode() for r in recs]
    batches = []
    for j in range(8):
        rows = [recs[(j * 97 + i) % len(recs)] for i in range(batch_size)]
        batches.append(json.dumps({"records": rows}).encode())
    return singles, batches


def pd_records(frame):
    return frame.to_dict("records")


# -- where the time goes ---------------------------------------------------------------------------
def profile_stages(bundle, keys_file: Path, key: str, singles, batch, n: int = 300) -> dict:
    """Each stage of ``POST /v1/predict`` timed in-process on the same payloads (mean ms per
    single-record request), the batch of ``batch_size`` split the same way, and the top
    functions of a cProfile over the single-record stages."""
    import cProfile
    import io
    import pstats

    from fastapi.responses import JSONResponse

    from healthtransfer.bundle import load_bundle
    from healthtransfer.serve._audit import AuditLog, audit_url, input_hasher
    from healthtransfer.serve._auth import KeyStore
    from healthtransfer.serve._drift import DriftMonitor
    from healthtransfer.serve._fast import Predictor
    from healthtransfer.serve._schemas import request_models

    b = load_bundle(bundle)
    _, PredictRequest, _ = request_models(b.schema, 1000)
    store = KeyStore.load(keys_file)
    work = Path(tempfile.mkdtemp(prefix="ht-prof-"))
    audit = AuditLog(audit_url(work / "audit.sqlite"))  # the service's default audit_sync
    input_hash = input_hasher(os.urandom(32))
    drift = DriftMonitor(b.reference, b.feature_names)
    predictor = Predictor(b)

    def one(body, t, c):
        """One request's stages; ``t`` gathers wall time, ``c`` CPU time (the audit commit
        waits for the disk: wall time, hardly any CPU)."""
        marks = [(time.perf_counter(), time.process_time())]
        items = PredictRequest.model_validate_json(body).items()
        marks.append((time.perf_counter(), time.process_time()))
        store.authenticate(key)
        marks.append((time.perf_counter(), time.process_time()))
        proba = predictor.predict_proba(items)
        preds = [{"probability": float(r[b.positive_index]), "class": b.classes[int(np.argmax(r))],
                  "flagged": False} for r in proba]
        marks.append((time.perf_counter(), time.process_time()))
        audit.append([{"request_id": "p", "key_id": "bench", "model_version": b.model_version,
                       "input_hash": input_hash(rec), "output": p}
                      for rec, p in zip(items, preds)])
        marks.append((time.perf_counter(), time.process_time()))
        drift.update(items)
        marks.append((time.perf_counter(), time.process_time()))
        JSONResponse({"predictions": preds}).body  # as /v1/predict renders it
        marks.append((time.perf_counter(), time.process_time()))
        for i, k in enumerate(("validation", "auth", "model", "audit", "drift", "json")):
            t[k] = t.get(k, 0.0) + marks[i + 1][0] - marks[i][0]
            c[k] = c.get(k, 0.0) + marks[i + 1][1] - marks[i][1]

    for body in singles[:30]:  # warm-up
        one(body, {}, {})
    single, single_cpu = {}, {}
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        one(singles[i % len(singles)], single, single_cpu)
    prof.disable()
    bt, bt_cpu = {}, {}
    for _ in range(5):
        one(batch, bt, bt_cpu)
    audit.close()
    shutil.rmtree(work, ignore_errors=True)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    top = [line.rstrip() for line in buf.getvalue().splitlines()
           if line.strip() and not line.startswith(("   Ordered", "   List"))][-16:]
    return {"single_ms": {k: round(1000 * v / n, 3) for k, v in single.items()},
            "single_cpu_ms": {k: round(1000 * v / n, 3) for k, v in single_cpu.items()},
            "batch_ms": {k: round(1000 * v / 5, 2) for k, v in bt.items()},
            "batch_cpu_ms": {k: round(1000 * v / 5, 2) for k, v in bt_cpu.items()},
            "prediction_path": predictor.info(), "cprofile_top_tottime": top}


# -- report --------------------------------------------------------------------------------------------
def evaluate(res: dict) -> dict:
    s, m = res["service"], res["floor"]
    p99 = s["fixed_rate"]["latency_from_due"]["p99_ms"]
    bp95 = s["batch"]["latency"]["p95_ms"]
    ratio = s["saturation"]["throughput_rps"] / max(m["saturation"]["throughput_rps"], 1e-9)
    keeps_up = s["fixed_rate"]["not_sent"] == 0 and s["fixed_rate"]["failed"] == 0
    cpu_ratio = (m["saturation"]["server_cpu_ms_per_record"]
                 / max(s["saturation"]["server_cpu_ms_per_record"], 1e-9))
    return {
        "single_p99_ms": {"value": p99, "goal": f"< {GOALS['single_p99_ms']} ms at "
                          f"{s['fixed_rate']['target_rate']:g} req/s open loop",
                          "met": bool(p99 is not None and p99 < GOALS["single_p99_ms"] and keeps_up)},
        "batch_p95_ms": {"value": bp95, "goal": f"< {GOALS['batch_p95_ms']:g} ms "
                         f"(batch of {s['batch']['batch_size']})",
                         "met": bool(bp95 is not None and bp95 < GOALS["batch_p95_ms"])},
        "throughput_ratio": {"value": round(ratio, 3), "goal": f">= {GOALS['throughput_ratio']}x "
                             "the floor (saturation)", "met": bool(ratio >= GOALS["throughput_ratio"])},
        # the same ratio from server CPU per request: much less sensitive to other load on a
        # shared machine than wall-clock throughput
        "throughput_ratio_cpu": {"value": round(cpu_ratio, 3), "goal": f">= {GOALS['throughput_ratio']}x "
                                 "(from server CPU per request)",
                                 "met": bool(cpu_ratio >= GOALS["throughput_ratio"])},
    }


def markdown(out: dict) -> str:
    s, m = out["results"]["service"], out["results"]["floor"]
    e, c = out["environment"], out["config"]
    yn = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731

    def row(label, f):
        return f"| {label} | {f(s)} | {f(m)} |"

    fr = lambda r: r["fixed_rate"]  # noqa: E731
    q = "{p50_ms} / {p95_ms} / {p99_ms}".format
    lines = [
        "# Service load benchmark: the service against the framework's floor",
        "",
        f"Run {out['run_at']} on {e['cpus']} CPUs ({e['platform']}), Python {e['python']}, "
        f"FastAPI {e['fastapi']}, uvicorn {e['uvicorn']}, git {e['git']}. Load average "
        f"before/after: {e['loadavg_before']} / {e['loadavg_after']} (shared machine; the load "
        "generator runs on the same CPUs).",
        "",
        f"*service*: `healthtransfer serve --workers {c['workers']}` (validation, API key, SQLite "
        "audit WAL + synchronous=NORMAL, drift, metrics, request log; prediction path: "
        f"{out['profile']['prediction_path']['path']}, {out['profile']['prediction_path']['model']}). "
        "*floor*: bare FastAPI + uvicorn endpoint running `LogisticRegression.predict_proba` on a "
        f"numpy row, no bundle. Both `nice -n {NICE}`, 127.0.0.1, same records, same run, each "
        f"phase interleaved in {c['rounds']} alternating chunks.",
        "",
        "| | service | floor |",
        "|---|---:|---:|",
        row(f"fixed rate: target req/s ({c['duration']:g} s in total)", lambda r: fr(r)["target_rate"]),
        row("fixed rate: achieved req/s", lambda r: fr(r)["achieved_rate"]),
        row("fixed rate: ok / failed / not sent", lambda r: f"{fr(r)['ok']} / {fr(r)['failed']} / {fr(r)['not_sent']}"),
        row("single p50 / p95 / p99 ms (from due time)", lambda r: q(**fr(r)["latency_from_due"])),
        row("single p50 / p95 / p99 ms (from send)", lambda r: q(**fr(r)["latency_from_send"])),
        row(f"saturation throughput req/s ({c['concurrency']} clients)", lambda r: r["saturation"]["throughput_rps"]),
        row("saturation p50 / p95 / p99 ms", lambda r: q(**r["saturation"]["latency"])),
        row(f"batch of {c['batch_size']}: p50 / p95 / p99 ms", lambda r: q(**r["batch"]["latency"])),
        row("batch: records/s", lambda r: int(r["batch"]["records_per_s"])),
        row("server CPU ms per single-record request (saturation)", lambda r: r["saturation"]["server_cpu_ms_per_record"]),
        row("server CPU ms per record (batch)", lambda r: r["batch"]["server_cpu_ms_per_record"]),
        row("mean 1-min load average at chunk starts", lambda r: r["loadavg_1m_mean"]),
        "",
    ]
    fails = {f"{n} {k}": r[k]["failures"] for n, r in (("service", s), ("floor", m))
             for k in ("fixed_rate", "saturation", "batch") if r[k].get("failures")}
    if fails:
        lines += [f"Failed requests by kind: {json.dumps(fails)}", ""]
    a = s.get("audit_rows", {})
    lines += [f"Audit rows written by the service: {a.get('rows')} for {a.get('acknowledged_records')} "
              "acknowledged records.", ""]
    lines += ["| goal | value | |", "|---|---:|---|"]
    for k, g in out["goals"].items():
        unit = "x" if k.startswith("throughput_ratio") else " ms"
        lines.append(f"| {k.replace('_', ' ')} {g['goal']} | {g['value']}{unit} | {yn(g['met'])} |")
    p = out["profile"]
    total = sum(p["single_cpu_ms"].values())
    cpu = s["saturation"]["server_cpu_ms_per_record"]
    lines += ["", "## Where a request's time goes (service, one worker)", "",
              "Each stage timed in-process on the same payloads (mean over "
              f"{p['n']} single-record requests; 5 batches of {c['batch_size']}), as wall time and "
              "as CPU time. The server's CPU per request under saturation minus the stages' CPU "
              "is HTTP parsing, the ASGI framework (routing, middleware, dependency injection, "
              "thread pool hand-off) and the request log.", "",
              "| stage | single: wall ms | single: CPU ms | batch: wall ms | batch: CPU ms |",
              "|---|---:|---:|---:|---:|"]
    for k in ("validation", "auth", "model", "audit", "drift", "json"):
        lines.append(f"| {k} | {p['single_ms'][k]} | {p['single_cpu_ms'][k]} | "
                     f"{p['batch_ms'][k]} | {p['batch_cpu_ms'][k]} |")
    lines += [f"| sum of stages | {sum(p['single_ms'].values()):.3f} | {total:.3f} | "
              f"{sum(p['batch_ms'].values()):.2f} | {sum(p['batch_cpu_ms'].values()):.2f} |",
              f"| HTTP + framework + log (server CPU {cpu} ms - stages' CPU) | | "
              f"{max(cpu - total, 0):.3f} | | |",
              "", "cProfile of the stages, top functions by own time:", "", "```",
              *p["cprofile_top_tottime"], "```", "",
              "Latency \"from due time\" counts time a request waited because the server was "
              "behind (open-loop schedule); \"from send\" is the server's response time alone.", ""]
    return "\n".join(lines)


def git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=HERE, timeout=10).stdout.strip() or "?"
    except Exception:
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=30.0, help="fixed-rate seconds, all rounds")
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--max-inflight", type=int, default=64)
    ap.add_argument("--sat-requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--batch-requests", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved chunks per phase")
    ap.add_argument("--workers", type=int, default=1, help="service uvicorn workers")
    ap.add_argument("--bundle", help="bundle folder (default: build the UCI demo bundle)")
    ap.add_argument("--out", default=str(HERE / "results" / "serve_load"),
                    help="output path without extension (.json and .md are written)")
    ap.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor_server:
        floor_server(args.port)
        return 0

    from healthtransfer.serve import keys_add

    work = Path(tempfile.mkdtemp(prefix="ht-serve-load-"))
    procs = []
    try:
        bundle = Path(args.bundle) if args.bundle else None
        if bundle is None:
            print("building the demo bundle", flush=True)
            bundle = _uci_test_bundles().build_uci_bundle(work / "bundle", "pooled_lr")
        key = keys_add(work / "keys.json", "bench", ["predict"])
        singles, batches = payloads(args.batch_size)
        loadavg_before = [round(x, 2) for x in os.getloadavg()]

        p_srv, p_floor = free_port(), free_port()
        print("starting the service and the floor", flush=True)
        procs.append(start([sys.executable, "-c", "from healthtransfer.cli import main; main()",
                            "serve", "--host", "127.0.0.1", "--port", str(p_srv),
                             "--workers", str(args.workers),
                             "--api-keys", str(work / "keys.json"), "--allow-unsigned",
                            "--audit-db", str(work / "audit.sqlite"), str(bundle)],
                           p_srv, work / "service.log"))
        procs.append(start([sys.executable, str(Path(__file__).resolve()), "--floor-server",
                            "--port", str(p_floor)], p_floor, work / "floor.log"))
        h = {"Content-Type": "application/json"}
        targets = {
            "service": {"url": f"http://127.0.0.1:{p_srv}", "pid": procs[0].pid,
                        "headers": dict(h, **{"X-API-Key": key})},
            "floor": {"url": f"http://127.0.0.1:{p_floor}", "pid": procs[1].pid, "headers": h},
        }
        results = asyncio.run(drive(targets, singles, batches, args))
        for p in procs:
            stop(p)
        import sqlite3

        with sqlite3.connect(work / "audit.sqlite") as conn:
            audited = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        s = results["service"]
        expected = (50 + 2 * args.batch_size + s["fixed_rate"]["ok"] + s["saturation"]["ok"]
                    + s["batch"]["ok"] * args.batch_size)
        results["service"]["audit_rows"] = {"rows": audited, "acknowledged_records": expected}
        print("profiling the stages", flush=True)
        prof = profile_stages(bundle, work / "keys.json", key, singles, batches[0])
        prof["n"] = 300
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)

    import fastapi
    import uvicorn

    out = {
        "benchmark": "serve_load",
        "run_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "config": {k: v for k, v in vars(args).items() if k not in ("floor_server", "port", "out")},
        "environment": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "git": git_rev(),
                        "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
                        "nice": NICE, "loadavg_before": loadavg_before,
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
        "profile": prof,
    }
    out["goals"] = evaluate(results)
    dest = Path(args.out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    md = markdown(out)
    dest.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
