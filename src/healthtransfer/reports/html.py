"""The study report: one self-contained HTML file (plots embedded as PNG, no CDN, no script).

A report is a list of :class:`Section` objects; each stage of the flow contributes its own
sections (harmonisation, results, later shift and selection), and :func:`render` wraps
them in one page. Every value shown is escaped; only aggregate numbers are shown.

Example
-------
>>> page = render("Demo", [Section("Hello", "<p>world</p>")], footer={"version": "0.1"})
>>> "<h2 id=\\"hello\\">Hello</h2>" in page
True
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

__all__ = ["Section", "render", "figure_to_img", "table_html", "esc"]


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


@dataclass
class Section:
    title: str
    body: str  # already-escaped HTML
    anchor: str | None = None

    @property
    def id(self) -> str:
        return self.anchor or re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def figure_to_img(fig, alt: str, width: int | None = None) -> str:
    """Render a matplotlib figure to an embedded PNG ``<img>`` tag and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    w = f' width="{int(width)}"' if width else ""
    return f'<img class="plot" alt="{esc(alt)}"{w} src="data:image/png;base64,{data}">'


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return esc(v)


def table_html(df: pd.DataFrame, *, digits: int = 3, highlight_max: Iterable[str] = (), caption: str | None = None,
               index: bool = True) -> str:
    """A plain HTML table; cells of ``highlight_max`` columns are bold where they are the max."""
    cols = list(df.columns)
    best = {c: df[c].max() for c in highlight_max if c in df}
    head = "".join(f"<th>{esc(c)}</th>" for c in ([df.index.name or ""] if index else []) + cols)
    rows = []
    for idx, r in df.iterrows():
        cells = [f"<th>{esc(idx)}</th>"] if index else []
        for c in cols:
            v = r[c]
            s = _fmt(v, digits) if not isinstance(v, str) else esc(v)
            if c in best and isinstance(v, (int, float, np.floating)) and np.isfinite(v) and v == best[c]:
                s = f"<b>{s}</b>"
            cells.append(f"<td>{s}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f'<table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2733;background:#f6f8fa}
header{background:#0b4f6c;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:1.6em} header p{margin:4px 0 0;opacity:.85}
nav{padding:8px 32px;background:#e6eef3;font-size:.9em} nav a{margin-right:14px;color:#0b4f6c}
main{padding:8px 32px 32px;max-width:1200px}
section{background:#fff;border:1px solid #d8e0e6;border-radius:6px;padding:12px 20px;margin:16px 0}
h2{color:#0b4f6c;margin-top:6px}
table{border-collapse:collapse;margin:8px 0;font-size:.88em}
th,td{border:1px solid #d8e0e6;padding:3px 8px;text-align:right} th{background:#f0f4f7}
tbody th{text-align:left} caption{text-align:left;font-weight:600;padding:4px 0}
.plot{max-width:100%;height:auto;border:1px solid #eee}
.note{color:#51606e;font-size:.9em} .warn{color:#8a4b00} .good{color:#17643a}
footer{font-size:.8em;color:#51606e;padding:0 32px 24px} code{background:#eef2f5;padding:0 3px}
"""


def render(title: str, sections: list[Section], *, subtitle: str = "", footer: dict[str, Any] | None = None) -> str:
    nav = "".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="sec-{s.id}"><h2 id="{s.id}">{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    foot = ""
    if footer:
        items = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in footer.items())
        foot = f'<footer id="reproducibility"><h3>Reproducibility</h3><ul>{items}</ul></footer>'
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{_CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main>{foot}</body></html>"
    )
