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

__all__ = ["results_payload", "build_report", "write_outputs", "environment", "extra_sections"]

# Later stages (shift diagnostics, selection, calibration, bundle) register callables here:
# f(result) -> list[Section] for the report, and g(result) -> dict merged into results.json.
extra_sections: list = []
extra_payload: list = []


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


def results_payload(result) -> dict[str, Any]:
    from ..study.run import summarise

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
    for extra in extra_payload:
        payload.update(extra(result))
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


def build_report(result) -> str:
    sections = [_overview(result), _harmonisation(result)]
    for extra in extra_sections:
        sections.extend(extra(result))
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


def write_outputs(result, out: str | Path, *, bundle_writer=None) -> Path:
    """Write ``results.json`` and ``report.html`` (and a bundle, if given) atomically."""
    out = Path(out)
    payload = results_payload(result)
    page = build_report(result)
    with atomic_output_dir(out) as stage:
        (stage / "results.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
        (stage / "report.html").write_text(page, encoding="utf-8")
        if bundle_writer is not None:
            bundle_writer(result, stage / "bundle")
    return out / "report.html"
