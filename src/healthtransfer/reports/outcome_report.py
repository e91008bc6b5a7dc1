"""Report and results of a survival or regression study (``report.html`` + ``results.json``).

The page shows the outcome as defined (time unit, horizons, censoring), per-site Kaplan-Meier
curves or outcome distributions, every method's metrics with their spread over seeds at each
label budget, what the selection chose, and the selected model's calibration (predicted risk
against Kaplan-Meier observed risk by risk group at each horizon; predicted against observed
by decile). It only draws what the runner computed; only aggregates are shown.

Example
-------
>>> from healthtransfer.study.run import run_study        # doctest: +SKIP
>>> write_outcome_outputs(run_study(study), "out")       # doctest: +SKIP
PosixPath('out/report.html')
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_output_dir
from .html import Section, esc, figure_to_img, render, table_html

__all__ = ["write_outcome_outputs", "outcome_sections", "print_outcome_summary"]


def _json(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _clean(o):
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def _metric_columns(result) -> list[str]:
    oc = result.outcome
    if oc.kind == "survival":
        hz = [f"{h:g}" for h in oc.horizons]
        return ["c_harrell", "c_uno", "ibs", *[f"auc_{h}" for h in hz], *[f"oe_{h}" for h in hz]]
    return ["mae", "rmse", "r2", "calibration_slope"]


def summary_table(result) -> list[dict]:
    """Mean, sd and min-max spread over seeds of each metric, per target, method and budget."""
    from ..study.run import summarise

    cols = [c for c in _metric_columns(result) if c in result.frame()]
    return summarise(result.records, cols, by=("target", "method", "n_labeled"))


def _site_table(result) -> pd.DataFrame:
    ds, oc = result.dataset, result.outcome
    f = ds.frame
    rows = {}
    for site, g in f.groupby(ds.domain):
        if oc.kind == "survival":
            rows[site] = {"rows": len(g), "events": int(g[oc.event].sum()),
                          "censored %": 100.0 * (1 - g[oc.event].mean()),
                          f"median follow-up ({oc.time_unit})": float(g[oc.time].median()),
                          **{f"followed at {h:g}": int((g[oc.time] >= h).sum()) for h in oc.horizons}}
        else:
            v = g[oc.label].astype(float)
            rows[site] = {"rows": len(g), "mean": v.mean(), "median": v.median(), "p25": v.quantile(0.25),
                          "p75": v.quantile(0.75)}
    tab = pd.DataFrame.from_dict(rows, orient="index")
    tab.index.name = "site"
    return tab


def _km_figure(result) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..evaluation.survival import kaplan_meier

    ds, oc = result.dataset, result.outcome
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for site, g in ds.frame.groupby(ds.domain):
        y = np.empty(len(g), dtype=[("event", "?"), ("time", "<f8")])
        y["event"], y["time"] = g[oc.event].astype(bool), g[oc.time].astype(float)
        t, s = kaplan_meier(y)
        ax.step(np.r_[0, t], np.r_[1, s], where="post", label=f"{site} (n={len(g)})")
    for h in oc.horizons:
        ax.axvline(h, color="#999", lw=0.8, ls=":")
    ax.set_xlim(0, max(oc.horizons) * 2)
    ax.set_xlabel(f"time ({oc.time_unit})")
    ax.set_ylabel("survival (Kaplan-Meier)")
    ax.legend(fontsize=8)
    return figure_to_img(fig, "Kaplan-Meier curves per site")


def _distribution_figure(result) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds, oc = result.dataset, result.outcome
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    groups = [(s, g[oc.label].astype(float).to_numpy()) for s, g in ds.frame.groupby(ds.domain)]
    hi = np.quantile(np.concatenate([v for _, v in groups]), 0.98)
    for s, v in groups:
        ax.hist(np.clip(v, None, hi), bins=30, histtype="step", density=True, label=f"{s} (n={len(v)})")
    ax.set_xlabel(f"{oc.label} (top 2% drawn at the 98th percentile)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return figure_to_img(fig, "outcome distribution per site")


def _calibration_figure(result, target) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    oc = result.outcome
    sel = [r for r in result.records if r["method"] == "selected" and r["target"] == target]
    if not sel:
        return ""
    top = max(r["n_labeled"] for r in sel)
    sel = [r for r in sel if r["n_labeled"] == top]
    keys = [f"calibration_{h:g}" for h in oc.horizons] if oc.kind == "survival" else ["deciles"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(g["predicted"], g["observed"]) for r in sel for g in (r[key]["groups"] if key != "deciles" else r[key])
               if g["observed"] is not None and np.isfinite(g["observed"])]
        if pts:
            p, o = np.array(pts).T
            ax.scatter(p, o, s=14, alpha=0.7)
            lim = [0, max(p.max(), o.max()) * 1.05]
            ax.plot(lim, lim, color="#999", lw=0.8)
        title = f"at {key.split('_')[1]} {oc.time_unit}" if key != "deciles" else "by decile"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("predicted" + (" risk" if oc.kind == "survival" else ""))
        ax.set_ylabel("observed" + (" (Kaplan-Meier)" if oc.kind == "survival" else " mean"))
    fig.tight_layout()
    return figure_to_img(fig, f"calibration of the selected model at {target}")


def _fmt_ci(v) -> str:
    if not isinstance(v, dict) or v.get("mean") is None or not np.isfinite(v["mean"]):
        return "—"
    # the spread over seeds (min-max), not a confidence interval of the mean: every seed
    # re-splits the same target patients (see study.run.summarise)
    lo, hi = v.get("spread", v.get("ci", (np.nan, np.nan)))
    return f"{v['mean']:.3f} ({lo:.3f}-{hi:.3f})"


def _explanation_tables(result) -> str:
    """Per target and budget, the first seed's decision as data: the bar, each challenger's
    paired gain, its standard error, lower bound, secondary-loss difference and verdict."""
    html = ""
    seen = set()
    for s in result.selections:
        ex = s.get("explanation") or {}
        key = (s["target"], s["n_labeled"])
        if key in seen or not ex.get("candidates"):
            continue
        seen.add(key)
        tab = pd.DataFrame(ex["candidates"]).rename(columns={
            "score": f"{ex['criterion']} score", "gain": f"gain in {ex['primary']}", "lower": "gain - z se",
            "loss_diff": f"{ex['secondary']} difference"})
        html += table_html(tab, index=False, digits=4, caption=(
            f"target {s['target']}, n_t = {s['n_labeled']}, seed {s['seed']}: bar {ex['bar']} ({ex['bar_kind']}); "
            f"z = {ex['threshold_se']:.2f}; {ex['reason']}"))
    return html


def outcome_sections(result) -> list[Section]:
    oc = result.outcome
    st = result.study
    secs = [Section("Outcome", f"<p>{esc(oc.describe())}. Sources: {esc(', '.join(st.transfer.sources))}; "
                               f"target(s): {esc(st.transfer.target)}; label budgets n_t = "
                               f"{esc(st.transfer.labeled_target)} ({'censored rows count as labelled' if oc.kind == 'survival' else 'labelled target rows'}); "
                               f"{st.transfer.seeds} seed(s).</p>" + table_html(_site_table(result), digits=2))]
    if oc.kind == "survival":
        secs.append(Section("Kaplan-Meier curves per site",
                            _km_figure(result) + "<p class='note'>Dotted lines: the report's horizons.</p>"))
    else:
        secs.append(Section("Outcome distribution per site", _distribution_figure(result)))
    summ = summary_table(result)
    cols = _metric_columns(result)
    body = ("<p class='note'>Mean over seeds (min-max spread over seeds: each seed re-splits the same patients, so this is not a confidence interval); scored on the held-out target test half. "
            + ("Harrell's and Uno's C (higher is better; Uno's truncated at the last horizon), integrated Brier score "
               "with inverse-probability-of-censoring weights (lower is better), time-dependent AUC and "
               "observed/expected risk (Kaplan-Meier / mean prediction; 1 is calibrated) at each horizon."
               if oc.kind == "survival" else
               "MAE, RMSE (lower is better), R² and the calibration slope (outcome on prediction; 1 is calibrated), "
               "on the original scale.") + "</p>")
    for t in dict.fromkeys(r["target"] for r in summ):
        for n in sorted({r["n_labeled"] for r in summ if r["target"] == t}):
            rows = [r for r in summ if r["target"] == t and r["n_labeled"] == n]
            tab = pd.DataFrame([{"family": r["family"], **{c: _fmt_ci(r.get(c)) for c in cols}} for r in rows],
                               index=pd.Index([r["method"] for r in rows], name="method"))
            body += table_html(tab, caption=f"target {t}, n_t = {n}")
    secs.append(Section("Results", body))
    if result.selections:
        sel = pd.DataFrame(result.selections)
        counts = sel.groupby(["target", "n_labeled", "criterion", "chosen"]).size().rename("seeds").reset_index()
        body = ("<p class='note'>Chosen on the fit rows only: target cross-validation when the labelled target "
                "rows suffice, otherwise importance-weighted cross-validation on the source rows (label-free). The "
                "bar is the model on the reference score when the study has one, else the best baseline chosen "
                "without target labels. A challenger replaces it only when its paired gain in "
                + ("Harrell's C" if oc.kind == "survival" else "MAE")
                + " clears about 2 standard errors (Bonferroni over the challengers) and its "
                + ("integrated Brier score" if oc.kind == "survival" else "squared error")
                + " is not worse beyond one standard error.</p>"
                + table_html(counts, index=False) + _explanation_tables(result))
        figs = "".join(_calibration_figure(result, t) for t in dict.fromkeys(sel["target"]))
        secs.append(Section("Selection and calibration", body + figs))
    return secs


def _final_section(result) -> Section | None:
    """The model each bundle ships, its own numbers on its held-out rows, and the deployment check."""
    from ..study.outcome_final import DEPLOYMENT_TOLERANCE

    if not result.finals:
        return None
    oc = result.outcome
    keys = (["c_harrell", "c_uno", "ibs", *[f"oe_{h:g}" for h in oc.horizons]] if oc.kind == "survival"
            else ["mae", "rmse", "r2"])
    rows = []
    for t, fm in result.finals.items():
        chk = result.deployment.get(t, {})
        rows.append({"target": t, "shipped": fm.method, "selection chose": fm.selected, "seed": fm.seed,
                     "n_t": fm.n_labeled, **{k: fm.evaluation.get(k) for k in keys},
                     "deployment check": ("passed" if chk.get("passed") else "FAILED") if chk else "—",
                     "max |difference|": chk.get("max_abs_difference")})
    notes = "".join(f"<p class='note'>{esc(t)}: {esc(fm.note)}.</p>" for t, fm in result.finals.items() if fm.note)
    body = ("<p class='note'>Each target's bundle holds exactly this fitted object: the candidate as one seed of the "
            "run fitted it (the first seed whose selection chose it at the largest budget), scored on that seed's "
            "held-out target test rows. The deployment check loads the written bundle with the service's loader, "
            "predicts the same rows (risk at every horizon and the risk score, or the prediction) and recomputes "
            f"these metrics; both must agree within {DEPLOYMENT_TOLERANCE:g}.</p>"
            + notes + table_html(pd.DataFrame(rows), index=False, digits=3))
    return Section("Final model per target (what each bundle ships)", body)


def write_outcome_outputs(result, out, *, bundle: bool = True) -> Path:
    """Write ``report.html``, ``results.json`` and ``bundle/<target>/`` (the final model of each
    target), after checking each bundle reproduces its model (without ``bundle`` the bundles are
    written to a temporary folder, checked and discarded). A failed check writes nothing."""
    import tempfile

    from ..study.outcome_final import finalise_outcome, outcome_deployment_check
    from ..study.outputs import write_checked_bundles

    out = Path(out)
    oc = result.outcome
    if not result.finals and result.selections and result.shipped:
        finalise_outcome(result)
    with atomic_output_dir(out) as stage, tempfile.TemporaryDirectory(prefix="ht-bundles-") as scratch:
        from ..bundle._outcome import write_outcome_bundle

        write_checked_bundles(result, stage / "bundle" if bundle else Path(scratch), bundle=bundle,
                              write=lambda fm, path: write_outcome_bundle(fm, result, path),
                              check=lambda fm, path: outcome_deployment_check(fm, path, result))
        payload = {
            "study": result.study.study.name,
            "outcome": {"kind": oc.kind, "description": oc.describe(), "time": oc.time, "event": oc.event,
                        "horizons": oc.horizons, "time_unit": oc.time_unit, "label": oc.label,
                        "transform": oc.transform},
            "summary": summary_table(result),
            "records": result.records,
            "selections": result.selections,
            "finals": {t: {"method": fm.method, "selected": fm.selected, "note": fm.note, "seed": fm.seed,
                           "n_labeled": fm.n_labeled, "evaluation": fm.evaluation, "training": fm.training}
                       for t, fm in result.finals.items()},
            "deployment_check": result.deployment,
            "skipped": result.skipped,
            "seconds": result.seconds,
        }
        secs = outcome_sections(result)
        fin = _final_section(result)
        if fin is not None:
            secs.append(fin)
        page = render(f"{result.study.study.name}: {oc.kind} study", secs, subtitle=oc.describe(),
                      footer={"rows": len(result.dataset.frame), "seconds": f"{result.seconds:.1f}"})
        (stage / "results.json").write_text(json.dumps(_clean(payload), default=_json, indent=1), encoding="utf-8")
        (stage / "report.html").write_text(page, encoding="utf-8")
    return out / "report.html"


def print_outcome_summary(result) -> None:
    """The headline metric (Harrell's C / MAE) per method and budget, in the terminal."""
    from rich.console import Console
    from rich.table import Table

    key = "c_harrell" if result.outcome.kind == "survival" else "mae"
    summ = summary_table(result)
    for t in dict.fromkeys(r["target"] for r in summ):
        rows = [r for r in summ if r["target"] == t]
        budgets = sorted({r["n_labeled"] for r in rows})
        tab = Table(title=f"target {t}: {key} mean (min-max) over seeds")
        tab.add_column("method")
        for b in budgets:
            tab.add_column(f"n_t={b}", justify="right")
        for m in dict.fromkeys(r["method"] for r in rows):
            cell = {r["n_labeled"]: _fmt_ci(r.get(key)) for r in rows if r["method"] == m}
            tab.add_row(m, *[cell.get(b, "—") for b in budgets])
        Console().print(tab)
