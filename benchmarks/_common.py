"""Shared harness for the benchmark scripts: our methods and skada's on identical splits.

One *unit* is one (target, seed). Inside a unit:

1. our registered methods are fitted through :func:`healthtransfer.study.run.run_unit` (the
   product's own runner: same split, same preprocessing fitted on source + target pool only,
   the reference score appended for reference-score methods, scored on the rows the protocol
   scores);
2. ``selected``: a second ``run_unit`` call over a small candidate pool with selection on
   (``healthtransfer.selection.select`` on the fit rows only, then its calibration step),
   exactly as a study runs it; its test metrics are those of the chosen candidate;
3. skada's DA pipelines (``make_da_pipeline(adapter, LogisticRegression)``) on the very same
   preprocessed matrices, rebuilt here with the same ``target_split`` / ``make_preprocessor``
   calls. skada masks target labels (``mask_target_labels=True``), so a skada fit does not
   depend on n_t: it is fitted once per unit and scored on the same test rows for every
   budget. ``skada:SourceOnly`` (no adapter) is a parity check against our ``source_lr``;
4. optional dataset-specific extras (e.g. APACHE IV recal-ITL, protocol LightGBM).

Units run in parallel with joblib (``n_jobs=2``), each single-threaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
DATA_DIR = os.environ.get("HEALTHTRANSFER_DATA", str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))

# The selection candidate pool: the six baselines plus cheap members of each family. Selection
# refits each candidate per CV fold, so the deep methods (seconds per fit) are left out.
SELECTION_POOL = [
    "source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm",
    "iw_domain_lr", "coral_lr", "sa_lr", "label_shift_em_lr", "feat_aug_lr", "linear_prior",
    "stacking_lr", "recalibration_lr",
]

BASELINES = ["source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm"]

# name -> (builder(seed, n_classes), max_rows). Built inside functions only: importing skada
# flips scikit-learn's metadata routing globally.
SKADA_DEFAULT = [
    "SourceOnly", "CORAL", "SubspaceAlignment", "TCA", "LinearOTMapping", "OTMapping",
    "EntropicOTMapping", "KMM", "KLIEP", "DiscriminatorReweight", "DensityReweight",
    "GaussianReweight", "JDOT",
]
SKADA_MAX_ROWS = {"TCA": 1500, "KMM": 3000, "KLIEP": 8000, "OTMapping": 8000, "EntropicOTMapping": 8000,
                  "JDOT": 3000}


# The parts of a unit, and the record ``side`` each one writes.
PHASES = ("ours", "selection", "skada", "extra")
PHASE_SIDES = {"ours": {"ours", "reference"}, "selection": {"selected"}, "skada": {"skada"}, "extra": {"extra"}}


def pair_key(sources, target) -> str:
    """The label of a (sources → target) pair, e.g. ``Midwest→South``; a benchmark unit is a
    (pair, seed)."""
    return f"{'+'.join(sources)}→{target}"


def make_pairs(sources_by_target: dict[str, list[str]] | None = None,
               ordered: list[tuple[list[str], str]] | None = None) -> dict[str, tuple[list[str], str]]:
    """``{pair_key: (sources, target)}`` from ``{target: sources}`` and/or a list of pairs."""
    items = [(list(v), t) for t, v in (sources_by_target or {}).items()] + [(list(s), t) for s, t in ordered or []]
    return {pair_key(s, t): (s, t) for s, t in items}


@dataclass
class BenchConfig:
    name: str
    title: str
    protocol: str
    pairs: dict[str, tuple[list[str], str]]  # pair_key -> (its source domains, its target)
    budgets_by_target: dict[str, list[int]]
    seeds: list[int]
    methods: list[str]
    skada: list[str]
    selection: bool = True
    selection_pool: list[str] = field(default_factory=lambda: list(SELECTION_POOL))
    headline: str = "auroc"
    secondary: tuple[str, ...] = ("brier", "ece")
    higher_better: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_jobs: int = 2
    test_fraction: float = 0.5
    # which parts of a unit run (a re-run of one phase can be merged into a committed result)
    phases: tuple[str, ...] = PHASES

    def budgets(self, pair: str) -> list[int]:
        return self.budgets_by_target[self.pairs[pair][1]]


def _higher(metric: str) -> bool:
    return metric not in {"brier", "ece", "log_loss"}


# --------------------------------------------------------------------------------------------
# unit context: the same split / preprocessing as healthtransfer.study.run._run_unit
# --------------------------------------------------------------------------------------------

def _logit(p):
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def unit_context(ds, sources, target, seed, test_fraction=0.5):
    from healthtransfer.data.preprocess import make_preprocessor
    from healthtransfer.data.splits import target_split

    f = ds.frame
    dom = f[ds.domain].astype(str)
    src_rows = f[dom.isin(sources)]
    tgt_rows = f[dom == target]
    yt = tgt_rows[ds.label].to_numpy().astype(int)
    groups = tgt_rows[ds.group].to_numpy() if ds.group and ds.group in tgt_rows else None
    split = target_split(yt, seed=seed, test_fraction=test_fraction, groups=groups)
    pool = tgt_rows.iloc[split.pool]
    test = tgt_rows.iloc[split.test]
    pre = make_preprocessor(ds.numeric, ds.categorical).fit(pd.concat([src_rows, pool])[ds.features])
    Xs = pre.transform(src_rows[ds.features])
    Xp = pre.transform(pool[ds.features])
    Xte = pre.transform(test[ds.features])
    eval_mask = np.ones(len(test), bool)
    if ds.reference_score:
        eval_mask = ~np.isnan(test[ds.reference_score].to_numpy(float))
    n_classes = len(ds.class_names) if ds.class_names else int(f[ds.label].nunique())
    return SimpleNamespace(
        src_rows=src_rows, pool=pool, test=test, Xs=Xs, Xp=Xp, Xte=Xte,
        ys=src_rows[ds.label].to_numpy().astype(int), yp=pool[ds.label].to_numpy().astype(int),
        yte=test[ds.label].to_numpy().astype(int), eval_mask=eval_mask, n_classes=n_classes,
        ds=ds, seed=seed, target=target, sources=sources,
    )


# --------------------------------------------------------------------------------------------
# skada side
# --------------------------------------------------------------------------------------------

def _import_skada():
    import sklearn

    prev = sklearn.get_config()
    try:
        import skada  # noqa: F401  (flips metadata routing on import)
    finally:
        sklearn.set_config(**prev)
    import skada

    return skada


def make_skada(name: str, seed: int, n_classes: int, n_features: int):
    """A skada DA pipeline ending in LogisticRegression. Must be called with metadata routing on."""
    from sklearn.linear_model import LogisticRegression

    skada = _import_skada()
    lr = LogisticRegression(C=1.0, max_iter=2000)
    lr_w = LogisticRegression(C=1.0, max_iter=2000).set_fit_request(sample_weight=True)
    mk = skada.make_da_pipeline
    k = max(1, min(n_features - 1, 10))
    if name == "SourceOnly":
        return mk(lr)
    if name == "CORAL":
        return mk(skada.CORALAdapter(), lr)
    if name == "SubspaceAlignment":
        return mk(skada.SubspaceAlignmentAdapter(n_components=k, random_state=seed), lr)
    if name == "TCA":
        return mk(skada.TransferComponentAnalysisAdapter(n_components=k), lr)
    if name == "LinearOTMapping":
        return mk(skada.LinearOTMappingAdapter(), lr)
    if name == "OTMapping":
        return mk(skada.OTMappingAdapter(), lr)
    if name == "EntropicOTMapping":
        return mk(skada.EntropicOTMappingAdapter(reg_e=1.0), lr)
    if name == "KMM":
        return mk(skada.KMMReweightAdapter(gamma=1.0 / n_features), lr_w)
    if name == "KLIEP":
        return mk(skada.KLIEPReweightAdapter(gamma=[0.1 / n_features, 1.0 / n_features, 10.0 / n_features],
                                             random_state=seed), lr_w)
    if name == "DiscriminatorReweight":
        return mk(skada.DiscriminatorReweightAdapter(), lr_w)
    if name == "DensityReweight":
        return mk(skada.DensityReweightAdapter(), lr_w)
    if name == "GaussianReweight":
        return mk(skada.GaussianReweightAdapter(), lr_w)
    if name == "JDOT":
        return skada.JDOTClassifier(base_estimator=LogisticRegression(C=1.0, max_iter=2000),
                                    metric="multinomial")
    raise ValueError(f"unknown skada method {name!r}")


def run_skada(ctx, names: list[str]) -> list[tuple[str, np.ndarray | None, float, str]]:
    """Fit each skada pipeline once on (source labelled, whole pool unlabelled); return
    (name, test proba or None, fit seconds, error)."""
    import sklearn

    X = np.vstack([ctx.Xs, ctx.Xp])
    y = np.r_[ctx.ys, -np.ones(len(ctx.Xp), int)]
    sd = np.r_[np.ones(len(ctx.Xs), int), -np.ones(len(ctx.Xp), int)]
    out = []
    for name in names:
        if name in SKADA_MAX_ROWS and len(X) > SKADA_MAX_ROWS[name]:
            out.append((name, None, 0.0, f"skipped: more than {SKADA_MAX_ROWS[name]} rows"))
            continue
        try:
            with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est = make_skada(name, ctx.seed, ctx.n_classes, X.shape[1])
                t0 = time.perf_counter()
                est.fit(X, y.copy(), sample_domain=sd)
                fit_s = time.perf_counter() - t0
                p = est.predict_proba(ctx.Xte, sample_domain=-np.ones(len(ctx.Xte), int))
            p = np.asarray(p, float)
            if p.shape[1] != ctx.n_classes:  # a class absent from training: put it back at 0
                full = np.zeros((len(p), ctx.n_classes))
                full[:, est.classes_.astype(int)] = p
                p = full
            if not np.all(np.isfinite(p)):
                raise FloatingPointError("non-finite probabilities")
            out.append((name, p, fit_s, ""))
        except Exception as exc:  # a failing baseline is a result, not a crash
            out.append((name, None, 0.0, f"{type(exc).__name__}: {str(exc)[:200]}"))
    return out


# --------------------------------------------------------------------------------------------
# one unit
# --------------------------------------------------------------------------------------------

def _clean(rec: dict) -> dict:
    out = {}
    for k, v in rec.items():
        if k.endswith("_ci"):
            continue
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out


def _score_record(ctx, name, side, family, n_t, proba, fit_s, **extra) -> dict:
    from healthtransfer.evaluation.metrics import score

    m = ctx.eval_mask
    p = np.asarray(proba, float)[m]
    if ctx.n_classes == 2 and p.ndim == 2:
        p = p[:, 1]
    rec = dict(method=name, side=side, family=family, sources=list(ctx.sources), target=ctx.target,
               pair=pair_key(ctx.sources, ctx.target),
               n_labeled=int(n_t), seed=int(ctx.seed), n_test=int(m.sum()), fit_seconds=float(fit_s))
    rec.update(score(ctx.yte[m], p, ctx.n_classes))
    rec.update(extra)
    return rec


def run_bench_unit(cfg: BenchConfig, ds, pair: str, seed: int,
                   extras: Callable | None = None) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        try:
            import torch

            torch.set_num_threads(1)
        except Exception:  # pragma: no cover
            pass
        try:
            return dict(_run_bench_unit(cfg, ds, pair, seed, extras), pair=pair, seed=seed)
        except Exception as exc:  # keep the rest of the run; the unit is reported as skipped
            import traceback

            target = cfg.pairs[pair][1]
            return dict(records=[], selections=[], seconds=0.0, phases={}, pair=pair, seed=seed,
                        skipped=[dict(pair=pair, target=target, seed=seed, n_labeled=None, method="(unit)",
                                      reason=f"unit failed: {type(exc).__name__}: {str(exc)[:300]}",
                                      traceback=traceback.format_exc()[-2000:])])


def _run_bench_unit(cfg, ds, pair, seed, extras):
    from healthtransfer.data.splits import label_budget
    from healthtransfer.methods import get_method
    from healthtransfer.study.config import SelectionSection
    from healthtransfer.study.run import run_unit

    sources, target = cfg.pairs[pair]
    budgets = cfg.budgets(pair)
    t_unit = time.perf_counter()
    phases = {}
    records: list[dict] = []
    skipped: list[dict] = []
    # 1. ours, through the product's runner
    recs, sk = [], []
    if "ours" in cfg.phases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recs, sk, _, _ = run_unit(ds, sources, target, seed, budgets, cfg.methods, cfg.test_fraction, False,
                                      None)
    for r in recs:
        r = _clean(r)
        r["side"] = "reference" if str(r["method"]).startswith("reference:") else "ours"
        r["pair"] = pair
        records.append(r)
    skipped += [dict(_clean(s), pair=pair) for s in sk]
    phases["ours"] = round(time.perf_counter() - t_unit)
    # 2. selection, exactly as a study runs it, over the candidate pool
    selections = []
    if cfg.selection and "selection" in cfg.phases:
        n_cls = len(ds.class_names) if ds.class_names else 2
        pool = [m for m in cfg.selection_pool if n_cls == 2 or get_method(m).multiclass]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srecs, _, _, sels = run_unit(ds, sources, target, seed, budgets, pool, cfg.test_fraction, False,
                                         SelectionSection(diagnose=False))
        sel_s = time.perf_counter() - t0
        phases["selection"] = round(sel_s)
        n_b = max(1, len({r["n_labeled"] for r in srecs}))
        for r in srecs:
            if r["method"] == "selected":
                r = _clean(r)
                r["side"] = "selected"
                r["pair"] = pair
                r["fit_seconds"] = sel_s / n_b  # candidates' fits + CV, per budget
                records.append(r)
        for s in sels:
            selections.append({"pair": pair, **{k: s[k] for k in (
                "target", "seed", "n_labeled", "chosen", "criterion", "reason", "anchor", "best_candidate",
                "best_baseline", "calibration", "bar")}})
    # 3. skada, on the same matrices (fitted once: skada masks target labels)
    ctx = unit_context(ds, sources, target, seed, cfg.test_fraction)
    if len(np.unique(ctx.yte)) < 2:
        return dict(records=records, skipped=skipped, selections=selections, seconds=time.perf_counter() - t_unit)
    done_budgets = sorted({r["n_labeled"] for r in records if r["side"] in ("ours", "selected")}
                          or _feasible_budgets(ctx, budgets))
    t0 = time.perf_counter()
    sk_out = run_skada(ctx, cfg.skada) if cfg.skada and "skada" in cfg.phases else []
    phases["skada"] = round(time.perf_counter() - t0)
    for name, proba, fit_s, err in sk_out:
        if proba is None:
            skipped.append(dict(pair=pair, target=target, seed=seed, n_labeled=None, method=f"skada:{name}",
                                reason=err))
            continue
        for n_t in done_budgets:
            records.append(_score_record(ctx, f"skada:{name}", "skada", "skada", n_t, proba, fit_s,
                                         labels_used=False))
    # 4. dataset-specific extras, per budget, on the same split and labelled draw
    if extras is not None and "extra" in cfg.phases:
        for n_t in done_budgets:
            lab = label_budget(ctx.yp, np.arange(len(ctx.pool)), n_t, seed=seed)
            for name, family, proba, fit_s in extras(ctx, n_t, lab):
                records.append(_score_record(ctx, name, "extra", family, n_t, proba, fit_s))
    return dict(records=records, skipped=skipped, selections=selections, seconds=time.perf_counter() - t_unit,
                phases=phases)


def _feasible_budgets(ctx, budgets) -> list[int]:
    """The budgets the pool can hold (used when the ``ours`` phase did not run in this pass)."""
    return [b for b in budgets if b <= len(ctx.pool)]


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def _record_pair(r: dict, by_target: dict[str, str]) -> str:
    """A record's pair; results written before pairs were keys carry only sources + target
    (one source set per target then), and their skips / selections only the target."""
    if isinstance(r.get("pair"), str):
        return r["pair"]
    if isinstance(r.get("sources"), (list, tuple)) and r["sources"]:
        return pair_key(r["sources"], r["target"])
    return by_target.get(r["target"], r["target"])


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
# summaries and the Markdown report
# --------------------------------------------------------------------------------------------

def _frame(out) -> pd.DataFrame:
    df = pd.DataFrame.from_records(out["records"])
    if "side" not in df:
        df["side"] = "ours"
    if not df.empty:
        by_target: dict[str, str] = {}
        df["pair"] = [_record_pair(r, by_target) for r in df[[c for c in ("pair", "sources", "target")
                                                              if c in df]].to_dict("records")]
    return df


def per_target(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, std and count of ``metric`` per (method, pair, n_t); ``target`` is kept beside the pair."""
    g = df.groupby(["method", "pair", "target", "n_labeled"])[metric]
    return g.agg(["mean", "std", "count"]).reset_index()


def paired_delta(df: pd.DataFrame, metric: str, ref: str) -> pd.DataFrame:
    """Mean paired Δ (method − ref) per (method, n_t) over (pair, seed), and win rate."""
    base = df[df.method == ref][["pair", "seed", "n_labeled", metric]].rename(columns={metric: "_ref"})
    # source-only baselines do not depend on n_t: pair each budget with the n_t = 0 fit if needed
    if base.empty:
        return pd.DataFrame(columns=["method", "n_labeled", "delta", "win", "pairs"])
    m = df.merge(base, on=["pair", "seed", "n_labeled"], how="inner")
    m["_d"] = m[metric] - m["_ref"]
    m = m[np.isfinite(m["_d"])]
    sign = 1 if _higher(metric) else -1
    g = m.groupby(["method", "n_labeled"])
    res = g["_d"].agg(delta="mean", pairs="count").reset_index()
    res["win"] = g["_d"].apply(lambda d: float(np.mean(sign * d > 0))).to_numpy()
    return res


def summarise(out: dict, cfg: BenchConfig) -> dict:
    df = _frame(out)
    if df.empty:
        return {}
    h = cfg.headline
    hb = _higher(h)
    pt = per_target(df, h)
    side = df.groupby("method")["side"].first().to_dict()
    family = df.groupby("method")["family"].first().to_dict()
    headline = []
    for (pk, t, n_t), grp in pt.groupby(["pair", "target", "n_labeled"]):
        grp = grp.set_index("method")

        def best(names):
            g = grp.loc[[n for n in names if n in grp.index]]
            g = g[np.isfinite(g["mean"])]
            if g.empty:
                return None, float("nan")
            i = g["mean"].idxmax() if hb else g["mean"].idxmin()
            return i, float(g.loc[i, "mean"])

        ours_tr = [m for m in grp.index if side.get(m) == "ours" and family.get(m) != "baseline"]
        ours_all = [m for m in grp.index if side.get(m) == "ours"]
        sk = [m for m in grp.index if side.get(m) == "skada" and m != "skada:SourceOnly"]
        base = [m for m in grp.index if m in BASELINES]
        pool = [m for m in grp.index if m in cfg.selection_pool]
        row = dict(pair=pk, target=t, n_labeled=int(n_t))
        for key, names in (("best_ours", ours_tr), ("best_ours_any", ours_all), ("best_skada", sk),
                           ("best_baseline", base), ("oracle", pool)):
            name, val = best(names)
            row[key] = name
            row[f"{key}_{h}"] = val
        if "selected" in grp.index:
            row[f"selected_{h}"] = float(grp.loc["selected", "mean"])
            row["selected_seeds"] = int(grp.loc["selected", "count"])
        row["seeds"] = int(grp["count"].max())
        headline.append(row)
    return {"headline": headline}


def _fmt(mean, std=None, digits=3):
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _order(df: pd.DataFrame, cfg: BenchConfig) -> list[str]:
    side_rank = {"reference": 0, "ours": 1, "extra": 2, "selected": 3, "skada": 4}
    from healthtransfer.methods import available_methods

    reg = list(available_methods())
    first = df.groupby("method")["side"].first()

    def key(m):
        s = first[m]
        return (side_rank.get(s, 9), reg.index(m) if m in reg else 999, m)

    return sorted(first.index, key=key)


def _display(m: str, labels_used: dict) -> str:
    return m + (" †" if m.startswith("skada:") else "")


def markdown(out: dict, cfg: BenchConfig) -> str:
    df = _frame(out)
    h = cfg.headline
    lines = [f"# {cfg.title}", ""]
    lines += [f"Protocol: {cfg.protocol}. Generated by `python benchmarks/{cfg.name}.py` "
              f"in {out['seconds'] / 60:.1f} min ({len(out['unit_seconds'])} units, n_jobs={cfg.n_jobs}).", ""]
    seeds = out["config"]["seeds"]
    lines += [f"- Pairs ({len(cfg.pairs)}): {', '.join(cfg.pairs)}; "
              f"seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); budgets per target "
              + "; ".join(f"{t}: {b}" for t, b in cfg.budgets_by_target.items()) + "."]
    lines += [f"- Headline metric: **{h}**" + (f"; also {', '.join(cfg.secondary)}" if cfg.secondary else "")
              + ". Mean ± std over seeds; paired comparisons use the same (pair, seed, test rows)."]
    lines += ["- † skada pipelines (`make_da_pipeline(adapter, LogisticRegression)`) mask target labels: "
              "they use the unlabelled pool only, so their numbers do not change with n_t (one fit per "
              "(pair, seed), scored on the same test rows at every budget)."]
    for n in cfg.notes:
        lines.append(f"- {n}")
    lines.append("")
    if df.empty:
        return "\n".join(lines + ["No records."])
    order = _order(df, cfg)
    pairs = list(cfg.pairs)
    summ = out.get("summary", {}).get("headline", [])

    # --- headline
    lines += ["## Headline", "", f"Per pair and budget: mean {h} of the best of each group (best by mean "
              "over seeds, so each 'best' is optimistic: it is picked with the test labels). "
              "`selected` is the product's selection (no test labels); `oracle` is the best member of the "
              "selection pool by mean test " + h + " (reference only). * = picked with the test labels.", ""]
    lines += ["| pair | n_t | seeds | best ours (transfer)* | best skada* | best baseline* | selected | oracle* | "
              "ours* − skada* | ours* − baseline* |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summ:
        bo, bs, bb = r.get(f"best_ours_{h}"), r.get(f"best_skada_{h}"), r.get(f"best_baseline_{h}")

        def d(a, b):
            return f"{a - b:+.3f}" if a is not None and b is not None and math.isfinite(a) and math.isfinite(b) else "—"

        lines.append(
            f"| {r.get('pair', r['target'])} | {r['n_labeled']} | {r['seeds']} | {r.get('best_ours') or '—'} {_fmt(bo)} | "
            f"{r.get('best_skada') or '—'} {_fmt(bs)} | {r.get('best_baseline') or '—'} {_fmt(bb)} | "
            f"{_fmt(r.get(f'selected_{h}'))} | {r.get('oracle') or '—'} {_fmt(r.get(f'oracle_{h}'))} | "
            f"{d(bo, bs)} | {d(bo, bb)} |")
    lines.append("")

    # --- pair-averaged table with paired deltas
    budgets = sorted(df.n_labeled.unique())
    refs = [m for m in ("source_gbm", "source_lr") if m in set(df.method)]
    deltas = {ref: paired_delta(df, h, ref) for ref in refs}
    pt = per_target(df, h)
    fit_med = df.groupby("method")["fit_seconds"].median()
    lines += ["## Pair-averaged " + h, "",
              f"Mean over pairs of the per-pair mean {h} (a method missing on a pair is averaged over the "
              "pairs it ran on; count in brackets when fewer). Δ = mean paired difference vs the source-only "
              "model on the same (pair, seed); win = share of (pair, seed) where the method is better. "
              "Fit time: median seconds per fit (selected: its whole run per budget, incl. CV).", ""]
    head = "| method | " + " | ".join(f"n_t={b}" for b in budgets)
    for ref in refs:
        head += " | " + " | ".join(f"Δ {ref} (win) n_t={b}" for b in budgets)
    head += " | fit s |"
    lines += [head, "|" + "---|" * (1 + len(budgets) * (1 + len(refs)) + 1)]
    for m in order:
        cells = []
        for b in budgets:
            g = pt[(pt.method == m) & (pt.n_labeled == b)]
            if g.empty:
                cells.append("—")
                continue
            v = g["mean"].mean()
            cells.append(_fmt(v) + (f" [{len(g)}]" if len(g) < sum(b in cfg.budgets(p) for p in pairs) else ""))
        for ref in refs:
            dd = deltas[ref]
            for b in budgets:
                g = dd[(dd.method == m) & (dd.n_labeled == b)]
                if g.empty or m == ref:
                    cells.append("—")
                else:
                    cells.append(f"{g['delta'].iloc[0]:+.3f} ({g['win'].iloc[0]:.0%})")
        lines.append(f"| {_display(m, {})} | " + " | ".join(cells) + f" | {fit_med.get(m, float('nan')):.2f} |")
    lines.append("")

    # --- per pair tables, headline + secondary
    for metric in (h, *cfg.secondary):
        if metric not in df:
            continue
        pt_m = per_target(df, metric)
        lines += [f"## Per pair: {metric} (mean ± std over seeds)", ""]
        cols = [(p, b) for p in pairs for b in cfg.budgets(p)]
        lines += ["| method | " + " | ".join(f"{p} n_t={b}" for p, b in cols) + " |", "|" + "---|" * (1 + len(cols))]
        for m in order:
            cells = []
            for t, b in cols:
                g = pt_m[(pt_m.method == m) & (pt_m.pair == t) & (pt_m.n_labeled == b)]
                cells.append("—" if g.empty else _fmt(g["mean"].iloc[0], g["std"].iloc[0]))
            lines.append(f"| {_display(m, {})} | " + " | ".join(cells) + " |")
        lines.append("")

    # --- seeds kept, skips, selection choices
    # skips and selections of older results carry only the target: map it to its pair once
    by_target = dict(zip(df["target"], df["pair"]))
    lines += ["## Seeds kept and skips", ""]
    kept = df[df.method == (refs[0] if refs else order[0])].groupby(["pair", "n_labeled"])["seed"].nunique()
    lines += ["| pair | " + " | ".join(f"n_t={b}" for b in budgets) + " |", "|" + "---|" * (1 + len(budgets))]
    for t in pairs:
        lines.append(f"| {t} | " + " | ".join(str(int(kept.get((t, b), 0))) if b in cfg.budgets(t) else "—"
                                              for b in budgets) + " |")
    lines.append("")
    sk = pd.DataFrame.from_records(out["skipped"]) if out["skipped"] else pd.DataFrame()
    if not sk.empty:
        sk["method"] = sk.get("method", pd.Series([None] * len(sk))).fillna("(unit)")
        sk["reason"] = sk["reason"].astype(str).str.slice(0, 90)
        sk["pair"] = [_record_pair(r, by_target) for r in sk.to_dict("records")]
        agg = sk.groupby(["method", "pair", "reason"], dropna=False).size().reset_index(name="count")
        lines += ["Skipped fits (method, pair, reason, count over seeds × budgets):", ""]
        lines += ["| method | pair | reason | count |", "|---|---|---|---|"]
        for _, r in agg.iterrows():
            lines.append(f"| {r['method']} | {r['pair']} | {r['reason']} | {r['count']} |")
        lines.append("")
    if out["selections"]:
        sel = pd.DataFrame.from_records(out["selections"])
        sel["pair"] = [_record_pair(r, by_target) for r in sel.to_dict("records")]
        lines += ["## What selection chose", "", "Chosen candidate counts over seeds, per pair and budget "
                  "(criterion: target_cv when n_t > 0, iwcv+dev at n_t = 0).", ""]
        lines += ["| pair | n_t | chosen (count) |", "|---|---|---|"]
        for (t, b), g in sel.groupby(["pair", "n_labeled"]):
            vc = g["chosen"].value_counts()
            lines.append(f"| {t} | {b} | " + ", ".join(f"{k} ({v})" for k, v in vc.items()) + " |")
        lines.append("")
    if "skada:SourceOnly" in set(df.method) and "source_lr" in set(df.method):
        a = df[df.method == "skada:SourceOnly"].set_index(["pair", "seed", "n_labeled"])[h]
        b = df[df.method == "source_lr"].set_index(["pair", "seed", "n_labeled"])[h]
        j = (a - b).dropna().abs()
        lines += [f"Parity check: `skada:SourceOnly` vs our `source_lr` on the same matrices: max |Δ {h}| = "
                  f"{j.max():.4f} over {len(j)} (pair, seed, n_t).", ""]
    return "\n".join(lines) + "\n"


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


def bar_goals_section(out: dict, df: pd.DataFrame, bar_of: Callable[[pd.DataFrame], str], bar_label: str) -> str:
    """Issue 16's goals, per (pair, n_t) cell and averaged over pairs: ``selected`` against the
    bar (AUROC ≥ bar − 0.005, Brier ≤ bar + 0.002), paired win rates, and the gap to the oracle
    (the selection-pool member with the best mean test AUROC). ``bar_of(cell_means)`` names the
    bar of a cell from its per-method mean AUROC (a Series indexed by method)."""
    if "selected" not in set(df.method):
        return ""
    pool = set(out["config"].get("selection_pool", []))
    lines = ["## Selection against the bar (issue 16 goals)", "",
             f"Bar: {bar_label}. Per cell: mean over seeds; Δ = selected − bar, paired on the same (pair, seed, "
             "test rows); win = share of seeds where selected is strictly better (ties, e.g. selected = the bar, "
             "count as not won; 'tie' gives their share). Oracle: the selection-pool member with the best mean test "
             "AUROC (picked with test labels). Goals: ΔAUROC ≥ −0.005 and ΔBrier ≤ +0.002 per cell; pair-averaged "
             "ΔAUROC ≥ 0 and ΔBrier ≤ 0; mean gap to the oracle ≤ 0.005. **MISS** marks a cell that misses.", "",
             "| pair | n_t | seeds | bar | bar AUROC | selected AUROC | ΔAUROC (win/tie) | bar Brier | selected Brier | "
             "ΔBrier (win) | oracle | sel − oracle | goal |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cells = []
    for (pk, b), g in df.groupby(["pair", "n_labeled"]):
        means = g.groupby("method")["auroc"].mean()
        if "selected" not in means.index:
            continue
        bar = bar_of(means)
        cand = means[[m for m in means.index if m in pool]]
        orc = cand.idxmax() if len(cand) else None
        s = g[g.method == "selected"].set_index("seed")
        r = g[g.method == bar].set_index("seed")
        j = s[["auroc", "brier"]].join(r[["auroc", "brier"]], rsuffix="_bar", how="inner").dropna()
        da, db = j.auroc - j.auroc_bar, j.brier - j.brier_bar
        gap = float(means["selected"] - means[orc]) if orc else float("nan")
        miss = [k for k, bad in (("AUROC", da.mean() < -0.005), ("Brier", db.mean() > 0.002)) if bad]
        cells.append(dict(pair=pk, n_t=int(b), da=da.mean(), db=db.mean(), gap=gap, da_rows=da, db_rows=db))
        lines.append(
            f"| {pk} | {b} | {len(j)} | {bar} | {j.auroc_bar.mean():.3f} | {j.auroc.mean():.3f} | {da.mean():+.3f} "
            f"({(da > 0).mean():.0%}/{(da == 0).mean():.0%}) | {j.brier_bar.mean():.4f} | {j.brier.mean():.4f} | "
            f"{db.mean():+.4f} ({(db < 0).mean():.0%}) | {orc} {means.get(orc, float('nan')):.3f} | {gap:+.3f} | "
            + ("**MISS** " + ", ".join(miss) if miss else "met") + " |")
    lines += ["", "Averaged over the pairs of each budget (mean of per-pair means; win over all (pair, seed)):", "",
              "| n_t | pairs | ΔAUROC vs bar (win) | ΔBrier vs bar (win) | mean gap to oracle | goal |",
              "|---|---|---|---|---|---|"]
    c = pd.DataFrame(cells)
    for b, g in c.groupby("n_t"):
        da_all = pd.concat(list(g.da_rows))
        db_all = pd.concat(list(g.db_rows))
        ok = g.da.mean() >= 0 and g.db.mean() <= 0
        lines.append(f"| {b} | {len(g)} | {g.da.mean():+.4f} ({(da_all > 0).mean():.0%}) | {g.db.mean():+.4f} "
                     f"({(db_all < 0).mean():.0%}) | {g.gap.mean():+.4f} | {'met' if ok else '**MISS**'} |")
    gap_all = c.gap.mean()
    lines += ["", f"Mean gap to the oracle over all cells: {gap_all:+.4f} AUROC "
              f"({'met' if gap_all >= -0.005 else '**MISS**'}: goal ≥ −0.005). Cells missing a per-cell goal: "
              f"{sum(1 for x in cells if x['da'] < -0.005 or x['db'] > 0.002)} of {len(cells)}.", ""]
    return "\n".join(lines)
