"""A real Flower deployment on loopback: one SuperLink and one SuperNode per site, each a
separate process, and the run submitted with ``flwr run``.

What runs (all bound to 127.0.0.1, on free ports picked at start):

* ``flower-superlink --insecure --host 127.0.0.1 --port P --disable-runtime-dependency-installation``
  - the server side. In Flower 1.42 one HTTP port serves the Fleet API (SuperNodes), the
  Control API (``flwr run``) and the Runtime API. It starts ``flower-superexec``, which starts
  ``flwr-serverapp`` for each submitted run; that process runs our ServerApp.
* per site ``flower-supernode --insecure --superlink 127.0.0.1:P --port Q_site
  --node-config "site='cleveland'"`` - one hospital. It pulls the messages for its node and
  runs our ClientApp (in a ``flwr-clientapp`` subprocess), which loads only that site's rows.
* ``flwr run APP_DIR loopback --stream`` - builds a Flower App bundle (FAB) from a temporary app
  directory whose ``pyproject.toml`` names ``healthtransfer.federated._apps:server_app`` and
  ``:client_app`` and carries the run config (the plan, the study path, where to write the
  result), submits it to the SuperLink's Control API (connection ``loopback`` in a temporary
  ``$FLWR_HOME/config.toml``) and streams the run's log until the run ends.

The ServerApp writes the report to ``result.json`` in the work folder; :func:`deploy` reads it,
and always stops every process it started (process groups, then any leftover descendants).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess  # nosec B404 # starts Flower's own executables, argument lists only
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["deploy", "LoopbackDeployment", "flower_executable"]

log = logging.getLogger("healthtransfer.federated")


def flower_executable(name: str) -> str | None:
    """Path of a Flower command (``flower-superlink`` ...): next to this Python first, then PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _toml_str(s: str) -> str:
    return json.dumps(str(s))  # a JSON string literal is a valid TOML basic string


def _descendants(pid: int) -> list:
    try:
        import psutil

        return psutil.Process(pid).children(recursive=True)
    except Exception:
        return []


class LoopbackDeployment:
    """Starts and stops the SuperLink and SuperNodes; keeps their logs in ``workdir``."""

    def __init__(self, sites: list[str], workdir: Path, *, site_data: dict[str, str] | None = None):
        self.sites = list(sites)
        self.workdir = Path(workdir)
        self.site_data = site_data or {}
        self.home = self.workdir / "flwr_home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}
        self.all_pids: set[int] = set()
        self.port = _free_port()
        self.node_ports = {s: _free_port() for s in self.sites}
        self.restarts: list[dict] = []
        bindir = str(Path(sys.executable).parent)
        self.env = dict(os.environ, FLWR_HOME=str(self.home), PYTHONUNBUFFERED="1",
                        PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            self.env.setdefault(var, "1")
        # a local deployment phones nobody: no telemetry, no PyPI update check
        self.env.update(FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1")
        # the SuperLink connection `flwr run` uses
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "loopback"\n\n'
            f'[superlink.loopback]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        logf = open(self.workdir / f"{name}.log", "ab")
        # cmd is an argument list built here from flower_executable(); no shell
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,  # nosec B603 # see above
                             stdin=subprocess.DEVNULL, env=self.env, cwd=str(self.workdir),
                             start_new_session=True)
        logf.close()
        self.procs[name] = p
        self.all_pids.add(p.pid)
        log.info("started %s (pid %s): %s", name, p.pid, " ".join(cmd))
        return p

    def start_superlink(self, timeout: float = 60.0) -> None:
        exe = flower_executable("flower-superlink")
        if exe is None:
            raise FileNotFoundError("the `flower-superlink` executable is not installed (pip install flwr)")
        p = self._spawn("superlink", [exe, "--insecure", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--disable-runtime-dependency-installation"])
        t0 = time.time()
        while not _port_open(self.port):
            if p.poll() is not None:
                raise RuntimeError(f"flower-superlink exited with code {p.returncode}; see "
                                   f"{self.workdir / 'superlink.log'}")
            if time.time() - t0 > timeout:
                raise TimeoutError(f"flower-superlink did not listen on 127.0.0.1:{self.port} in {timeout:.0f}s")
            time.sleep(0.2)

    def start_supernode(self, site: str) -> subprocess.Popen:
        exe = flower_executable("flower-supernode")
        if exe is None:
            raise FileNotFoundError("the `flower-supernode` executable is not installed (pip install flwr)")
        node_cfg = f"site={_toml_str(site)}"
        if site in self.site_data:
            node_cfg += f" data={_toml_str(self.site_data[site])}"
        return self._spawn(f"supernode-{site}", [
            exe, "--insecure", "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
            "--port", str(self.node_ports[site]), "--node-config", node_cfg])

    def start(self) -> None:
        self.start_superlink()
        for s in self.sites:
            self.start_supernode(s)

    def _stop(self, procs: list[subprocess.Popen], grace: float = 5.0, sig=signal.SIGTERM) -> None:
        """Signal the process groups of ``procs`` together, wait up to ``grace`` seconds, then
        SIGKILL what is left, including descendants in other sessions (flower-superexec ...)."""
        kids = [k for p in procs for k in _descendants(p.pid)]
        self.all_pids.update(k.pid for k in kids)
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, sig)
        deadline = time.time() + grace
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        for k in kids:
            with contextlib.suppress(Exception):
                k.terminate()
        deadline = time.time() + grace
        for k in kids:
            with contextlib.suppress(Exception):
                k.wait(timeout=max(0.1, deadline - time.time()))
            with contextlib.suppress(Exception):
                if k.is_running():
                    k.kill()

    def restart_supernode(self, site: str, sig=signal.SIGTERM) -> None:
        """Kill one site's SuperNode (``sig``; SIGTERM lets it tell the SuperLink it left, so the
        server stops waiting for it at once; SIGKILL = a crash, noticed after the heartbeat
        patience, about a minute) and start it again with the same node config."""
        name = f"supernode-{site}"
        old = self.procs.get(name)
        if old is not None:
            self._stop([old], grace=5.0, sig=sig)
        self.start_supernode(site)
        self.restarts.append({"site": site, "time": time.time(), "old_pid": old.pid if old else None,
                              "new_pid": self.procs[name].pid})
        log.warning("restarted the SuperNode of site '%s' (pid %s -> %s)", site,
                    old.pid if old else None, self.procs[name].pid)

    def stop(self) -> None:
        # `flwr run` and the SuperNodes first (together), then the SuperLink (which stops its
        # SuperExec / ServerApp)
        self._stop([p for n, p in self.procs.items() if n != "superlink"])
        if "superlink" in self.procs:
            self._stop([self.procs["superlink"]])

    def listening(self) -> list[str]:
        """``ip:port`` of every TCP socket the started processes (and descendants) listen on."""
        try:
            import psutil
        except ImportError:
            return []
        pids = set()
        for p in self.procs.values():
            if p.poll() is None:
                pids.add(p.pid)
                pids.update(k.pid for k in _descendants(p.pid))
        try:
            conns = psutil.net_connections(kind="inet")
        except Exception:
            return []
        return sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == "LISTEN" and c.pid in pids})

    def alive_pids(self) -> list[int]:
        """The processes started here (and their known descendants) that still run."""
        alive = []
        for pid in sorted(self.all_pids):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            except PermissionError:
                pass
            try:  # a zombie that nobody reaped is not running
                import psutil

                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    continue
            except Exception:  # nosec B110 # no psutil or the process vanished: count it alive
                pass
            alive.append(pid)
        return alive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def write_app(app_dir: Path, run_config: dict) -> Path:
    """The Flower App directory ``flwr run`` bundles: only a ``pyproject.toml`` whose components
    point at the installed ``healthtransfer.federated._apps`` module."""
    app_dir.mkdir(parents=True, exist_ok=True)
    conf = "\n".join(f"{k} = {_toml_str(v)}" for k, v in run_config.items())
    (app_dir / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "healthtransfer-federated"
version = "1.0.0"
description = "healthtransfer federated study (generated by healthtransfer.federated._deploy)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "healthtransfer"

[tool.flwr.app.components]
serverapp = "healthtransfer.federated._apps:server_app"
clientapp = "healthtransfer.federated._apps:client_app"

[tool.flwr.app.config]
{conf}
""")
    return app_dir


def deploy(cfg: dict, spec: dict, sites: list[str], study_path: str | Path | None = None, *, frames: dict | None = None,
           timeout: float = 600.0,
           workdir: str | Path | None = None, keep_workdir: bool = False, rejoin: dict | None = None,
           echo: bool = False) -> dict:
    """Run the job on a loopback deployment and return the ServerApp's report.

    ``workdir``: where logs, the app and the result go (default: a temporary folder, removed
    afterwards unless ``keep_workdir``). ``frames`` = {site: (train, test)}: written to one file per
    site, given to that site's SuperNode only (``--node-config data=...``); without it each
    ClientApp loads the study and keeps its site's rows. ``rejoin`` = {site: round}: restart that site's SuperNode
    once the given round has been aggregated (tests the rejoin path). ``echo``: copy the run log
    to stderr as it arrives. The report gets ``deployment`` (ports, commands, restarts, logs).
    """
    exe = flower_executable("flwr")
    if exe is None:
        raise FileNotFoundError("the `flwr` command is not installed (pip install flwr)")
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="ht-flower-")
        workdir = tmp
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    result_path, progress_path = workdir / "result.json", workdir / "progress.jsonl"
    for p in (result_path, progress_path):
        p.unlink(missing_ok=True)
    if frames is None and study_path is None:
        raise ValueError("deploy() needs the site frames or the study file path")
    study_path = str(Path(study_path).resolve()) if study_path is not None else ""
    run_config = {"plan": json.dumps({"cfg": cfg, "spec": spec, "sites": list(sites)}), "study": study_path,
                  "result-path": str(result_path), "progress-path": str(progress_path)}
    app_dir = write_app(workdir / "app", run_config)
    pending = dict(rejoin or {})
    t0 = time.time()
    site_data = {}
    if frames is not None:  # each SuperNode gets a folder holding only its own site's rows
        for s in sites:
            d = workdir / "sites" / s
            d.mkdir(parents=True, exist_ok=True)
            # Parquet, not pickle: a file another process could swap must not run code on load
            frames[s][0].to_parquet(d / "train.parquet")
            frames[s][1].to_parquet(d / "test.parquet")
            site_data[s] = str(d)
    dep = LoopbackDeployment(sites, workdir, site_data=site_data)
    try:
        with dep:
            dep.start()
            runner = dep._spawn("flwr-run", [exe, "run", str(app_dir), "loopback", "--stream"])
            pos, listening = 0, None
            while True:
                if echo:
                    txt = (workdir / "flwr-run.log").read_bytes()
                    if len(txt) > pos:
                        sys.stderr.write(txt[pos:].decode(errors="replace"))
                        pos = len(txt)
                if result_path.exists():
                    break
                if listening is None and progress_path.exists():  # everything is up by round 1
                    listening = dep.listening()
                if pending and progress_path.exists():
                    done = [json.loads(x)["round"] for x in progress_path.read_text().splitlines() if x.strip()]
                    for site, rnd in list(pending.items()):
                        if done and max(done) >= int(rnd):
                            dep.restart_supernode(site)
                            del pending[site]
                if runner.poll() is not None and not result_path.exists():
                    # `flwr run --stream` returned: the run ended; give the ServerApp a moment
                    for _ in range(20):
                        if result_path.exists():
                            break
                        time.sleep(0.5)
                    if not result_path.exists():
                        raise RuntimeError("the Flower run ended without a result; see the logs in "
                                           f"{workdir} (flwr-run.log, superlink.log, supernode-*.log)"
                                           + ("" if tmp is None or keep_workdir else " - pass workdir= to keep them"))
                    break
                if time.time() - t0 > timeout:
                    raise TimeoutError(f"the loopback deployment did not finish within {timeout:.0f}s"
                                       + (f"; logs in {workdir}" if tmp is None or keep_workdir
                                          else "; pass workdir= to keep the logs"))
                for name, p in dep.procs.items():
                    if name.startswith("superlink") and p.poll() is not None:
                        raise RuntimeError(f"flower-superlink exited early (code {p.returncode}); see "
                                           f"{workdir / 'superlink.log'}")
                time.sleep(0.3)
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise RuntimeError(f"the ServerApp failed: {result['error']}")
        leftovers = dep.alive_pids()
        result["deployment"] = {
            "superlink": f"127.0.0.1:{dep.port}",
            "supernodes": {s: f"127.0.0.1:{q}" for s, q in dep.node_ports.items()},
            "listening": listening or [], "pids": sorted(dep.all_pids), "alive_after_stop": leftovers, "restarts": dep.restarts,
            "seconds": round(time.time() - t0, 2),
            "workdir": str(workdir) if (tmp is None or keep_workdir) else None,
            "run_log": (workdir / "flwr-run.log").read_text(errors="replace")[-20000:],
        }
        return result
    finally:
        if tmp is not None and not keep_workdir:
            shutil.rmtree(tmp, ignore_errors=True)
