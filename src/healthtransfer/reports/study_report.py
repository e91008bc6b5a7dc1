"""Turn a :class:`~healthtransfer.study.run.StudyResult` into ``results.json`` and
``report.html``.

``results.json`` keeps a stable shape scripts can rely on: ``results`` (one record per method,
sources, target, n_labeled and seed), ``summary`` (per method and n_labeled: mean, std and 95%
CI of each metric over seeds and targets), ``summary_by_target``, ``skipped``,
``harmonisation``, ``dataset`` and ``environment``.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ._io import atomic_output_dir
from .html import Section, esc, figure_to_img, render, table_html

__all__ = ["results_payload", "build_report", "write_outputs", "environment", "model_card"]


def environment() -> dict[str, str]:
    pkgs = ["numpy", "pandas", "scikit-learn", "scipy", "torch", "skada", "pot", "pydantic"]
    out = {"healthtransfer": __version__, "python": platform.python_version()}
    for p in pkgs:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, Path):
        return str(x)
    return x


def results_payload(result, finals: dict | None = None) -> dict[str, Any]:
    from ..study.final import recommend
    from ..study.run import summarise
    from .sections import selection_summary, subgroup_table

    metrics = result.metric_names
    payload = {
        "study": json.loads(result.study.model_dump_json(by_alias=True)),
        "dataset": result.dataset.summary(),
        "results": result.records,
        "summary": result.summary(),
        "summary_by_target": summarise(result.records, metrics, by=("target", "method", "n_labeled")),
        "skipped": result.skipped,
        "harmonisation": result.dataset.report.to_dict(),
        "runtime_seconds": result.seconds,
        "environment": environment(),
    }
    payload["selected"] = result.selections
    payload["selection_summary"] = selection_summary(result.records)
    payload["shift"] = {t: rep.to_dict() for t, rep in result.shift.items()}
    sub = subgroup_table(result.predictions, result.dataset.subgroup_columns(), result.dataset.numeric)
    payload["subgroups"] = sub.to_dict(orient="records")
    payload["recommendation"] = {t: recommend(result, t) for t in dict.fromkeys(r["target"] for r in result.records)}
    if finals:
        payload["explanations"] = {
            t: {"candidate": fm.candidate, "importance": fm.importance.to_dict() if fm.importance is not None else None,
                "relations": fm.relations.to_dict() if fm.relations is not None else None}
            for t, fm in finals.items() if fm is not None}
    return _jsonable(payload)


def _overview(result) -> Section:
    ds, st = result.dataset, result.study
    counts = ds.counts()
    counts.index.name = "site"
    role = {s: "source" for s in st.transfer.sources}
    targets = [st.transfer.target] if isinstance(st.transfer.target, str) else st.transfer.target
    role.update({t: "target" for t in targets})
    counts.insert(0, "role", [role.get(str(i), "unused") for i in counts.index])
    if ds.n_classes == 2:
        counts["positive rate"] = counts[1] / counts["n"]
    body = (
        f"<p>Dataset <code>{esc(ds.name)}</code>: {len(ds.frame)} rows, {len(ds.features)} features "
        f"({len(ds.categorical)} categorical), label <code>{esc(ds.label)}</code>. "
        f"Sources: {esc(', '.join(st.transfer.sources))}; target(s): {esc(', '.join(targets))}. "
        f"Each target is split {1 - st.transfer.test_fraction:.0%}/{st.transfer.test_fraction:.0%} into a pool and a "
        f"held-out test half over {st.transfer.seeds} seeds; label budgets n_t = "
        f"{esc(', '.join(map(str, st.transfer.labeled_target)))} are drawn from the pool.</p>"
        + table_html(counts, digits=3, caption="Rows and labels per site")
    )
    if ds.citation:
        body += f'<p class="note">Data: {esc(ds.citation)} Licence: {esc(ds.license)}.</p>'
    return Section("Study", body)


def _harmonisation(result) -> Section:
    rep = result.dataset.report
    lines = "".join(f"<li>{esc(line)}</li>" for line in rep.summary_lines())
    cleaned = rep.cleaned()
    tab = ""
    if len(cleaned):
        view = cleaned.set_index(["site", "column"])[["n_sentinel", "n_out_of_range", "n_unmapped", "n_converted", "missing_share"]]
        view.index = [f"{s} / {c}" for s, c in view.index]
        view.index.name = "site / column"
        tab = table_html(view, caption="What harmonisation changed")
    miss = rep.rows.pivot(index="column", columns="site", values="missing_share")
    miss = miss.loc[[c for c in result.dataset.features if c in miss.index]]
    return Section("Harmonisation", f"<ul>{lines}</ul>{tab}" + table_html(miss, digits=2, caption="Missing share after harmonisation (1.00 = never measured)"))


def _results_table(result) -> Section:
    df = result.frame()
    if df.empty:
        return Section("Results", "<p>No results: every seed was skipped (see below).</p>")
    main = "auroc"
    second = "brier"
    parts = []
    for target, g in df.groupby("target", sort=False):
        mean = g.groupby(["method", "n_labeled"])[main].mean().unstack()
        sd = g.groupby(["method", "n_labeled"])[main].std().unstack()
        cell = mean.copy().astype(object)
        for c in mean.columns:
            cell[c] = [f"{m:.3f} ± {s:.3f}" if np.isfinite(m) else "—" for m, s in zip(mean[c], sd[c].fillna(0))]
        cell.columns = [f"n_t={c}" for c in mean.columns]
        fam = g.groupby("method")["family"].first()
        cell.insert(0, "family", fam.reindex(cell.index))
        order = mean.max(axis=1).sort_values(ascending=False).index
        cell = cell.loc[order]
        cell.index.name = "method"
        b = g.groupby(["method", "n_labeled"])[second].mean().unstack().loc[order]
        b.columns = [f"n_t={c}" for c in b.columns]
        b.index.name = "method"
        parts.append(f"<h3>Target: {esc(target)}</h3>"
                     + table_html(cell, caption=f"Target-test {main.upper()} (mean ± std over seeds)")
                     + table_html(b, caption=f"Target-test Brier score (mean; lower is better)"))
    return Section("Results", "".join(parts) + _plot(df))


def _plot(df: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(df["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 3.6), squeeze=False)
    best = df.groupby("method")["auroc"].mean().sort_values(ascending=False).index[:8]
    for ax, t in zip(axes[0], targets):
        g = df[(df["target"] == t) & df["method"].isin(best)]
        for m, gm in g.groupby("method"):
            stats = gm.groupby("n_labeled")["auroc"].agg(["mean", "std", "count"])
            if len(stats) == 1:
                ax.axhline(stats["mean"].iloc[0], ls="--", lw=1, label=m)
                continue
            half = 1.96 * stats["std"].fillna(0) / np.sqrt(stats["count"])
            line = ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=m)[0]
            ax.fill_between(stats.index, stats["mean"] - half, stats["mean"] + half, alpha=0.12, color=line.get_color())
        ax.set_title(f"target: {t}")
        ax.set_xlabel("labelled target rows (n_t)")
        ax.set_ylabel("target-test AUROC")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return figure_to_img(fig, "Target AUROC against the number of labelled target rows")


def _skipped(result) -> Section | None:
    if not result.skipped:
        return None
    df = pd.DataFrame(result.skipped)
    cols = [c for c in ("target", "n_labeled", "method", "reason") if c in df]
    tab = df.fillna("").groupby(cols).size().rename("seeds").reset_index().set_index("target")
    return Section("Skipped", "<p>Seeds or budgets that could not be run, and why.</p>" + table_html(tab))


def build_report(result, finals: dict | None = None) -> str:
    from .sections import (calibration_section, explanation_section, recommendation_section, selection_section,
                           selection_summary, subgroup_section, subgroup_table)

    finals = finals or {}
    summary = selection_summary(result.records)
    sections = [_overview(result)]
    if result.selections:
        sections.append(recommendation_section(result, finals, summary))
    sections.append(_harmonisation(result))
    for rep in result.shift.values():
        sections.extend(rep.sections())
    if result.selections:
        sections.append(selection_section(result, summary))
        sections.append(calibration_section(result))
        sub = subgroup_table(result.predictions, result.dataset.subgroup_columns(), result.dataset.numeric)
        sections.append(subgroup_section(result, sub))
    if finals:
        sections.append(explanation_section(finals))
    sections.append(_results_table(result))
    sk = _skipped(result)
    if sk:
        sections.append(sk)
    env = environment()
    footer = {
        "healthtransfer": env.pop("healthtransfer"),
        "dependencies": ", ".join(f"{k} {v}" for k, v in env.items()),
        "data fingerprint (sha256)": result.dataset.fingerprint(),
        "seeds": f"0..{result.study.transfer.seeds - 1}",
        "config": result.study.model_dump_json(by_alias=True),
        "runtime": f"{result.seconds:.1f} s",
    }
    return render(f"healthtransfer report: {result.study.study.name}", sections,
                  subtitle=result.study.study.description or "Transfer study", footer=footer)


def model_card(result, finals: dict) -> str:
    """A Markdown model card for the study's recommendation (the bundle carries its own)."""
    from .sections import selection_summary

    st, ds = result.study, result.dataset
    lines = [f"# Model card: {st.study.name}", "", "## Intended use", "",
             f"Decision support for `{ds.label}` at the target site(s) "
             f"{', '.join(r for r in dict.fromkeys(x['target'] for x in result.records))}, transferred from "
             f"{', '.join(st.transfer.sources)}. Not a diagnosis; a clinician decides.", "",
             "## Data", "", f"`{ds.name}`: {len(ds.frame)} rows, {len(ds.features)} features. {ds.citation}", "",
             "## Performance at the target (held-out test rows, mean over seeds)", "",
             "| target | n_t | selected AUROC | ECE | best baseline | its AUROC | oracle AUROC |", "|---|---|---|---|---|---|---|"]
    for r in selection_summary(result.records):
        lines.append(f"| {r['target']} | {r['n_labeled']} | {r['selected_auroc']:.3f} | {r['selected_ece']:.3f} | "
                     f"{r['best_baseline']} | {r['best_baseline_auroc']:.3f} | {r['oracle_auroc']:.3f} |")
    lines += ["", "## Recommended models", ""]
    for t, fm in finals.items():
        if fm is not None:
            lines.append(f"- {t}: `{fm.candidate}` ({fm.family}), refitted on the sources plus {fm.n_labeled} labelled target rows.")
    lines += ["", "## Limits", "",
              "- Validated only on the sites above; shift diagnostics in report.html say how far they differ.",
              "- Small target samples: read AUROC differences below about 0.02 as noise unless the paired win-rate is high.",
              "- Subgroup results (report.html) are estimated on few rows per seed.", ""]
    return "\n".join(lines)


def write_outputs(result, out: str | Path, *, finals: dict | None = None, bundle: bool = True) -> Path:
    """Write ``results.json``, ``report.html``, ``model_card.md`` and, if a deployable model
    was fitted, ``bundle/``: all staged and moved into ``out`` only once every file exists."""
    out = Path(out)
    finals = finals or {}
    payload = results_payload(result, finals)
    page = build_report(result, finals)
    with atomic_output_dir(out) as stage:
        (stage / "results.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
        (stage / "report.html").write_text(page, encoding="utf-8")
        if finals:
            (stage / "model_card.md").write_text(model_card(result, finals), encoding="utf-8")
        first = next((fm for fm in finals.values() if fm is not None), None)
        if bundle and first is not None:
            _write_bundle(result, first, stage / "bundle", payload)
    return out / "report.html"


def _write_bundle(result, fm, path: Path, payload: dict) -> None:
    from ..bundle import write_bundle
    from .sections import selection_summary

    summ = next((r for r in selection_summary(result.records)
                 if r["target"] == fm.target and r["n_labeled"] == fm.n_labeled), {})
    df = result.frame()
    sel = df[(df["method"] == "selected") & (df["target"] == fm.target) & (df["n_labeled"] == fm.n_labeled)]
    metrics = {"target": fm.target, "n_labeled": fm.n_labeled, "seeds": int(len(sel))}
    for m in result.metric_names:
        if m in sel:
            v = sel[m].dropna()
            if len(v):
                half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
                metrics[m] = {"value": float(v.mean()), "ci": [float(v.mean() - half), float(v.mean() + half)]}
    metrics["subgroups"] = [r for r in payload.get("subgroups", []) if r["target"] == fm.target]
    metrics["calibration"] = _calibration_table(result, fm)
    metrics["comparison"] = summ
    write_bundle(path, model=fm.model, preprocessor=fm.preprocessor, dataset=result.dataset,
                 training_frame=fm.training_frame, method=fm.method, metrics=metrics,
                 extra={"sources": list(result.study.transfer.sources), "target": fm.target, "candidate": fm.candidate})


def _calibration_table(result, fm) -> list[dict]:
    """Observed rate per predicted-risk bin of the selected model on the target test rows, with
    a Wilson 95% CI: what the service shows as a prediction's uncertainty."""
    preds = [p for p in result.predictions if p["method"] == "selected" and p["target"] == fm.target
             and p["n_labeled"] == fm.n_labeled]
    if not preds or np.asarray(preds[0]["proba"]).shape[1] != 2:
        return []
    y = np.concatenate([p["y"] for p in preds])
    pr = np.concatenate([np.asarray(p["proba"])[:, 1] for p in preds])
    edges = np.linspace(0, 1, 6)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (pr >= lo) & ((pr < hi) if hi < 1 else (pr <= hi))
        n = int(m.sum())
        if n == 0:
            continue
        k = float(y[m].sum())
        z = 1.96
        phat = k / n
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        out.append({"lo": float(lo), "hi": float(hi), "observed": phat, "ci": [float(centre - half), float(centre + half)], "n": n})
    return out
