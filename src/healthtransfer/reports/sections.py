"""Report sections that answer the reviewer's questions: which model to use at the target and
why (selection, recommendation), how well it will do with what uncertainty (calibration,
label efficiency), and for whom it does worse (subgroups), plus what drives it (explanations).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation.calibration import reliability_curve
from ..evaluation.metrics import score
from .html import Section, esc, figure_to_img, table_html

__all__ = [
    "selection_section", "calibration_section",
    "subgroup_section", "explanation_section", "recommendation_section", "label_efficiency_plot",
    "auroc_vs_nt_plot",
    "final_model_section",
]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


BASELINES = ("source_gbm", "source_lr", "target_gbm", "pooled_gbm", "pooled_lr")


def auroc_vs_nt_plot(df: pd.DataFrame, pick, caption: str, size=(4.8, 3.8)) -> str:
    """Target AUROC against n_t per target, one line (mean ± 1 s.d. over splits) per method that
    ``pick(rows of one target) -> [(method, label, style)]`` returns; a method run at one budget
    only is a dashed level. The one drawing of this curve (results and selection sections)."""
    plt = _plt()
    targets = list(dict.fromkeys(df["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(size[0] * len(targets), size[1]), squeeze=False)
    for ax, t in zip(axes[0], targets):
        g = df[df["target"] == t]
        for m, label, style in pick(g):
            stats = g[g["method"] == m].groupby("n_labeled")["auroc"].agg(["mean", "std", "count"])
            if len(stats) == 1:
                ax.axhline(stats["mean"].iloc[0], ls="--", lw=1, label=label)
                continue
            half = stats["std"].fillna(0)  # spread over splits, not a CI of the mean
            line = ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=label, **style)[0]
            ax.fill_between(stats.index, stats["mean"] - half, stats["mean"] + half, alpha=0.12, color=line.get_color())
        ax.set_title(f"target: {t}")
        ax.set_xlabel("labelled target rows (n_t)")
        ax.set_ylabel("target-test AUROC (mean ± 1 s.d. over splits)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return figure_to_img(fig, caption)


def label_efficiency_plot(df: pd.DataFrame) -> str:
    """Target AUROC against n_t: baselines, each family's best method and the selected model."""
    def pick(g):
        means = g.groupby("method")["auroc"].mean()
        out = [(m, m, dict(lw=1.2)) for m in BASELINES if m in means.index]
        for fam in ("instance", "feature", "model", "relation"):
            fam_means = g[g["family"] == fam].groupby("method")["auroc"].mean()
            fam_means = fam_means[fam_means.index != "selected"]
            if len(fam_means):  # each family's best by mean test AUROC: picked with test labels
                out.append((fam_means.idxmax(), f"{fam_means.idxmax()} (best*)", dict(lw=1.2)))
        if "selected" in means.index:
            out.append(("selected", "selected", dict(lw=2.6, color="black")))
        return out

    return auroc_vs_nt_plot(df, pick, "Label efficiency: target AUROC against n_t. best* = each family's best method "
                            "by mean test AUROC, picked with test labels (a reference, not a choice); bands: ± 1 s.d. "
                            "over splits")


def selection_section(result, summary: list[dict]) -> Section:
    if not summary:
        return Section("Model selection", "<p>Selection was switched off for this study.</p>")
    rows = []
    for r in summary:
        chosen = ", ".join(f"{k} ×{v}" for k, v in sorted(r["chosen"].items(), key=lambda kv: -kv[1])[:3])
        rows.append({"target": r["target"], "n_t": r["n_labeled"], "selected AUROC": r["selected_auroc"],
                     "oracle AUROC*": r["oracle_auroc"], "oracle*": r["oracle"],
                     "best baseline AUROC*": r["best_baseline_auroc"], "best baseline*": r["best_baseline"],
                     "Δ vs baseline": r.get("vs_best_baseline", {}).get("mean_delta"),
                     "win-rate": r.get("vs_best_baseline", {}).get("win_rate"), "chosen (seeds)": chosen})
    tab = pd.DataFrame(rows).set_index("target")
    crit = pd.Series([s["criterion"] for s in result.selections]).value_counts().to_dict()
    body = (
        "<p>For every target, seed and label budget, one candidate is chosen <b>without the target's test "
        "labels</b>: with labelled target rows by cross-validation on them (<code>target_cv</code>); with none by "
        "importance-weighted validation and deep embedded validation on held-out source rows (<code>iwcv+dev</code>); "
        "reverse validation and prediction entropy are reported as heuristics only. <b>The bar</b> (the "
        "recalibrated reference score where the study has one, otherwise the best baseline chosen without labels) "
        "is a candidate of its own, and another candidate replaces it only when its paired gain on the same "
        "validation rows clears the noise of that many comparisons and it is not worse on Brier: "
        "<b>not adapting is a valid answer</b>. The oracle is the candidate with the best mean test AUROC, "
        "shown as a reference only; it could not be chosen in practice.</p>"
        f"<p class=\"note\">Criteria used: {esc(crit)}.</p>"
        + table_html(tab, caption="Selected model vs the oracle-best candidate and the best baseline (paired over "
                     "seeds). * picked with test labels: a reference, not a choice a user could have made")
        + _shipped_selection_explanations(result)
        + label_efficiency_plot(result.frame())
    )
    return Section("Model selection", body)


def _shipped_selection_explanations(result) -> str:
    """Per target, the selection behind the shipped model: every candidate against the bar, and
    why the bar was kept or replaced (the selection's own record; nothing recomputed here)."""
    from ..selection import explanation_html

    parts = []
    for target, final in (getattr(result, "finals", None) or {}).items():
        sel = next((s for s in result.selections if s["target"] == target and s["seed"] == final.seed
                    and s["n_labeled"] == final.n_labeled), None)
        if sel and sel.get("explanation"):
            parts.append(f"<h4>{esc(target)}: the selection behind the shipped model (seed {final.seed}, "
                         f"n_t = {final.n_labeled})</h4>" + explanation_html(sel["explanation"]))
    return "".join(parts)


def calibration_section(result) -> Section:
    plt = _plt()
    preds = [p for p in result.predictions if p["method"] == "selected"]
    if not preds or np.asarray(preds[0]["proba"]).ndim == 2 and np.asarray(preds[0]["proba"]).shape[1] > 2:
        return Section("Calibration", "<p>Reliability is shown for binary outcomes only.</p>")
    targets = list(dict.fromkeys(p["target"] for p in preds))
    fig, axes = plt.subplots(2, len(targets), figsize=(4.4 * len(targets), 7.6), squeeze=False)
    rows = []
    for j, t in enumerate(targets):
        ps = [p for p in preds if p["target"] == t]
        top = max(p["n_labeled"] for p in ps)
        ps = [p for p in ps if p["n_labeled"] == top]
        y = np.concatenate([p["y"] for p in ps])
        after = np.concatenate([np.asarray(p["proba"])[:, 1] for p in ps])
        before = np.concatenate([np.asarray(p["proba_uncalibrated"])[:, 1] for p in ps])
        ax = axes[0][j]
        for name, pr, style in (("before", before, "--"), ("after", after, "-")):
            mp, fr, _ = reliability_curve(y, pr)
            ax.plot(mp, fr, style, marker="o", ms=3, label=f"{name} (ECE {score(y, pr)['ece']:.3f})")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_title(f"{t}, n_t={top}: reliability")
        ax.set_xlabel("predicted risk")
        ax.set_ylabel("observed rate")
        ax.legend(fontsize=7)
        from sklearn.metrics import roc_curve

        ax = axes[1][j]
        for p in ps[:10]:
            fpr, tpr, _ = roc_curve(p["y"], np.asarray(p["proba"])[:, 1])
            ax.plot(fpr, tpr, lw=0.8, alpha=0.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_title(f"{t}, n_t={top}: ROC per seed")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        kinds = pd.Series([s["calibration"] for s in result.selections if s["target"] == t and s["n_labeled"] == top]).value_counts()
        rows.append({"target": t, "n_t": top, "ECE before": score(y, before)["ece"], "ECE after": score(y, after)["ece"],
                     "Brier before": score(y, before)["brier"], "Brier after": score(y, after)["brier"],
                     "recalibration": ", ".join(f"{k} ×{v}" for k, v in kinds.items())})
    body = (
        "<p>With labelled target rows the selected model is recalibrated on its <i>out-of-fold</i> predictions for "
        "them (intercept only under 20 rows or 5 per class, Platt scaling up to 200, isotonic beyond); without labels, "
        "probabilities are adjusted to the estimated target class prior only when label shift is detected and the "
        "covariate shift is mild enough for that estimate to be trusted.</p>"
        + table_html(pd.DataFrame(rows).set_index("target"), caption="Calibration of the selected model at the largest budget (test rows pooled over seeds)")
        + figure_to_img(fig, "Reliability diagrams and ROC curves of the selected model")
    )
    return Section("Calibration", body)


def subgroup_section(result, table: pd.DataFrame) -> Section:
    if table.empty:
        return Section("Subgroups", "<p>No subgroup had enough rows with both outcomes to be scored.</p>")
    flagged = table[table["largest_gap"]]
    lines = "".join(
        f"<li class=\"warn\">{esc(r.target)}: {esc(r.column)} = {esc(r.level)} has the lowest AUROC "
        f"({r.auroc:.3f}; {r.spread_low:.3f} to {r.spread_high:.3f} over splits)</li>" for r in flagged.itertuples())
    view = table.drop(columns=["largest_gap"]).set_index("target")
    return Section("Subgroups", "<p>Selected model at the largest budget, per subgroup of the target's test rows "
                   "(mean over seeds, and its range over splits: a spread, not a CI); numeric columns in tertiles. Gaps of 0.05 AUROC or more are flagged.</p>"
                   + (f"<ul>{lines}</ul>" if lines else "<p class=\"good\">No subgroup gap of 0.05 AUROC or more.</p>")
                   + table_html(view))


def explanation_section(finals: dict) -> Section:
    parts = []
    plt = _plt()
    for t, fm in finals.items():
        if fm is None or fm.importance is None:
            continue
        imp = fm.importance.sort_values(fm.importance.columns[-1], ascending=False)
        fig, ax = plt.subplots(figsize=(6, 0.28 * len(imp) + 1.2))
        pos = np.arange(len(imp))
        for k, col in enumerate(imp.columns):
            ax.barh(pos + 0.38 * k, imp[col], height=0.38, label=col)
        ax.set_yticks(pos + 0.19, imp.index)
        ax.invert_yaxis()
        ax.set_xlabel("AUROC drop when the feature is shuffled")
        ax.legend(fontsize=7)
        ax.set_title(f"{fm.candidate} → {t}")
        rel = fm.relations.head(6)
        parts.append(f"<h3>Target: {esc(t)}</h3>" + figure_to_img(fig, f"Permutation importance for {t}")
                     + table_html(rel, caption="How each feature relates to the outcome at the source and the target "
                                  "(univariate AUROC; 0.5 = unrelated, below 0.5 = inverse); largest changes first"))
    if not parts:
        return Section("Explanations", "<p>Explanations are computed for binary outcomes only.</p>")
    return Section("Explanations", "<p>Global importance of each harmonised feature for the deployable model "
                   "(permutation importance at the source and on the target's test rows), and the feature–outcome "
                   "relations that changed most between the sites.</p>" + "".join(parts))


def recommendation_section(result, finals: dict, summary: list[dict]) -> Section:
    items = []
    for t, fm in finals.items():
        rec = fm.evidence
        srow = next((r for r in summary if r["target"] == t and r["n_labeled"] == rec["n_labeled"]), {})
        vs = srow.get("vs_best_baseline", {})
        verdict = ("adapt with <b>{}</b>".format(esc(rec["candidate"])) if rec["adapts"]
                   else "do <b>not</b> adapt: use the baseline <b>{}</b>".format(esc(rec["candidate"])))
        shift = result.shift.get(t)
        shift_line = f" Shift: {esc(shift.summary[0])}" if shift is not None and getattr(shift, "summary", None) else ""
        items.append(
            f"<li><b>{esc(t)}</b> (n_t = {rec['n_labeled']}): {verdict}, chosen in {rec['times_chosen']} of "
            f"{rec['seeds']} seeds by {esc(rec['criterion'])}. Expected target AUROC {rec['selected_auroc']:.3f} "
            f"(best baseline* {esc(rec['best_baseline'])} {rec['best_baseline_auroc']:.3f}; paired Δ "
            f"{vs.get('mean_delta', float('nan')):+.3f}, win-rate {vs.get('win_rate', float('nan')):.0%}; "
            f"oracle* {esc(rec['oracle'])} {rec['oracle_auroc']:.3f}).{shift_line}</li>")
    note = "<p class=\"note\">* picked with test labels: a reference, not a choice a user could have made.</p>"
    return Section("Recommendation", "<ul>" + "".join(items) + "</ul>" + note if items
                   else "<p>No recommendation: selection was off.</p>")


def final_model_section(result) -> Section:
    """The model each bundle ships, its evaluation as that object, and the deployment check."""
    rows, checks = [], []
    for t, fm in result.finals.items():
        ev, sp = fm.evaluation, fm.seed_spread.get("auroc", {})
        get = lambda m, k, d=None: ev.get(m, {}).get(k, d)  # noqa: E731 (multi-class: no interval)
        rows.append({"target": t, "shipped model": fm.candidate, "calibration": fm.calibration,
                     "inputs": len(fm.inputs), "required score": (fm.reference_input or {}).get("name", "—"),
                     "AUROC": get("auroc", "value"), "AUROC 95% CI (target sample)": _interval(get("auroc", "ci", [None, None])),
                     "Brier": get("brier", "value"), "Brier 95% CI (target sample)": _interval(get("brier", "ci", [None, None])),
                     "ECE": get("ece", "value"), "ECE noise floor": get("ece", "noise_floor"),
                     "test rows": get("auroc", "n"),
                     "selection over splits: AUROC range": _interval([sp.get("min"), sp.get("max")])})
        chk = result.deployment.get(t)
        if chk:
            checks.append({"target": t, "bundle": chk.get("bundle_dir") or "(temporary)", "rows": chk["n_rows"],
                           **{f"{k} reported": v for k, v in chk["reported"].items()},
                           **{f"{k} bundle": v for k, v in chk["bundle"].items()},
                           "max |difference|": f"{chk['max_abs_difference']:.1e}",
                           "result": "passed" if chk["passed"] else "FAILED"})
    training = "".join(f"<li><b>{esc(t)}</b>: <code>{esc(fm.candidate)}</code>, {esc(fm.training['text'])}</li>"
                       for t, fm in result.finals.items())
    body = (
        "<p>Per target, the model the bundle ships: the recommended candidate exactly as one seed of the run "
        "fitted, calibrated and scored it, on that seed's held-out target test rows.</p>"
        "<p><b>Target-sample interval:</b> how well this shipped model does at this site, from a BCa bootstrap over "
        "the target patients it was scored on; only more target patients narrow it, more seeds do not. "
        "<b>Spread over splits:</b> how much the selection procedure's result moves when the same target patients "
        "are split differently; it is a range, not a confidence interval.</p>"
        + table_html(pd.DataFrame(rows).set_index("target"), digits=3, caption="Shipped model per target")
        + f"<ul>{training}</ul>"
        + "<p><b>Deployment check</b> (every run): each bundle is loaded back from disk by the loader the service "
        "uses and scored on the same held-out rows; its AUROC, Brier and ECE must equal the reported ones within "
        "1e-9.</p>"
        + (table_html(pd.DataFrame(checks).set_index("target"), digits=6, caption="Deployment check") if checks
           else "<p>No bundle was checked.</p>")
    )
    return Section("Shipped models", body)


def _interval(ci) -> str:
    lo, hi = ci
    return "—" if lo is None or hi is None or not np.isfinite([lo, hi]).all() else f"{lo:.3f} to {hi:.3f}"
