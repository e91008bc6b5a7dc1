"""Study commands: ``demo`` (the bundled UCI heart study), ``run`` (a study TOML) and ``methods``
(what ``run`` can use), with the terminal summary a run prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._app import _guard, _width, app


def demo_study(seeds: int = 5):
    """The bundled study: Cleveland as source, each other UCI heart hospital as target."""
    from ..data.sources import HEART_CATEGORICAL, HEART_FEATURES
    from ..study import Study
    from ..study.config import DEMO_METHODS

    return Study.model_validate({
        "study": {"name": "uci-heart-demo",
                  "description": "Cleveland Clinic -> Budapest, Long Beach VA and Zurich/Basel (UCI Heart Disease)"},
        "data": {"dataset": "uci_heart", "features": HEART_FEATURES, "categorical": HEART_CATEGORICAL,
                 "subgroups": ["sex"]},
        "transfer": {"sources": ["cleveland"], "target": ["hungarian", "va", "switzerland"],
                     "labeled_target": [0, 10, 20, 40], "seeds": seeds, "test_fraction": 0.5,
                     "methods": DEMO_METHODS},
        # 3 folds instead of 5 keeps the demo under two minutes; the benchmarks use 5
        "selection": {"folds_target": 3},
    })


def _execute(study, out: Path, data_dir: Optional[Path], jobs: int, methods: Optional[list[str]],
             backend: Optional[str] = None, bundle: bool = True, as_json: bool = False):
    from ..study.final import finalise
    from ..study.outputs import write_study_outputs
    from ..study.run import run_study

    from rich.console import Console

    result = run_study(study, methods=methods, data_dir=data_dir, n_jobs=jobs, progress=True, backend=backend)
    if result.outcome is not None:  # survival / regression study: its own report and bundle
        from ..reports.outcome_report import print_outcome_summary, write_outcome_outputs

        report = write_outcome_outputs(result, out, bundle=bundle)
        print_outcome_summary(result)
        typer.echo(f"\nWrote {report}, {out / 'results.json'}"
                   + (" and bundle/" if (out / "bundle").is_dir() else "") + f" in {result.seconds:.1f} s.")
        return result
    with Console(stderr=True).status("") as status:
        if result.selections:
            status.update("fitting and explaining the final model per target")
            finalise(result)
        status.update("writing the report, the bundles and the deployment check")
        report = write_study_outputs(result, out, bundle=bundle)
    _print_summary(result, as_json)
    extra = " and bundle/<target>/ per target" if (out / "bundle").is_dir() else ""
    # with --json, stdout carries only the JSON; the closing line goes to stderr
    typer.echo(f"\nWrote {report}, {out / 'results.json'}{extra} in {result.seconds:.1f} s.", err=as_json)
    return result


def _print_summary(result, as_json: bool = False) -> None:
    """Per target, one compact table: mean AUROC over seeds by method and label budget."""
    df = result.frame()
    if df.empty:
        return
    if as_json:
        typer.echo(json.dumps(summary_tables(df), indent=1, default=str))
        return
    typer.echo(format_summary(df, width=_width()))


def summary_tables(df) -> dict:
    """``{target: {method: {n_t: mean AUROC}}}`` plus the seeds and the metric, for ``--json``."""
    metric = "auroc" if "auroc" in df else "accuracy"
    out: dict = {"metric": metric, "seeds": int(df["seed"].nunique()) if "seed" in df else None, "targets": {}}
    for target, g in df.groupby("target", sort=False):
        means = g.groupby(["method", "n_labeled"])[metric].mean()
        tab: dict = {}
        for (m, b), v in means.items():
            tab.setdefault(m, {})[int(b)] = None if v != v else round(float(v), 4)
        out["targets"][str(target)] = tab
    return out


def format_summary(df, *, width: int = 80) -> str:
    """One table per target, methods as rows and label budgets as columns, best first.

    Mean over seeds only: the spreads and intervals are in report.html and results.json.
    Methods a budget cannot run (e.g. target-only at n_t = 0) show a dash.
    """
    tables = summary_tables(df)
    metric, seeds = tables["metric"], tables["seeds"]
    lines = []
    for target, tab in tables["targets"].items():
        budgets = sorted({b for cells in tab.values() for b in cells})
        order = sorted(tab, key=lambda m: (m != "selected", -_mean([v for v in tab[m].values() if v is not None])))
        name_w = min(max(len(m) for m in tab) + 1, max(12, width - 8 * len(budgets) - 1))
        lines.append("")
        lines.append(f"target {target}: {metric.upper()}, mean over {seeds} seed{'s' if seeds != 1 else ''}")
        lines.append(f"{'method':<{name_w}}" + "".join(f"{'n_t=' + str(b):>8}" for b in budgets))
        lines.append("-" * (name_w + 8 * len(budgets)))
        for m in order:
            cells = "".join(f"{'-' if tab[m].get(b) is None else format(tab[m][b], '.3f'):>8}" for b in budgets)
            label = m if len(m) <= name_w - 1 else m[: name_w - 2] + "~"
            lines.append(f"{label:<{name_w}}{cells}")
    lines.append("")
    lines.append("'selected': the recommendation, chosen without test labels; the rest compare.")
    return "\n".join(lines)


def _mean(values) -> float:
    return sum(values) / len(values) if values else float("-inf")


@app.command()
def demo(
    out: Path = typer.Option(Path("healthtransfer-demo"), "--out", help="Folder for report.html and results.json."),
    seeds: int = typer.Option(5, min=1, help="Seeds (random pool/test splits) per target."),
    jobs: int = typer.Option(2, min=1, help="Parallel workers (one (target, seed) each)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout instead of tables."),
):
    """Run the bundled UCI heart study (Cleveland -> each other hospital) end to end."""
    _guard(_execute, demo_study(seeds), out, None, jobs, None, as_json=as_json)


@app.command()
def run(
    study_file: Path = typer.Argument(..., help="Study TOML file (see README)."),
    out: Path = typer.Option(Path("healthtransfer-out"), "--out", help="Output folder."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder with the staged datasets (or set HEALTHTRANSFER_DATA)."),
    method: Optional[list[str]] = typer.Option(None, "--method", "-m", help="Run only these methods (repeatable)."),
    jobs: int = typer.Option(2, min=1, help="Parallel workers."),
    backend: Optional[str] = typer.Option(None, help="joblib backend for the sweep, e.g. 'ray' (needs a Ray cluster)."),
    bundle: bool = typer.Option(True, help="Also write OUT/bundle/<target>/: one bundle per target."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout instead of tables."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (units, methods, fits, estimated time) "
                                 "and exit without running or writing anything."),
):
    """Run the transfer study a TOML file describes and write its report."""
    from ..study import load_study

    def go():
        study = load_study(study_file)
        if dry_run:
            from ..study._plan import format_plan, plan_study

            plan = plan_study(study, methods=method, data_dir=data_dir, n_jobs=jobs)
            typer.echo(json.dumps(plan, indent=1, default=str) if as_json else format_plan(plan))
            return None
        return _execute(study, out, data_dir, jobs, method, backend, bundle, as_json=as_json)

    _guard(go)


@app.command()
def methods(
    family: Optional[str] = typer.Option(None, help="Only this family (baseline, instance, feature, model, relation)."),
    long: bool = typer.Option(False, "--long", help="One paragraph per method: family, target data used, description."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (for scripts)."),
):
    """List the transfer methods that `run` can use, by family.

    A compact list by default (fits an 80-column terminal); `--long` describes each method,
    `--json` prints everything as JSON.
    """
    from ..methods import available_methods

    specs = [s for s in available_methods().values() if family is None or s.family == family]
    if as_json:
        typer.echo(json.dumps([{"name": s.name, "family": s.family, "uses_target": s.uses_target,
                                "needs_labels": s.needs_labels, "deep": s.deep,
                                "skada_counterpart": s.skada_counterpart, "description": s.description}
                               for s in specs], indent=1))
        return
    typer.echo(format_methods(specs, long=long, width=_width()))


FAMILY_ORDER = ("baseline", "instance", "feature", "model", "relation")


def format_methods(specs, *, long: bool = False, width: int = 80) -> str:
    """The methods grouped by family, as plain text no wider than ``width`` columns.

    >>> from healthtransfer.methods import available_methods
    >>> text = format_methods(available_methods().values(), width=80)
    >>> max(len(line) for line in text.splitlines()) <= 80
    True
    """
    import textwrap

    specs = list(specs)
    by_family: dict[str, list] = {}
    for s in specs:
        by_family.setdefault(s.family, []).append(s)
    order = [f for f in FAMILY_ORDER if f in by_family] + sorted(set(by_family) - set(FAMILY_ORDER))
    lines = [f"{len(specs)} methods; "
             "+ needs target labels (n_t > 0), * deep (PyTorch)"]
    for fam in order:
        group = by_family[fam]
        lines.append("")
        lines.append(f"{fam} ({len(group)})")
        if long:
            for s in group:
                tags = [f"target data: {s.uses_target}"] + (["needs n_t > 0"] if s.needs_labels else []) \
                    + (["deep"] if s.deep else []) + ([f"skada: {s.skada_counterpart}"] if s.skada_counterpart else [])
                lines.append(f"  {s.name}  ({'; '.join(tags)})")
                lines += textwrap.wrap(s.description, width=width, initial_indent="      ",
                                       subsequent_indent="      ")
        else:
            names = [s.name + ("+" if s.needs_labels else "") + ("*" if s.deep else "") for s in group]
            lines += textwrap.wrap("  ".join(names), width=width, initial_indent="  ", subsequent_indent="  ",
                                   break_on_hyphens=False)
    if not long:
        lines += ["", "`healthtransfer methods --long` describes each; --json for scripts."]
    return "\n".join(lines)
