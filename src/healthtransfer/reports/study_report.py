"""Turn a :class:`~healthtransfer.study.run.StudyResult` into ``results.json`` and
``report.html``.

``results.json`` keeps a stable shape scripts can rely on: ``results`` (one record per method,
sources, target, n_labeled and seed), ``summary`` (per method and n_labeled: mean, std and
spread, i.e. min and max, of each metric over seeds and targets; a spread, not a CI),
``summary_by_target``, ``skipped``, ``harmonisation``, ``dataset``, ``environment``,
``final_models`` (per target: the shipped model, what its fit used, its evaluation with a
target-sample interval) and ``deployment_check`` (the bundle loaded back and re-scored).
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._json import jsonable
from .. import __version__
from ._io import atomic_output_dir
from .html import Section, esc, figure_to_img, render, table_html

__all__ = ["results_payload", "build_report", "environment", "model_card"]


def environment() -> dict[str, str]:
    pkgs = ["numpy", "pandas", "scikit-learn", "scipy", "torch", "skada", "pot", "pydantic"]
    out = {"healthtransfer": __version__, "python": platform.python_version()}
    for p in pkgs:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def results_payload(result) -> dict[str, Any]:
    """The ``results.json`` content, read from a finalised result (nothing recomputed here
    except the subgroup view of the kept predictions)."""
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
    payload["selected"] = result.selections
    payload["selection_summary"] = result.selection_summary
    payload["shift"] = {t: rep.to_dict() for t, rep in result.shift.items()}
    payload["subgroups"] = result.subgroups.to_dict(orient="records")
    payload["recommendation"] = {t: fm.evidence for t, fm in result.finals.items()}
    payload["final_models"] = {t: _final_summary(fm) for t, fm in result.finals.items()}
    payload["deployment_check"] = result.deployment
    payload["explanations"] = {
        t: {"candidate": fm.candidate, "importance": fm.importance.to_dict() if fm.importance is not None else None,
            "relations": fm.relations.to_dict() if fm.relations is not None else None}
        for t, fm in result.finals.items()}
    return jsonable(payload)


def _final_summary(fm) -> dict[str, Any]:
    return {"candidate": fm.candidate, "family": fm.family, "n_labeled": fm.n_labeled, "seed": fm.seed,
            "inputs": fm.inputs, "reference_input": fm.reference_input, "calibration": fm.calibration,
            "training": fm.training, "evaluation": fm.evaluation, "seed_spread": fm.seed_spread,
            "calibration_table": fm.calibration_table}


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
    from .sections import auroc_vs_nt_plot

    # the 8 methods with the best mean test AUROC: a display choice made with test labels
    best = df.groupby("method")["auroc"].mean().sort_values(ascending=False).index[:8]

    def pick(g):
        return [(m, m, {}) for m in sorted(set(g["method"]) & set(best))]

    return auroc_vs_nt_plot(df, pick, "Target AUROC against the number of labelled target rows: the 8 methods with "
                            "the best mean test AUROC (best: picked with test labels); bands are ± 1 s.d. over splits",
                            size=(4.6, 3.6))


def _skipped(result) -> Section | None:
    if not result.skipped:
        return None
    df = pd.DataFrame(result.skipped)
    cols = [c for c in ("target", "n_labeled", "method", "reason") if c in df]
    tab = df.fillna("").groupby(cols).size().rename("seeds").reset_index().set_index("target")
    return Section("Skipped", "<p>Seeds or budgets that could not be run, and why.</p>" + table_html(tab))


def build_report(result) -> str:
    from .sections import (calibration_section, explanation_section, final_model_section, recommendation_section,
                           selection_section, subgroup_section)

    finals, summary = result.finals, result.selection_summary
    sections = [_overview(result)]
    if result.selections:
        sections.append(recommendation_section(result, finals, summary))
    if finals:
        sections.append(final_model_section(result))
    sections.append(_harmonisation(result))
    for rep in result.shift.values():
        sections.extend(rep.sections())
    if result.selections:
        sections.append(selection_section(result, summary))
        sections.append(calibration_section(result))
        sections.append(subgroup_section(result, result.subgroups))
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


def model_card(result) -> str:
    """A Markdown model card for the study's shipped models (each bundle carries its own)."""
    st, ds = result.study, result.dataset
    lines = [f"# Model card: {st.study.name}", "", "## Intended use", "",
             f"Decision support for `{ds.label}` at the target site(s) "
             f"{', '.join(result.finals)}, transferred from "
             f"{', '.join(st.transfer.sources)}. Not a diagnosis; a clinician decides.", "",
             "## Data", "", f"`{ds.name}`: {len(ds.frame)} rows, {len(ds.features)} features. {ds.citation}", "",
             "## The shipped model at each target (the bundle's own numbers)", "",
             "Each model is scored on its seed's held-out target test rows; the interval is a BCa bootstrap over "
             "those patients (it narrows only with more target patients). The bundle, loaded back, gives the "
             "same numbers on the same rows (deployment check).", "",
             "| target | model | calibration | AUROC (95% CI) | Brier (95% CI) | ECE (noise floor) | test rows | "
             "deployment check |", "|---|---|---|---|---|---|---|---|"]
    for t, fm in result.finals.items():
        ev, chk = fm.evaluation, result.deployment.get(t, {})
        ece = ev.get("ece", {})
        lines.append(
            f"| {t} | `{fm.candidate}` | {fm.calibration} | {_ci(ev.get('auroc'))} | {_ci(ev.get('brier'))} | "
            f"{_f(ece.get('value'))} ({_f(ece.get('noise_floor'))}) | {ev.get('auroc', {}).get('n', 'n/a')} | "
            f"{'passed' if chk.get('passed') else 'not run'} |")
    lines += ["", "## How the models were trained (generated from what each fit used)", ""]
    for t, fm in result.finals.items():
        lines.append(f"- {t}: `{fm.candidate}` ({fm.family}), {fm.training['text']}")
    lines += ["", "## The selection procedure over splits (a spread, not a confidence interval)", "",
              "| target | n_t | selected AUROC (mean over seeds) | ECE | best baseline* | its AUROC* | oracle AUROC* |",
              "|---|---|---|---|---|---|---|"]
    for r in result.selection_summary:
        lines.append(f"| {r['target']} | {r['n_labeled']} | {r['selected_auroc']:.3f} | {r['selected_ece']:.3f} | "
                     f"{r['best_baseline']} | {_f(r['best_baseline_auroc'])} | {r['oracle_auroc']:.3f} |")
    lines += ["", "\\* picked with test labels: a reference, not a choice a user could have made.", "",
              "## Limits", "",
              "- Validated only on the sites above; shift diagnostics in report.html say how far they differ.",
              "- Small target samples: read the intervals above before trusting a difference between models.",
              "- Subgroup results (report.html) are estimated on few rows per seed.", ""]
    return "\n".join(lines)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(m) -> str:
    if not m:
        return "n/a"
    lo, hi = m.get("ci", [None, None])
    lo, hi = (None if v is None or v != v else v for v in (lo, hi))
    return f"{m['value']:.3f} ({_f(lo)} to {_f(hi)})"
