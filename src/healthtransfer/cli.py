"""The command line: one command per job; ``healthtransfer demo`` runs the whole flow.

Errors a user can fix print as one paragraph (no traceback unless ``--debug``) and exit 2;
nothing half-written is left behind.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import HealthTransferError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="healthtransfer: harmonise multi-site health data, measure shift, transfer models "
    "between sites and evaluate them honestly on held-out target data.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect built-in or study datasets.")
app.add_typer(data_app, name="data")

_state: dict = {"debug": False, "argv": None}

class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, so a handler installed by
    one in-process invocation (tests, notebooks, CliRunner) never writes to a closed stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")):
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        handlers=[_StderrHandler()], force=True)


def _fail(exc: BaseException, code: int) -> None:
    if _state["debug"]:
        raise exc
    msg = str(exc) if isinstance(exc, HealthTransferError) else (
        f"internal error ({type(exc).__name__}). For the traceback, run again as\n"
        f"  {rerun_command(_state['argv'])}\nand report it."
    )
    typer.echo(f"Error: {msg}", err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except HealthTransferError as exc:
        _fail(exc, 2)
    except (KeyboardInterrupt, typer.Exit):
        raise
    except Exception as exc:  # anything else is our bug: say so, hide internals unless --debug
        _fail(exc, 1)


def demo_study(seeds: int = 5):
    """The bundled study: Cleveland as source, each other UCI heart hospital as target."""
    from .data.sources import HEART_FEATURES
    from .study import Study
    from .study.config import DEMO_METHODS

    return Study.model_validate({
        "study": {"name": "uci-heart-demo",
                  "description": "Cleveland Clinic -> Budapest, Long Beach VA and Zurich/Basel (UCI Heart Disease)"},
        "data": {"dataset": "uci_heart", "features": HEART_FEATURES, "categorical": ["cp", "restecg"],
                 "subgroups": ["sex"]},
        "transfer": {"sources": ["cleveland"], "target": ["hungarian", "va", "switzerland"],
                     "labeled_target": [0, 10, 20, 40], "seeds": seeds, "test_fraction": 0.5,
                     "methods": DEMO_METHODS},
        # 3 folds instead of 5 keeps the demo under two minutes; the benchmarks use 5
        "selection": {"folds_target": 3},
    })


def _execute(study, out: Path, data_dir: Optional[Path], jobs: int, methods: Optional[list[str]],
             backend: Optional[str] = None, bundle: bool = True, as_json: bool = False):
    from .study.final import finalise
    from .study.outputs import write_study_outputs
    from .study.run import run_study

    from rich.console import Console

    result = run_study(study, methods=methods, data_dir=data_dir, n_jobs=jobs, progress=True, backend=backend)
    if result.outcome is not None:  # survival / regression study: its own report and bundle
        from .reports.outcome_report import print_outcome_summary, write_outcome_outputs

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
    from .study import load_study

    def go():
        study = load_study(study_file)
        if dry_run:
            from .study._plan import format_plan, plan_study

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
    from .methods import available_methods

    specs = [s for s in available_methods().values() if family is None or s.family == family]
    if as_json:
        typer.echo(json.dumps([{"name": s.name, "family": s.family, "uses_target": s.uses_target,
                                "needs_labels": s.needs_labels, "deep": s.deep,
                                "skada_counterpart": s.skada_counterpart, "description": s.description}
                               for s in specs], indent=1))
        return
    typer.echo(format_methods(specs, long=long, width=_width()))


FAMILY_ORDER = ("baseline", "instance", "feature", "model", "relation")


def _width() -> int:
    import shutil

    return max(40, min(100, shutil.get_terminal_size((80, 24)).columns))


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


_STREAM_FIX = ("under [data], set `path` to a Parquet file or a folder of Parquet files and `schema` to a "
               "schema TOML (see healthtransfer/data/schemas/uci_heart.toml), or drop --stream")


def _stream_inputs(study_file: Path):
    """(study, Parquet path, schema) for a ``--stream`` command, with the schema's domain and
    label set from the study and its features restricted to the study's ``features``."""
    from .data.schema import FeatureSpec, load_schema
    from .data.streaming import _dataset
    from .errors import UserInputError
    from .study import load_study

    study = load_study(study_file)
    d = study.data
    where = str(study_file)
    if d.path is None:
        raise UserInputError("--stream reads a Parquet file or folder named by [data] `path`, but the study uses "
                             f"the built-in dataset '{d.dataset}'", where=where, fix=_STREAM_FIX)
    path = study.resolve(d.path)
    if d.schema_file is None:
        raise UserInputError("--stream needs a schema: the per-site rules and feature kinds cannot be guessed "
                             "from one batch at a time", where=where, fix=_STREAM_FIX)
    if not path.exists():
        raise UserInputError(f"the data path {path} does not exist", where=where, fix="check [data] `path`")
    if path.is_file() and path.suffix.lower() not in (".parquet", ".parq", ".pq"):
        raise UserInputError(f"--stream reads Parquet only, and {path.name} is not a .parquet file", where=where,
                             fix="convert the table to Parquet (e.g. pandas' to_parquet) or drop --stream")
    try:
        names = _dataset(path).schema.names
    except Exception as exc:  # pyarrow's message names the offending file, never values
        raise UserInputError(f"cannot read {path} as Parquet ({type(exc).__name__})",
                             where=where, fix="point `path` at a Parquet file or a folder holding only Parquet "
                             "files (names starting with '_' or '.' are skipped)") from None
    if not names:
        raise UserInputError(f"no Parquet files under {path}", where=where, fix="check [data] `path`")
    schema = load_schema(study.resolve(d.schema_file))
    if d.domain not in names:
        raise UserInputError(f"the domain column '{d.domain}' is not in the data", where=str(path),
                             fix=f"set `domain` to one of the columns: {names[:20]}")
    # the schema's features by default (one the data lacks is reported as absent); features the
    # study lists must be in the data, directly or through a rename
    features = list(d.features) if d.features else schema.feature_names
    renamed = {new for site in schema.sites.values() for new in site.rename.values()}
    unknown = [f for f in (d.features or []) if f not in names and f not in renamed]
    if unknown:
        raise UserInputError(f"features {unknown} are neither columns of the data nor renamed onto by the schema",
                             where=str(path), fix="remove them from `features` or check their spelling")
    cat = set(d.categorical or [])
    specs = []
    for f in features:
        spec = schema.feature(f)
        if spec is None:
            spec = FeatureSpec(name=f, kind="categorical" if f in cat else "numeric")
        elif f in cat:
            spec = spec.model_copy(update={"kind": "categorical"})
        specs.append(spec)
    schema = schema.model_copy(update={"domain": d.domain, "label": d.label, "features": specs,
                                       "name": schema.name or study.study.name})
    return study, path, schema


def _print_harmonisation(con, header: str, report) -> None:
    from rich.table import Table

    con.print(header)
    for line in report.summary_lines():
        con.print(f"  - {line}")
    tab = Table(title="per site and column (only where something changed or is missing)")
    for c in ("site", "column", "missing", "sentinel", "out of range", "unmapped", "converted", "absent"):
        tab.add_column(c, justify="right")
    rows = report.rows
    if not rows.empty:
        rows = rows[(rows["missing_share"] > 0) | (rows[["n_sentinel", "n_out_of_range", "n_unmapped", "n_converted"]].sum(axis=1) > 0)]
    for _, r in rows.iterrows():
        tab.add_row(str(r.site), str(r.column), f"{r.missing_share:.0%}", str(r.n_sentinel), str(r.n_out_of_range),
                    str(r.n_unmapped), str(r.n_converted), "yes" if r.absent else "")
    con.print(tab)


@data_app.command("inspect")
def data_inspect(
    study_file: Optional[Path] = typer.Argument(None, help="Study TOML whose data to inspect."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A built-in dataset instead of a study."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder with the staged datasets."),
    as_json: bool = typer.Option(False, "--json", help="Print the harmonisation report as JSON."),
    stream: bool = typer.Option(False, "--stream", help="Read the study's Parquet file or folder batch by batch "
                                "(bounded memory, for data larger than memory); needs [data] path and schema."),
):
    """Print the harmonisation report: per site and column, what was cleaned and why."""

    def go():
        from .data import load_dataset
        from .errors import UserInputError
        from .study import load_study
        from .study.run import load_study_data

        if (study_file is None) == (dataset is None):
            raise UserInputError("give either a study file or --dataset NAME", fix="e.g. `healthtransfer data inspect --dataset uci_heart`")
        if stream:
            if study_file is None:
                raise UserInputError("--stream works on a study file, not on a built-in --dataset",
                                     fix="give a study TOML whose [data] `path` is Parquet and `schema` a schema TOML")
            return _inspect_streamed(study_file, as_json)
        ds = load_dataset(dataset, data_dir=data_dir) if dataset else load_study_data(load_study(study_file), data_dir)
        if as_json:
            typer.echo(json.dumps({"dataset": ds.summary(), "harmonisation": ds.report.to_dict()}, indent=1, default=str))
            return
        from rich.console import Console

        summ = ds.summary()
        _print_harmonisation(Console(), f"[bold]{ds.name}[/bold]: {summ['rows']} rows, {len(ds.features)} features, "
                             f"label '{ds.label}', domains {summ['domains']}", ds.report)

    _guard(go)


def _inspect_streamed(study_file: Path, as_json: bool) -> None:
    from .data.streaming import streaming_harmonisation_report

    study, path, schema = _stream_inputs(study_file)
    report = streaming_harmonisation_report(path, schema, progress=True)
    rows = report.rows
    domains = {str(s): int(g["n_rows"].iloc[0]) for s, g in rows.groupby("site", sort=False)} if not rows.empty else {}
    summ = {"name": study.study.name, "rows": sum(domains.values()), "domains": domains,
            "features": schema.feature_names, "categorical": schema.categorical, "label": schema.label,
            "path": str(path), "streamed": True}
    if as_json:
        typer.echo(json.dumps({"dataset": summ, "harmonisation": report.to_dict()}, indent=1, default=str))
        return
    from rich.console import Console

    _print_harmonisation(Console(), f"[bold]{summ['name']}[/bold] (streamed from {path.name}): {summ['rows']} rows, "
                         f"{len(summ['features'])} features, label '{summ['label']}', domains {domains}", report)


@app.command()
def diagnose(
    study_file: Path = typer.Argument(..., help="Study TOML file."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder with the staged datasets."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    stream: bool = typer.Option(False, "--stream", help="Read the study's Parquet file or folder batch by batch "
                                "(bounded memory): per-feature SMD and missingness, an SGD domain classifier and "
                                "an MMD test; needs [data] path and schema."),
):
    """Shift diagnostics: how each target differs from the sources (covariate, label, missingness)."""

    def go():
        if stream:
            return _diagnose_streamed(study_file, as_json)
        from .data.splits import target_split
        from .shift import diagnose_study_cli
        from .study import load_study
        from .study.run import check_study_data, load_study_data, targets_of

        study = load_study(study_file)
        ds = load_study_data(study, data_dir)
        check_study_data(study, ds)
        outs = []
        for t in targets_of(study):
            tgt = ds.frame[ds.frame[ds.domain].astype(str) == t]
            groups = tgt[ds.group].to_numpy() if ds.group and ds.group in tgt else None
            split = target_split(tgt[ds.label].to_numpy().astype(int), seed=0,
                                 test_fraction=study.transfer.test_fraction, groups=groups)
            # only the pool of seed 0: the test rows stay untouched, as in every run
            outs.append(diagnose_study_cli(ds, study.transfer.sources, t, as_json=as_json,
                                           rows_target=tgt.index[split.pool]))
        typer.echo(("[" + ",".join(outs) + "]") if as_json and len(outs) > 1 else "\n\n".join(outs))

    _guard(go)


def _diagnose_streamed(study_file: Path, as_json: bool) -> None:
    import numpy as np

    from .data.streaming import streaming_shift_summary, streaming_site_counts
    from .errors import UserInputError
    from .shift._summary import THRESHOLDS
    from .study.run import targets_of

    study, path, schema = _stream_inputs(study_file)
    sources = [str(s) for s in study.transfer.sources]
    targets = [str(t) for t in targets_of(study)]
    counts = streaming_site_counts(path, schema.domain, progress=True)
    missing = [s for s in [*sources, *targets] if counts.get(s, 0) == 0]
    if missing:
        known = [k for k in counts if k is not None]
        raise UserInputError(f"sites {missing} are named in [transfer] but the data has no rows for them",
                             where=f"study '{study.study.name}'",
                             fix=f"use sites from the domain column '{schema.domain}': {known[:20]}")
    few = [t for t in targets if counts[t] < 5]
    if few:
        raise UserInputError(f"target sites {few} have fewer than 5 rows", where=f"study '{study.study.name}'",
                             fix="diagnose needs at least 5 target rows; choose another target or add data")

    def num(v):
        v = float(v)
        return v if np.isfinite(v) else None

    outs = []
    for t in targets:
        res = streaming_shift_summary(path, schema, sources, t, progress=True)
        feats = res["features"]
        outs.append({
            "dataset": schema.name, "sources": sources, "target": t, "streamed": True,
            "n_source": res["n_source"], "n_target": res["n_target"],
            "domain_classifier": {k: (num(v) if isinstance(v, float) else v) for k, v in res["domain_classifier"].items()},
            "mmd": {k: (num(v) if isinstance(v, (float, np.floating)) else v) for k, v in res["mmd"].items()},
            # aggregates only: no means, minima or maxima, which can be one patient's value
            "features": [{"feature": r.feature, "smd": num(r.smd), "missing_source": num(r.missing_source),
                          "missing_target": num(r.missing_target), "missing_diff": num(r.missing_diff)}
                         for r in feats.itertuples()],
            "settings": {"target_rows": "all target rows (features only; labels are never read)",
                         "features": "numeric features (categorical ones are not summarised when streaming)",
                         "domain_classifier": "SGD logistic regression, held-out AUROC",
                         "mmd": "Gaussian-kernel MMD on reservoir samples"},
        })
    if as_json:
        payload = outs[0] if len(outs) == 1 else outs
        typer.echo(json.dumps(payload, indent=2, allow_nan=False))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    for o in outs:
        dc, mmd = o["domain_classifier"], o["mmd"]
        con.print(f"[bold]Shift diagnostics (streamed): {', '.join(sources)} -> {o['target']}[/bold] "
                  f"({o['dataset']}; source rows {o['n_source']}, target rows {o['n_target']}; all target rows, "
                  "target labels never read; numeric features only)")

        def f3(v):
            return "—" if v is None else f"{v:.3f}"

        con.print(f"  - domain classifier AUROC {f3(dc.get('auroc'))} (SGD on {dc.get('n_train', 0)} rows, "
                  f"held out {dc.get('n_holdout', 0)})")
        if mmd:
            con.print(f"  - MMD² {f3(mmd.get('mmd2'))}, permutation p = {f3(mmd.get('p_value'))} "
                      f"({mmd.get('n_permutations')} permutations on reservoir samples)")
        tab = Table(title="features with the largest shift (|SMD|)")
        for c in ("feature", "SMD", "missing (source)", "missing (target)", "shift"):
            tab.add_column(c, justify="right")
        for r in o["features"][:15]:
            smd = r["smd"]
            word = ("—" if smd is None else "strong" if abs(smd) > THRESHOLDS["smd_strong"]
                    else "notable" if abs(smd) > THRESHOLDS["smd_notable"] else "")
            miss = r["missing_diff"]
            if miss is not None and abs(miss) > THRESHOLDS["missing_diff_notable"]:
                word = (word + "; " if word else "") + "missingness differs"
            tab.add_row(r["feature"], f3(smd), f"{r['missing_source']:.0%}" if r["missing_source"] is not None else "—",
                        f"{r['missing_target']:.0%}" if r["missing_target"] is not None else "—", word)
        con.print(tab)


keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys for the service (`healthtransfer serve keys add`).")
# `serve BUNDLE` takes a positional argument, so click cannot also hold a `keys` sub-command
# under it; main() routes `serve keys ...` here instead.
app.add_typer(keys_app, name="serve-keys", hidden=True)


@app.command()
def serve(
    bundle: Path = typer.Argument(..., help="Bundle folder (OUT/bundle/<target> from `run` or `demo`)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; loopback by default."),
    port: int = typer.Option(8000, help="Port."),
    api_keys: Optional[Path] = typer.Option(None, "--api-keys", help="Key file from `healthtransfer serve keys add` (required unless --no-auth)."),
    audit_db: Optional[str] = typer.Option(None, "--audit-db", help="SQLite path or SQLAlchemy URL for the audit log."),
    trust: Optional[Path] = typer.Option(None, "--trust", help="Public key (PEM) or folder of keys whose signed bundles are served."),
    allow_unsigned: bool = typer.Option(False, "--allow-unsigned", help="Serve a bundle that is unsigned or signed by an unknown key."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No API keys: predict only, loopback only (local trials)."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="Host header to accept besides localhost/127.0.0.1/::1 (repeatable)."),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="uvicorn worker processes (all share the audit log)."),
    audit_sync: str = typer.Option("normal", "--audit-sync", help="SQLite audit durability: normal (WAL, survives a service crash) or full (fsync every commit, survives power loss)."),
):
    """Start the decision-support service for BUNDLE (API, web page, audit log, drift monitor).

    Closed by default: create API keys first with `healthtransfer serve keys add KEYFILE --id NAME
    --scope predict`, and sign the bundle (`healthtransfer bundle sign`) to serve it with --trust.
    """

    def go():
        from .serve import serve as run_server

        run_server(bundle, host=host, port=port, api_keys=api_keys, audit_db=audit_db,
                   trust=trust, allow_unsigned=allow_unsigned, no_auth=no_auth,
                   allowed_hosts=allowed_host, workers=workers, audit_sync=audit_sync)

    _guard(go)


@keys_app.command("add")
def keys_add(
    key_file: Path = typer.Argument(..., help="Key file to create or extend (stores only hashes)."),
    key_id: str = typer.Option(..., "--id", help="A name for the key, e.g. 'ward-3'."),
    scope: list[str] = typer.Option(["predict"], "--scope", help="predict and/or read (repeatable)."),
):
    """Create an API key; prints it once (only its hash is stored)."""

    def go():
        from .serve import keys_add as add

        typer.echo(add(key_file, key_id, scope))

    _guard(go)


audit_app = typer.Typer(no_args_is_help=True, help="The prediction audit log.")
app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    audit_db: str = typer.Argument(..., help="SQLite path or SQLAlchemy URL of the audit log."),
    out: Path = typer.Option(Path("audit.csv"), "--out", help="CSV file to write."),
):
    """Write the audit log to CSV."""

    def go():
        from .serve import audit_export as export

        n = export(audit_db, out)
        typer.echo(f"Wrote {n} audit records to {out}.")

    _guard(go)


bundle_app = typer.Typer(no_args_is_help=True, help="Inspect, sign or export a model bundle.")
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("inspect")
def bundle_inspect(bundle: Path = typer.Argument(..., help="Bundle folder.")):
    """Verify a bundle and print its model card and input schema."""

    def go():
        from .serve import bundle_inspect as inspect

        typer.echo(inspect(bundle))

    _guard(go)


@bundle_app.command("keygen")
def bundle_keygen(key: Path = typer.Argument(..., help="Private key file to create (mode 0600).")):
    """Create an Ed25519 signing key; its public key is written to KEY.pub.pem for other sites."""

    def go():
        from .bundle import generate_keypair

        typer.echo(f"Wrote {key} (keep it private) and {generate_keypair(key)} (share it).")

    _guard(go)


@bundle_app.command("sign")
def bundle_sign(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    key: Path = typer.Option(..., "--key", help="Private key from `healthtransfer bundle keygen`."),
):
    """Verify BUNDLE and sign its manifest (which lists every file's sha256)."""

    def go():
        from .bundle import sign_bundle

        typer.echo(f"Signed {bundle} with key {sign_bundle(bundle, key)}.")

    _guard(go)


@bundle_app.command("export")
def bundle_export(
    bundle: Path = typer.Argument(..., help="Bundle folder."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Write model.onnx beside the bundle."),
):
    """Export the bundle's model to ONNX where the model allows it."""

    def go():
        from .serve import bundle_export_onnx

        typer.echo(f"Wrote {bundle_export_onnx(bundle)}")

    _guard(go)


@app.command()
def federate(
    study_file: Path = typer.Argument(..., help="Study TOML with a [federated] table."),
    simulate: bool = typer.Option(True, "--simulate/--deploy",
                                  help="Flower simulation on this machine (default), or a real SuperLink + one "
                                       "SuperNode per site as separate processes on 127.0.0.1."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the run report (JSON) here."),
):
    """Train across sites that cannot share rows (Flower): FedAvg/FedProx, fine-tuning, DP, SecAgg+."""

    def go():
        from .federated import federate as run_federated

        res = run_federated(study_file, simulate=simulate, out=out)
        typer.echo(json.dumps(_federated_summary(res), indent=1, default=str))

    _guard(go)


def _federated_summary(res: dict) -> dict:
    keep = ("mode", "sites", "strategy", "model", "rounds", "summary", "per_site", "privacy", "events", "seconds")
    return {k: v for k, v in res.items() if k in keep} or res


def rerun_command(argv: list[str] | None) -> str:
    """The command line to paste to see a traceback: the user's own, with ``--debug``.

    >>> rerun_command(["demo", "--out", "my demo"])
    "healthtransfer --debug demo --out 'my demo'"
    """
    import shlex

    args = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug"]
    return shlex.join(["healthtransfer", "--debug", *args])


def route(argv: list[str]) -> list[str]:
    """Normalise argv before typer sees it.

    ``--debug`` is accepted anywhere (``healthtransfer demo --debug`` as well as
    ``healthtransfer --debug demo``), and ``serve keys ...`` becomes ``serve-keys ...`` (see the
    comment at ``keys_app``).

    >>> route(["demo", "--debug"])
    ['--debug', 'demo']
    """
    if "--debug" in argv:
        stop = argv.index("--") if "--" in argv else len(argv)
        if "--debug" in argv[:stop]:
            argv = ["--debug", *[a for i, a in enumerate(argv) if not (a == "--debug" and i < stop)]]
    for i, a in enumerate(argv):
        if a == "serve" and argv[i + 1: i + 2] == ["keys"]:
            return argv[:i] + ["serve-keys"] + argv[i + 2:]
        if not a.startswith("-"):
            break
    return argv


def main() -> None:  # console-script entry point
    # Keep third-party chatter (joblib, torch) off a user's terminal unless --debug.
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    _state["argv"] = sys.argv[1:]
    try:
        app(args=route(sys.argv[1:]))
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
