"""Run one benchmark step in a child process under a time and memory limit.

Used by ``scale.py`` (one cell per process), ``large_parquet.py`` (one streaming step per
process) and ``scale_study.py`` (one ``healthtransfer run``). The child's peak memory is polled
as the resident set of its whole process tree; it is killed once it passes ``max_gib`` or
``timeout`` seconds.

>>> import sys
>>> r = run_limited([sys.executable, "-c", "print('{}')"], timeout=60, max_gib=4)
>>> r.status, r.returncode, r.out.strip()
(None, 0, '{}')
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field


@dataclass
class Limited:
    status: str | None  # None: ran to the end; else "stopped: ..." (killed by a limit)
    returncode: int | None
    out: str
    err: str
    wall_seconds: float
    peak_gib: float  # largest RSS of the process tree seen by the poller
    trace: list[tuple[float, float]] = field(default_factory=list)  # (seconds, GiB) samples


def tree_rss(pid: int) -> float:
    """Resident memory of a process and all its children, in GiB (0 if it is gone)."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
        return sum(q.memory_info().rss for q in procs if q.is_running()) / 2**30
    except Exception:
        return 0.0


def run_limited(cmd: list[str], *, timeout: float, max_gib: float, env: dict | None = None, stdout=None,
                poll: float = 0.25) -> Limited:
    """Run ``cmd``; kill it past ``timeout`` seconds or ``max_gib`` GiB of tree RSS.

    ``stdout``: a file to write the child's output to (stderr joins it); by default both are
    captured and returned as ``out`` / ``err``.
    """
    capture = stdout is None
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if capture else stdout,
                            stderr=subprocess.PIPE if capture else subprocess.STDOUT, text=True, env=env)
    peak, status, trace = 0.0, None, []
    while proc.poll() is None:
        rss = tree_rss(proc.pid)
        peak = max(peak, rss)
        trace.append((round(time.perf_counter() - t0, 1), round(rss, 3)))
        if rss > max_gib:
            status = f"stopped: memory > {max_gib:g} GiB"
        elif time.perf_counter() - t0 > timeout:
            status = f"stopped: time > {timeout:g} s"
        if status:
            proc.kill()
            proc.wait()
            break
        time.sleep(poll)
    out, err = proc.communicate() if capture else ("", "")
    return Limited(status=status, returncode=proc.returncode, out=out or "", err=err or "",
                   wall_seconds=time.perf_counter() - t0, peak_gib=peak, trace=trace)
