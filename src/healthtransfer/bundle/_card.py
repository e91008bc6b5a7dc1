"""The model card: a Markdown page a clinician or reviewer can read without the code.

Sections follow Mitchell et al. (2019), shortened: model details, intended use, data,
performance (overall, per site, per subgroup; with confidence intervals where the metrics
carry them), input schema and limits. Only aggregates appear: counts, shares, metrics.

Example
-------
>>> md = render_card(schema={"features": [], "label": "y", "classes": ["0", "1"]},
...                  training={"method": "pooled_lr", "dataset": "toy", "domains": {"a": 10}},
...                  metrics={"overall": {"auroc": {"value": 0.8, "ci": [0.7, 0.9]}}},
...                  version="0.1.0")
>>> "0.800 (95% CI 0.700 to 0.900)" in md
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_card", "format_metric"]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_leaf(v) -> bool:
    """A metric value: a number, or a dict with a point estimate (and maybe a CI)."""
    if _is_number(v) or v is None:
        return True
    return isinstance(v, dict) and any(k in v for k in ("value", "estimate", "mean", "point"))


def format_metric(v: Any) -> str:
    if v is None:
        return "n/a"
    if _is_number(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    if isinstance(v, dict):
        point = next((v[k] for k in ("value", "estimate", "mean", "point") if k in v), None)
        lo = v.get("ci_low", v.get("lo", v.get("lower")))
        hi = v.get("ci_high", v.get("hi", v.get("upper")))
        if "ci" in v and isinstance(v["ci"], (list, tuple)) and len(v["ci"]) == 2:
            lo, hi = v["ci"]
        text = format_metric(point)
        if _is_number(lo) and _is_number(hi):
            level = v.get("level", 0.95)
            text += f" ({round(100 * level)}% CI {lo:.3f} to {hi:.3f})"
        if isinstance(v.get("spread"), (list, tuple)) and len(v["spread"]) == 2:
            text += f" (range over splits {v['spread'][0]:.3f} to {v['spread'][1]:.3f}; a spread, not a CI)"
        if _is_number(v.get("noise_floor")):
            text += f" (noise floor of a calibrated model on these rows: {v['noise_floor']:.3f})"
        if "n" in v and _is_number(v["n"]):
            text += f", n={v['n']}"
        return text
    return str(v)


def _table(rows: dict[str, dict]) -> list[str]:
    """rows: name -> {metric: value} as a Markdown table."""
    cols: list[str] = []
    for r in rows.values():
        for k in r:
            if k not in cols and _is_leaf(r[k]):
                cols.append(k)
    if not cols:
        return []
    out = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        out.append(f"| {name} | " + " | ".join(format_metric(r.get(c)) for c in cols) + " |")
    return out


def _metrics_section(metrics: dict, level: int = 3) -> list[str]:
    lines: list[str] = []
    leaves = {k: v for k, v in metrics.items() if _is_leaf(v)}
    if leaves:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {format_metric(v)} |" for k, v in leaves.items()]
        lines.append("")
    for key, val in metrics.items():
        if key in leaves or not isinstance(val, dict):
            if not _is_leaf(val) and not isinstance(val, dict):
                lines += [f"{'#' * level} {key}", "", f"{val}", ""]
            continue
        title = key.replace("_", " ")
        if val and all(isinstance(v, dict) and all(_is_leaf(x) for x in v.values())
                       for v in val.values()):
            table = _table(val)
            if table:
                lines += [f"{'#' * level} {title}", "", *table, ""]
                continue
        lines += [f"{'#' * level} {title}", ""]
        lines += _metrics_section(val, min(level + 1, 6))
    return lines


def render_card(*, schema: dict, training: dict, metrics: dict, version: str,
                reference: dict | None = None, extra: dict | None = None) -> str:
    extra = extra or {}
    method = training.get("method", "?")
    lines = [
        f"# Model card: {training.get('dataset', 'model')} / {method}",
        "",
        "## Model details",
        "",
        f"- Method: `{method}` ({training.get('model_class', '')})",
        f"- Written by healthtransfer {version} on {training.get('created', '?')}",
        f"- Predicts: `{schema.get('label')}` (classes {', '.join(map(str, schema.get('classes', [])))};"
        f" positive class `{schema.get('positive')}`)",
        f"- Inputs: {len(schema.get('features', []))} (see *Input schema*)"
        + "".join(f"; `{f['name']}` is a required existing score: {f.get('description') or ''}"
                  for f in schema.get("features", []) if f.get("required")),
        "",
        "## Intended use",
        "",
        extra.get("intended_use")
        or ("Research and decision support under clinical supervision, for patients like those in "
            "the training sites (see *Data*). The output is a risk estimate, not a diagnosis. It "
            "is not validated for use outside these populations or for individual treatment "
            "decisions without local validation."),
        "",
        "## Data",
        "",
        f"- Dataset: {training.get('dataset', '?')}"
        + (f" ({training['license']})" if training.get("license") else ""),
    ]
    desc = training.get("description") or {}
    if desc.get("text"):
        lines.append(f"- Training (from what the fit used): {desc['text']}")
    if training.get("sources"):
        lines.append(f"- Source sites: {', '.join(map(str, training['sources']))}")
    if training.get("target"):
        lines.append(f"- Target site: {training['target']}")
    doms = training.get("domains", {})
    if doms:
        lines.append("- Training rows per site: " + ", ".join(f"{k}: {v}" for k, v in doms.items()))
    if training.get("n_rows") is not None:
        lines.append(f"- Training rows in total: {training['n_rows']}")
    fps = training.get("fingerprints", {})
    for k, v in fps.items():
        lines.append(f"- Fingerprint ({k}): `{v[:16]}…`")
    if training.get("citation"):
        lines.append(f"- Citation: {training['citation']}")
    lines += ["", "## Performance", ""]
    if metrics:
        lines += _metrics_section(metrics)
    else:
        lines += ["No held-out metrics were recorded with this bundle.", ""]
    lines += ["## Input schema", "",
              "| input | type | unit | allowed range | categories | missing in training | required |",
              "|---|---|---|---|---|---|---|"]
    ref = (reference or {}).get("features", {})
    for f in schema.get("features", []):
        rng = f.get("range")
        miss = ref.get(f["name"], {}).get("missing_share")
        lines.append(
            f"| {f['name']} | {f['kind']} | {f.get('unit') or ''} | "
            f"{'' if rng is None else f'{rng[0]:g} to {rng[1]:g}'} | "
            f"{', '.join(map(str, f.get('categories') or []))} | "
            f"{'' if miss is None else f'{100 * miss:.0f}%'} | {'yes' if f.get('required') else 'no'} |")
    lines += [
        "",
        "## Limits",
        "",
        "- Performance was measured on the target site's held-out rows only; other populations, "
        "measurement devices or coding practices may change it (the service's drift endpoint "
        "monitors incoming data against the training reference).",
        "- Inputs outside the central range of the training data (1st-99th percentile, "
        "narrower for small samples) are flagged; predictions for them are extrapolations.",
        "- Missing inputs are imputed with training medians (or a 'missing' category); many "
        "missing inputs make the estimate less reliable.",
        "- Subgroup results with few patients have wide intervals; check them before relying "
        "on the model for a subgroup.",
    ]
    for item in extra.get("limits", []) or []:
        lines.append(f"- {item}")
    lines.append("")
    return "\n".join(lines)
