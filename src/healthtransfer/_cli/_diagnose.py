"""``healthtransfer diagnose``: how each target differs from the sources, on the pool of seed 0 or
streamed from Parquet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._app import _guard, app
from ._data import _stream_inputs


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
        from ..data.splits import target_split
        from ..shift import diagnose_study_cli
        from ..study import load_study
        from ..study.run import check_study_data, load_study_data, targets_of

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

    from ..data.streaming import streaming_shift_summary, streaming_site_counts
    from ..errors import UserInputError
    from ..shift._summary import THRESHOLDS
    from ..study.run import targets_of

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
