"""``healthtransfer data inspect``: the harmonisation report, in memory or streamed from Parquet,
and the checks a ``--stream`` command makes of its study (shared with ``diagnose --stream``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._app import _guard, app

data_app = typer.Typer(no_args_is_help=True, help="Inspect built-in or study datasets.")
app.add_typer(data_app, name="data")


_STREAM_FIX = ("under [data], set `path` to a Parquet file or a folder of Parquet files and `schema` to a "
               "schema TOML (see healthtransfer/data/schemas/uci_heart.toml), or drop --stream")


def _stream_inputs(study_file: Path):
    """(study, Parquet path, schema) for a ``--stream`` command, with the schema's domain and
    label set from the study and its features restricted to the study's ``features``."""
    from ..data.schema import FeatureSpec, load_schema
    from ..data.streaming import _dataset
    from ..errors import UserInputError
    from ..study import load_study

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
        from ..data import load_dataset
        from ..errors import UserInputError
        from ..study import load_study
        from ..study.run import load_study_data

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
    from ..data.streaming import streaming_harmonisation_report

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
