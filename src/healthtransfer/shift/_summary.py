"""Plain-language summary, HTML section and terminal text of a :class:`ShiftReport`.

Thresholds (in :data:`THRESHOLDS`, also written into every report):

- per feature: |SMD| > 0.2 is *notable*, > 0.5 *strong*; Cramér's V > 0.1 notable, > 0.25
  strong (the correlation-scale equivalents of SMD 0.2 and 0.5); a feature *differs* when it
  is notable and its BH q-value is < 0.05;
- domain-classifier AUROC (only when its permutation p < 0.05, else "no detectable
  covariate shift"): < 0.6 slight, < 0.7 moderate, < 0.8 marked, otherwise strong;
- missingness: a difference of more than 20 percentage points between sites is reported;
- importance weights: an effective sample below 10% of the source rows is flagged as too few
  for reweighting to be reliable;
- label shift: reported as a shift when the bootstrap CI of the target prior excludes the
  source prior.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..reports.html import Section, esc, figure_to_img, table_html

__all__ = ["THRESHOLDS", "summarise", "sections", "to_text", "auroc_band"]

THRESHOLDS = {
    "smd_notable": 0.2,
    "smd_strong": 0.5,
    "cramers_v_notable": 0.1,
    "cramers_v_strong": 0.25,
    "alpha": 0.05,
    "auroc_bands": [[0.6, "slight"], [0.7, "moderate"], [0.8, "marked"], [1.01, "strong"]],
    "missing_diff_notable": 0.2,
    "ess_fraction_low": 0.1,
}


def auroc_band(auc: float) -> str:
    for upper, name in THRESHOLDS["auroc_bands"]:
        if auc < upper:
            return name
    return "strong"


def _fmt_p(p: float, floor: float | None = None) -> str:
    if p is None or not np.isfinite(p):
        return "p n/a"
    if floor is not None and np.isfinite(floor) and p <= floor + 1e-12:
        return "p < 0.01" if floor < 0.01 else f"p ≤ {floor:.2g}"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}"


def _names(items: list[str], limit: int = 4) -> str:
    items = list(items)
    if len(items) <= limit:
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""
    return ", ".join(items[:limit]) + f" and {len(items) - limit} more"


def _level(row) -> str:
    t = THRESHOLDS
    if row["kind"] == "categorical":
        notable, strong = t["cramers_v_notable"], t["cramers_v_strong"]
    else:
        notable, strong = t["smd_notable"], t["smd_strong"]
    e = row["effect"]
    if not np.isfinite(e):
        return ""
    return "strong" if e > strong else "notable" if e > notable else ""


def differing(features: pd.DataFrame) -> pd.DataFrame:
    """Rows whose effect is notable and whose q-value is < alpha, largest effect first."""
    if features.empty:
        return features
    lv = features.apply(_level, axis=1)
    keep = (lv != "") & (features["q_value"] < THRESHOLDS["alpha"])
    return features[keep].sort_values("effect", ascending=False)


def _src_label(rep) -> str:
    return rep.sources[0] if len(rep.sources) == 1 else "the sources (" + ", ".join(rep.sources) + ")"


def summarise(rep) -> list[str]:
    """Plain-language sentences (see the module docstring for the thresholds)."""
    t = THRESHOLDS
    out: list[str] = []
    dc, mmd = rep.domain_classifier, rep.mmd
    diff = differing(rep.features)
    drivers = list(dict.fromkeys(diff["feature"].tolist()))
    never_t = rep.never_measured.get(rep.target, [])
    auc, p = dc.get("auroc", np.nan), dc.get("p_value", np.nan)
    pair = f"{_src_label(rep)} → {rep.target}"
    mmd_p = _fmt_p(mmd.get("p_value", np.nan), 1 / (1 + mmd["n_permutations"]) if mmd.get("n_permutations") else None)
    stats_txt = f"domain AUROC {auc:.2f}, {_fmt_p(p, dc.get('p_value_floor'))}; MMD {mmd_p}"
    significant = (p < t["alpha"]) if np.isfinite(p) else (np.isfinite(auc) and auc >= 0.6)
    if significant:
        s = f"{auroc_band(auc).capitalize()} covariate shift for {pair} ({stats_txt})"
        why = drivers[:3] or never_t[:3]
        if why:
            s += f" driven by {_names(why)}"
        out.append(s + ".")
    else:
        out.append(f"No detectable covariate shift for {pair} ({stats_txt}).")
    shared = dc.get("auroc_shared_features")
    if shared is not None and np.isfinite(shared) and abs(shared - auc) >= 0.03:
        out.append(f"Using only the features measured at both sides, the domain AUROC is {shared:.2f}.")
    vals = dc.get("auroc_values_only")
    if vals is not None and np.isfinite(vals) and abs(vals - auc) >= 0.03:
        mm = dc.get("features_mostly_missing") or []
        out.append("On observed values alone (missingness indicators dropped"
                   + (f", and {_names(mm, 5)} left out as missing in more than half the rows at one side" if mm else "")
                   + f") the domain AUROC is {vals:.2f}.")
    n_feat = int(rep.features["feature"].nunique()) if not rep.features.empty else 0
    if n_feat:
        out.append(f"{len(drivers)} of {n_feat} features differ notably (|SMD| > {t['smd_notable']} or "
                   f"Cramér's V > {t['cramers_v_notable']}, BH q < {t['alpha']})"
                   + (f": {_names(drivers, 6)}." if drivers else "."))
    # label shift
    ls = rep.label_shift
    tp = np.asarray(ls.get("target_prior", []), float)
    if tp.size and np.all(np.isfinite(tp)):
        sp = np.asarray(ls["source_prior"], float)
        lo, hi = np.asarray(ls["ci_low"], float), np.asarray(ls["ci_high"], float)
        names = [str(c) for c in (rep.class_names or ls["classes"])]
        src_txt = "the source" if len(rep.sources) == 1 else "the sources"
        if len(tp) == 2:
            pos = "" if names[1] in ("1", "True", "1.0") else f" ({names[1]})"
            s = (f"The positive rate{pos} at the target is estimated at {tp[1]:.2f} [{lo[1]:.2f}, {hi[1]:.2f}] "
                 f"against {sp[1]:.2f} at {src_txt}")
            shifted = not (lo[1] <= sp[1] <= hi[1])
        else:
            order = np.argsort(-np.abs(tp - sp))[:3]
            parts = [f"{names[i]} {tp[i]:.2f} [{lo[i]:.2f}, {hi[i]:.2f}] vs {sp[i]:.2f}" for i in order]
            s = f"Estimated target class shares against {src_txt} (largest changes): " + "; ".join(parts)
            shifted = any(not (lo[i] <= sp[i] <= hi[i]) for i in range(len(tp)))
        s += " (label shift)." if shifted else " (no clear label shift)."
        if significant and auc >= 0.7:
            s += (" The estimate assumes p(x | y) is the same at both sites; with this much covariate shift "
                  "treat it as a rough guide.")
        out.append(s)
    # missingness
    for site in [*rep.sources, rep.target]:
        miss = rep.never_measured.get(site, [])
        if miss:
            where = "the target" if site == rep.target else f"source {site}"
            out.append(f"{len(miss)} feature{'s' if len(miss) > 1 else ''} never measured at {where} "
                       f"({_names(miss, 6)}).")
    if not rep.features.empty:
        md = rep.features[(rep.features["never_measured"] == "")
                          & (rep.features["missing_diff"].abs() > t["missing_diff_notable"])]
        if not md.empty:
            feats = list(dict.fromkeys(md.sort_values("missing_diff", key=abs, ascending=False)["feature"]))
            out.append(f"Missingness differs by more than {int(t['missing_diff_notable'] * 100)} points "
                       f"for {_names(feats, 5)}.")
    imp = rep.importance
    if imp:
        s = (f"Importance weights (target/source density ratio from the domain classifier, clipped at "
             f"{imp['clip']:g}) leave an effective sample of {imp['ess']:.0f} of {imp['n_source']} source rows "
             f"({100 * imp['ess_fraction']:.0f}%)")
        if imp["ess_fraction"] < t["ess_fraction_low"]:
            s += ", too few for reweighting to be reliable"
        out.append(s + ".")
    return out


# ----------------------------------------------------------------------------- tables
def _feature_table(rep, n: int = 15) -> pd.DataFrame:
    top = rep.top_features(n)
    if top.empty:
        return pd.DataFrame()
    multi = len(rep.sources) > 1
    df = pd.DataFrame({
        **({"source": top["source"]} if multi else {}),
        "feature": top["feature"],
        "kind": top["kind"],
        "SMD": top["smd"],
        "Cramér's V": top["cramers_v"],
        "test": top["test"],
        "q-value": top["q_value"],
        "missing (source)": top["missing_source"],
        "missing (target)": top["missing_target"],
        "shift": [_shift_word(r) for _, r in top.iterrows()],
    })
    return df.set_index("feature")


def _shift_word(r) -> str:
    if r["never_measured"]:
        return f"never measured at {r['never_measured']}"
    lv = _level(r)
    if lv and r["q_value"] < THRESHOLDS["alpha"]:
        return lv
    return (lv + " (n.s.)") if lv else ""


def _whole_table(rep) -> pd.DataFrame:
    dc, mmd, imp = rep.domain_classifier, rep.mmd, rep.importance
    rows = [
        ("domain classifier AUROC", dc.get("auroc"), dc.get("p_value"),
         f"{dc.get('n_splits')}-fold CV, {dc.get('n_permutations')} permutations"),
    ]
    if dc.get("auroc_shared_features") is not None:
        rows.append(("AUROC, features measured at both sides", dc.get("auroc_shared_features"), np.nan, ""))
    if dc.get("auroc_values_only") is not None:
        rows.append(("AUROC, observed values only", dc.get("auroc_values_only"), np.nan,
                     "no missingness indicators; features > 50% missing at one side dropped"))
    for s, a in (dc.get("auroc_by_source") or {}).items():
        rows.append((f"AUROC {s} vs target", a, np.nan, "no permutation test"))
    rows.append(("MMD² (Gaussian kernel)", mmd.get("mmd2"), mmd.get("p_value"),
                 f"bandwidth {mmd.get('bandwidth', np.nan):.2f}, {mmd.get('n_permutations')} permutations"))
    if imp:
        rows.append(("importance-weight ESS (fraction of source rows)", imp.get("ess_fraction"), np.nan,
                     f"ESS {imp.get('ess', np.nan):.0f} of {imp.get('n_source')}"))
    return pd.DataFrame(rows, columns=["statistic", "value", "p-value", "details"]).set_index("statistic")


def _label_table(rep) -> pd.DataFrame:
    ls = rep.label_shift
    names = [str(c) for c in (rep.class_names or ls.get("classes", []))]
    if not names:
        return pd.DataFrame()
    return pd.DataFrame({
        "class": names,
        "source prior": ls["source_prior"],
        "target estimate (EM)": ls["target_prior"],
        "CI low": ls["ci_low"],
        "CI high": ls["ci_high"],
        "BBSE": ls["bbse_prior"],
    }).set_index("class")


def _plot(rep):
    from matplotlib.figure import Figure

    pairs = rep.features["source"].unique().tolist() if not rep.features.empty else []
    if not pairs:
        return ""
    t = THRESHOLDS
    fig = Figure(figsize=(6.2 * len(pairs), 0.32 * min(20, rep.features["feature"].nunique()) + 1.4))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    for ax, src in zip(axes, pairs):
        f = rep.features[rep.features["source"] == src]
        key = np.where(f["never_measured"] != "", np.inf, f["effect"].fillna(-1).to_numpy())
        f = f.iloc[np.argsort(-key, kind="stable")].head(20).iloc[::-1]
        colours, vals = [], []
        for _, r in f.iterrows():
            if r["never_measured"]:
                colours.append("#7b3294")
                vals.append(0.0)
                continue
            sig = r["q_value"] < t["alpha"]
            lv = _level(r)
            colours.append("#c0392b" if sig and lv == "strong" else "#e67e22" if sig and lv else
                           "#f5b041" if sig else "#aab7b8")
            vals.append(float(r["effect"]) if np.isfinite(r["effect"]) else 0.0)
        y = np.arange(len(f))
        ax.barh(y, vals, color=colours)
        labels = [f"{r['feature']}" + (" (V)" if r["kind"] == "categorical" else "") for _, r in f.iterrows()]
        ax.set_yticks(y, labels, fontsize=8)
        for yi, (_, r) in zip(y, f.iterrows()):
            if r["never_measured"]:
                ax.text(0.01, yi, f"never measured at {r['never_measured']}", va="center", fontsize=7, color="#7b3294")
        ax.axvline(t["smd_notable"], color="#555", lw=0.8, ls=":")
        ax.axvline(t["smd_strong"], color="#555", lw=0.8, ls="--")
        ax.set_xlabel("|SMD| (numeric) or Cramér's V (categorical)")
        ax.set_title(f"{src} → {rep.target}", fontsize=10)
    from matplotlib.patches import Patch

    handles = [Patch(color="#c0392b", label="strong, q < 0.05"), Patch(color="#e67e22", label="notable, q < 0.05"),
               Patch(color="#f5b041", label="small, q < 0.05"), Patch(color="#aab7b8", label="not significant"),
               Patch(color="#7b3294", label="never measured at one site")]
    fig.legend(handles=handles,
               loc="lower center", ncol=3, fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return figure_to_img(fig, alt=f"Per-feature shift between {', '.join(pairs)} and {rep.target}")


def sections(rep) -> list[Section]:
    import re

    src = ", ".join(rep.sources)
    n_src = ", ".join(f"{k} {v}" for k, v in rep.n_source.items())
    body = [f"<h3>{esc(src)} → {esc(rep.target)}</h3>",
            f'<p class="note">Rows used: {esc(n_src)} (source); {rep.n_target} (target, labels never read).</p>',
            "<ul>" + "".join(f"<li>{esc(s)}</li>" for s in rep.summary) + "</ul>",
            table_html(_whole_table(rep), caption="Whole-table tests"),
            table_html(_label_table(rep), caption=f"Class prior: source vs estimated target "
                                                   f"({int(100 * rep.label_shift.get('level', 0.95))}% bootstrap CI)")
            if rep.label_shift.get("classes") else "",
            table_html(_feature_table(rep), caption="Features with the largest shift (BH q-values within each pair)"),
            _plot(rep),
            ('<p class="note">Thresholds: |SMD| &gt; 0.2 notable, &gt; 0.5 strong; Cramér\'s V &gt; 0.1 notable, '
             "&gt; 0.25 strong; a feature differs when notable with q &lt; 0.05. Domain AUROC (if p &lt; 0.05): "
             "&lt; 0.6 slight, &lt; 0.7 moderate, &lt; 0.8 marked, otherwise strong. The class-prior estimate uses "
             "source labels and unlabelled target rows only and assumes p(x | y) is shared.</p>")]
    anchor = "shift-diagnostics-" + re.sub(r"[^a-z0-9]+", "-", str(rep.target).lower()).strip("-")
    return [Section("Shift diagnostics", "".join(body), anchor=anchor)]


def to_text(rep) -> str:
    lines = [f"Shift diagnostics: {', '.join(rep.sources)} -> {rep.target} "
             f"({rep.dataset}; source rows {sum(rep.n_source.values())}, target rows {rep.n_target})", ""]
    lines += [f"  - {s}" for s in rep.summary]
    with pd.option_context("display.width", 140, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        lines += ["", "Whole table", _whole_table(rep).to_string()]
        lab = _label_table(rep)
        if not lab.empty:
            lines += ["", "Class prior (target estimated from unlabelled rows)", lab.to_string()]
        ft = _feature_table(rep)
        if not ft.empty:
            lines += ["", "Features with the largest shift", ft.to_string()]
    lines += ["", f"({rep.runtime_s:.1f} s)"]
    return "\n".join(lines)
