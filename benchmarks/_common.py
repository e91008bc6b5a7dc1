"""Shared harness for the benchmark scripts: our methods and skada's on identical splits.

One *unit* is one (pair, seed): our methods, ``selected``, skada's pipelines and the
dataset's extras on one split (what each part does: :mod:`_units`). skada masks target labels,
so a skada fit does not depend on n_t and is scored on the same test rows at every budget.

Units run in parallel with joblib (``n_jobs=2``), each single-threaded. The parts live in
:mod:`_units` (configuration, split, one unit), :mod:`_skada_runner` (skada's pipelines) and
:mod:`_tables` (summaries, Markdown); this module holds the driver (run every unit, resume,
merge, write ``NAME.json`` / ``NAME.md``) and the command line the scripts share.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from _tables import _frame, markdown, summarise
from _units import PHASE_SIDES, PHASES, BenchConfig, _record_pair, pair_key, run_bench_unit

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = os.environ.get("HEALTHTRANSFER_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def _previous_results(path: Path) -> list[dict]:
    """A committed run split back into per-unit results (records, skipped, selections)."""
    if not path.exists():
        return []
    old = json.loads(path.read_text())
    units: dict[tuple, dict] = {}
    # old files: config "pairs" was {target: sources}; newer: {pair: {"sources", "target"}}
    by_target = {t: pair_key(v, t) for t, v in old.get("config", {}).get("pairs", {}).items() if isinstance(v, list)}
    by_target.update({r["target"]: _record_pair(r, {}) for r in old["records"]})

    def unit(r):
        p = _record_pair(r, by_target)
        r["pair"] = p
        return units.setdefault((p, int(r["seed"])), dict(records=[], skipped=[], selections=[], seconds=0.0,
                                                          phases={}, pair=p, seed=int(r["seed"])))
    for r in old["records"]:
        unit(r)["records"].append(r)
    for s in old.get("skipped", []):
        if s.get("seed") is not None:
            unit(s)["skipped"].append(s)
    for s in old.get("selections", []):
        unit(s)["selections"].append(s)
    return list(units.values())


def _merge_unit(old: dict | None, new: dict, phases) -> dict:
    """``new`` (a re-run of ``phases``) laid over ``old``: the other phases' records are kept."""
    if old is None:
        return new
    rerun_sides = set().union(*(PHASE_SIDES[p] for p in phases))
    rerun_methods = {r["method"] for r in new["records"]} | {s.get("method") for s in new["skipped"]}
    keep = [r for r in old["records"] if not (r.get("side") in rerun_sides and r["method"] in rerun_methods)]
    skipped = [s for s in old["skipped"] if s.get("method") not in rerun_methods] + new["skipped"]
    selections = new["selections"] if "selection" in phases else old["selections"]
    return dict(records=keep + new["records"], skipped=skipped, selections=selections,
                seconds=new["seconds"], phases=new.get("phases", {}), pair=new["pair"], seed=new["seed"])

def run_benchmark(cfg: BenchConfig, ds, extras: Callable | None = None, out_dir: Path = RESULTS,
                  progress: bool = True, extra_md: Callable | None = None, merge: bool = False,
                  resume: bool = False) -> dict:
    """Run every (pair, seed) unit and write ``NAME.json`` and ``NAME.md``.

    ``resume``: units already in the committed ``NAME.json`` are kept and not re-run.
    ``merge``: the phases in ``cfg.phases`` are re-run for every unit and laid over the committed
    run's other phases (e.g. ``--phases selection --merge`` after a change to model selection).
    """
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = {(u["pair"], u["seed"]): u for u in _previous_results(out_dir / f"{cfg.name}.json")} \
        if (merge or resume) else {}
    # seed-major, so a run stopped early still covers every pair with its first seeds
    units = [(p, s) for s in cfg.seeds for p in cfg.pairs]
    results = []
    if resume:
        results = [previous[u] for u in units if u in previous]
        units = [u for u in units if u not in previous]
    jobs = (delayed(run_bench_unit)(cfg, ds, t, s, extras) for t, s in units)
    partial = out_dir / f"{cfg.name}.partial.json"
    for i, res in enumerate(Parallel(n_jobs=cfg.n_jobs, return_as="generator_unordered")(jobs), 1):
        if merge:
            res = _merge_unit(previous.get((res["pair"], res["seed"])), res, cfg.phases)
        results.append(res)
        if progress:
            print(f"[{cfg.name}] unit {i}/{len(units)} done in {res['seconds']:.0f}s {res.get('phases')} "
                  f"(elapsed {time.perf_counter() - t0:.0f}s)", flush=True)
            partial.write_text(json.dumps(_jsonable(dict(results=results, config=_config(cfg),
                                                         elapsed=time.perf_counter() - t0)), allow_nan=True))
    if merge:  # units of the committed run that this pass did not touch stay as they were
        done = {(r["pair"], r["seed"]) for r in results}
        results += [u for k, u in previous.items() if k not in done]
        cfg.seeds = sorted({int(u["seed"]) for u in results})
    if partial.exists():
        partial.unlink()
    out = _assemble(cfg, results, time.perf_counter() - t0)
    out["summary"] = summarise(out, cfg)
    (out_dir / f"{cfg.name}.json").write_text(json.dumps(_jsonable(out), indent=1, allow_nan=True))
    md = markdown(out, cfg)
    if extra_md is not None:
        head, sep, rest = md.partition("## Pair-averaged")
        md = head + extra_md(out, _frame(out)) + "\n" + sep + rest
    (out_dir / f"{cfg.name}.md").write_text(md)
    return out


def _config(cfg: BenchConfig) -> dict:
    return dict(pairs={k: {"sources": s, "target": t} for k, (s, t) in cfg.pairs.items()},
                budgets=cfg.budgets_by_target, seeds=list(cfg.seeds), methods=cfg.methods,
                skada=[f"skada:{n}" for n in cfg.skada], selection=cfg.selection,
                selection_pool=cfg.selection_pool if cfg.selection else [], n_jobs=cfg.n_jobs,
                headline=cfg.headline, secondary=list(cfg.secondary))


def _assemble(cfg: BenchConfig, results: list[dict], seconds: float) -> dict:
    records = [r for res in results for r in res["records"]]
    records.sort(key=lambda r: (r.get("pair", ""), r["target"], r["seed"], r["n_labeled"], r["method"]))
    out = dict(
        benchmark=cfg.name, title=cfg.title, protocol=cfg.protocol,
        config=_config(cfg),
        environment=_environment(),
        seconds=seconds,
        unit_seconds=[res["seconds"] for res in results],
        unit_phases=[res.get("phases", {}) for res in results],
        records=records,
        skipped=[s for res in results for s in res["skipped"]],
        selections=[s for res in results for s in res["selections"]],
        notes=cfg.notes,
    )
    return out


def _environment() -> dict:
    import importlib.metadata as md

    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for pkg in ("healthtransfer", "scikit-learn", "skada", "torch", "lightgbm", "POT", "numpy"):
        try:
            env[pkg] = md.version(pkg)
        except Exception:
            pass
    return env


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return [_jsonable(v) for v in o.tolist()]
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 1 target, cheap methods")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..n-1)")
    p.add_argument("--targets", nargs="*", default=None, help="only the pairs into these targets")
    p.add_argument("--sources", nargs="*", default=None, help="only the pairs from these sources")
    p.add_argument("--methods", nargs="*", default=None, help="our methods (default: the benchmark's list)")
    p.add_argument("--skada", nargs="*", default=None, help="skada methods (default: the benchmark's list)")
    p.add_argument("--budgets", nargs="*", type=int, default=None)
    p.add_argument("--no-selection", action="store_true")
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out-dir", default=None, help="default benchmarks/results (quick: benchmarks/results/quick)")
    p.add_argument("--report-only", action="store_true",
                   help="do not run: rebuild the summary and the .md from the existing JSON")
    p.add_argument("--phases", nargs="*", default=None, choices=PHASES,
                   help="run only these parts of each unit (default: all)")
    p.add_argument("--merge", action="store_true",
                   help="lay the re-run phases over the committed JSON's other phases (with --phases)")
    p.add_argument("--resume", action="store_true",
                   help="keep the units already in the committed JSON and run only the missing ones")
    return p


def run_or_report(cfg: BenchConfig, args, load: Callable, out_dir: Path, extras: Callable | None = None,
                  extra_md: Callable | None = None) -> dict:
    if not args.report_only:
        return run_benchmark(cfg, load(), extras=extras, out_dir=out_dir, progress=not args.quick, extra_md=extra_md,
                             merge=args.merge, resume=args.resume)
    path = Path(out_dir) / f"{cfg.name}.json"
    partial = Path(out_dir) / f"{cfg.name}.partial.json"
    if partial.exists():  # a run stopped at the deadline: report the units it completed
        p = json.loads(partial.read_text())
        results = p["results"]
        done = {}
        for res in results:
            for r in res["records"]:
                done.setdefault(_record_pair(r, {}), set()).add(r["seed"])
        cfg.seeds = sorted({s for v in done.values() for s in v})
        cfg.notes = [f"Run stopped at the time limit after {len(results)} (pair, seed) units "
                     f"({p.get('elapsed', float('nan')) / 60:.0f} min): seeds completed per pair: "
                     + "; ".join(f"{t}: {sorted(v)}" for t, v in sorted(done.items())) + "."] + cfg.notes
        out = _assemble(cfg, results, float(p.get("elapsed", float("nan"))))
        out["config"]["seeds_planned"] = p["config"]["seeds"]
        out["partial"] = True
    else:
        out = json.loads(path.read_text())
    out["notes"] = cfg.notes
    out["summary"] = summarise(out, cfg)
    path.write_text(json.dumps(_jsonable(out), indent=1, allow_nan=True))
    md = markdown(out, cfg)
    if extra_md is not None:
        head, sep, rest = md.partition("## Pair-averaged")
        md = head + extra_md(out, _frame(out)) + "\n" + sep + rest
    (Path(out_dir) / f"{cfg.name}.md").write_text(md)
    if partial.exists():
        partial.unlink()
    return out


def apply_cli(cfg: BenchConfig, args, quick_methods: list[str], quick_skada: list[str]) -> tuple[BenchConfig, Path]:
    if args.quick:
        cfg.seeds = list(range(2))
        first = next(iter(cfg.pairs))
        cfg.pairs = {first: cfg.pairs[first]}
        cfg.methods = list(quick_methods)
        cfg.skada = list(quick_skada)
        cfg.selection_pool = [m for m in cfg.selection_pool if m in quick_methods] or list(quick_methods)
        cfg.notes = ["QUICK smoke run: not a result."] + cfg.notes
    if args.seeds is not None:
        cfg.seeds = list(range(args.seeds))
    if args.targets:
        cfg.pairs = {k: (s, t) for k, (s, t) in cfg.pairs.items() if t in args.targets}
    if args.sources:
        cfg.pairs = {k: (s, t) for k, (s, t) in cfg.pairs.items() if set(s) <= set(args.sources)}
    if not cfg.pairs:
        raise SystemExit("no pair left after --targets/--sources; see the benchmark's pairs in its docstring")
    targets = {t for _, t in cfg.pairs.values()}
    if args.methods is not None:
        cfg.methods = list(args.methods)
        if args.quick:
            cfg.selection_pool = [m for m in cfg.selection_pool if m in cfg.methods] or list(cfg.methods)
    if args.skada is not None:
        cfg.skada = list(args.skada)
    if args.budgets:
        cfg.budgets_by_target = {t: [b for b in args.budgets if b in cfg.budgets_by_target[t]] or list(args.budgets)
                                 for t in targets}
    cfg.budgets_by_target = {t: cfg.budgets_by_target[t] for t in cfg.budgets_by_target if t in targets}
    if args.no_selection:
        cfg.selection = False
    if args.phases:
        cfg.phases = tuple(args.phases)
    cfg.n_jobs = args.n_jobs
    out_dir = Path(args.out_dir) if args.out_dir else (RESULTS / "quick" if args.quick else RESULTS)
    return cfg, out_dir
