"""``healthtransfer federate``: train across sites that cannot share rows (Flower)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ._app import _guard, app


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
        from ..federated import federate as run_federated

        res = run_federated(study_file, simulate=simulate, out=out)
        typer.echo(json.dumps(_federated_summary(res), indent=1, default=str))

    _guard(go)


def _federated_summary(res: dict) -> dict:
    keep = ("mode", "sites", "strategy", "model", "rounds", "summary", "per_site", "privacy", "events", "seconds")
    return {k: v for k, v in res.items() if k in keep} or res
