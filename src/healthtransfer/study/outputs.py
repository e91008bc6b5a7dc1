"""Write a finalised study: one bundle per target, the deployment check, ``results.json``,
``report.html`` and ``model_card.md``. Each writer reads the same
:class:`~healthtransfer.study.run.StudyResult` (with its ``finals``); none computes results.

Layout of ``OUT/``::

    report.html, results.json, model_card.md
    bundle/<target>/          one deployable bundle per target (``healthtransfer serve OUT/bundle/<target>``)

Target names are used as folder names with anything but letters, digits, ``.``, ``_`` and
``-`` replaced by ``_``. Everything is staged and moved into ``OUT`` only once every file
exists and every bundle has passed its deployment check.

Example
-------
>>> from healthtransfer.study.outputs import bundle_folder
>>> bundle_folder("South West")
'South_West'
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from ..errors import UserInputError
from .final import PICKED_WITH_TEST_LABELS, deployment_check, finalise

__all__ = ["bundle_folder", "write_study_outputs"]


def bundle_folder(target: str) -> str:
    """The folder name of a target's bundle under ``OUT/bundle/``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(target)).strip(".") or "target"


def _bundle_metrics(result, fm) -> dict:
    """What the card and the service show: this object's evaluation, the seed spread beside it
    (labelled as such), and the comparison with test-label-picked references marked."""
    ev = fm.evaluation
    spread = {m: {"value": v["mean"], "spread": [v["min"], v["max"]], "std": v["std"]}
              for m, v in fm.seed_spread.items() if isinstance(v, dict)}
    comp = next((r for r in result.selection_summary
                 if r["target"] == fm.target and r["n_labeled"] == fm.n_labeled), {})
    comparison = {}
    if comp:
        comparison = {
            "selection procedure, mean AUROC over seeds": comp["selected_auroc"],
            f"best baseline AUROC ({comp['best_baseline']}; picked with test labels)": comp["best_baseline_auroc"],
            f"oracle AUROC ({comp['oracle']}; picked with test labels)": comp["oracle_auroc"],
            "paired AUROC difference vs that baseline": comp.get("vs_best_baseline", {}).get("mean_delta"),
            "win rate vs that baseline": comp.get("vs_best_baseline", {}).get("win_rate"),
        }
    return {
        "target": fm.target, "n_labeled": fm.n_labeled, "candidate": fm.candidate,
        "evaluated_on": ev.get("rows"),
        # read by the card (a table) and by the service's page (overall.auroc with its interval)
        "overall": {k: v for k, v in ev.items() if isinstance(v, dict) and "value" in v},
        "seed_spread": {f"selection over {fm.seed_spread.get('seeds', 0)} splits (mean; range)": spread} if spread else {},
        "comparison": comparison,
        "subgroups": [r for r in result.subgroups.to_dict(orient="records") if r["target"] == fm.target],
        "calibration": fm.calibration_table,
    }


def _write_target_bundle(result, fm, path: Path) -> None:
    from ..bundle import write_bundle

    write_bundle(path, model=fm.model, preprocessor=fm.preprocessor, dataset=result.dataset,
                 training_frame=fm.training_frame, method=fm.method, metrics=_bundle_metrics(result, fm),
                 reference_input=fm.reference_input, training_description=fm.training,
                 extra={"sources": list(result.study.transfer.sources), "target": fm.target,
                        "candidate": fm.candidate, "calibration": fm.calibration})


def write_checked_bundles(result, root: Path, *, bundle: bool, write, check, what: str = "its model") -> None:
    """Write each target's final model with ``write(fm, path)`` under ``root``, prove it with
    ``check(fm, path)`` (the deployment check) and keep the checks on ``result.deployment``.

    The one rule of both writers (classification and outcome studies): a failed check raises,
    so the caller's staging folder is discarded and nothing is written."""
    result.deployment = {}
    for t, fm in result.finals.items():
        path = root / bundle_folder(t)
        write(fm, path)
        chk = check(fm, path)
        chk["bundle_dir"] = f"bundle/{bundle_folder(t)}" if bundle else None
        result.deployment[t] = chk
        if not chk["passed"]:
            raise UserInputError(
                f"the bundle written for target '{t}' does not reproduce {what} on the same {chk['n_rows']} rows "
                f"(largest difference {chk['max_abs_difference']:.2e})", where="deployment check",
                fix=f"report this as a bug with the method name ('{getattr(fm, 'candidate', None) or fm.method}'); "
                "nothing was written")


def write_study_outputs(result, out: str | Path, *, bundle: bool = True) -> Path:
    """Finalise ``result`` if needed, then write everything; returns the report's path.

    The deployment check runs in every run: without ``bundle`` the bundles are written to a
    temporary folder, checked and discarded. A failed check stops the run (nothing is written).
    """
    from ..reports._io import atomic_output_dir
    from ..reports.study_report import build_report, model_card, results_payload

    out = Path(out)
    if not result.finals and result.selections:
        finalise(result)
    with atomic_output_dir(out) as stage, tempfile.TemporaryDirectory(prefix="ht-bundles-") as scratch:
        write_checked_bundles(result, stage / "bundle" if bundle else Path(scratch), bundle=bundle,
                              write=lambda fm, path: _write_target_bundle(result, fm, path),
                              check=lambda fm, path: deployment_check(fm, path, result.dataset),
                              what="the reported metrics")
        payload = results_payload(result)
        (stage / "results.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
        (stage / "report.html").write_text(build_report(result), encoding="utf-8")
        if result.finals:
            (stage / "model_card.md").write_text(model_card(result), encoding="utf-8")
    return out / "report.html"
