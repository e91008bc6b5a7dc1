"""Render a selection's explanation (``Selection.explanation``, plain data) for a report.

The report owns its layout; this is the one small hook it can call to show, for one
(target, seed, budget), which candidates were compared with the bar, on what evidence, and why
the bar was or was not kept.

>>> html = explanation_html({"bar": "source_lr", "bar_kind": "best baseline", "criterion": "target_cv",
...     "chosen": "source_lr", "weights": {"source_lr": 1.0}, "threshold_se": 2.1, "min_gain": 0.01,
...     "candidates": [], "why_not_bar": None})
>>> "source_lr" in html
True
"""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["explanation_html"]


def _num(x, fmt):
    return "—" if x is None else format(x, fmt)


def explanation_html(explanation: dict[str, Any]) -> str:
    """A short paragraph and a table: each candidate's paired gain over the bar, its standard
    error, the lower bound the rule compares with zero, the Brier difference and the verdict."""
    e = explanation
    if not e:
        return ""
    weights = ", ".join(f"{escape(k)} {v:.2f}" for k, v in e.get("weights", {}).items())
    z = e.get("threshold_se")
    head = (f"<p>The bar: <b>{escape(str(e['bar']))}</b> ({escape(str(e.get('bar_kind', '')))}). "
            f"Criterion: {escape(str(e['criterion']))}"
            + (f"; a challenger must beat the bar by more than {z:.2f} standard errors and {e.get('min_gain', 0):g} "
               "AUROC, with a Brier score not worse beyond noise" if z is not None else "")
            + f". Shipped: {weights}. "
            + (f"Why not the bar: {escape(e['why_not_bar'])}." if e.get("why_not_bar") else "The bar was kept.")
            + "</p>")
    rows = "".join(
        f"<tr><td>{escape(r['name'])}</td><td>{escape(r['family'])}</td><td>{_num(r['score'], '.3f')}</td>"
        f"<td>{_num(r['gain'], '+.3f')}</td><td>{_num(r['se'], '.3f')}</td><td>{_num(r['lower'], '+.3f')}</td>"
        f"<td>{_num(r['brier_diff'], '+.4f')}</td><td>{escape(r['verdict'])}</td></tr>"
        for r in e.get("candidates", []))
    if not rows:
        return head
    return (head + "<table><thead><tr><th>candidate</th><th>family</th><th>score</th><th>gain vs bar</th>"
            "<th>se</th><th>lower bound</th><th>Brier − bar</th><th>verdict</th></tr></thead><tbody>"
            + rows + "</tbody></table>")
