"""Selection without target test labels for survival and continuous outcomes.

The classification rule (:mod:`._select`), translated. Two criteria:

- ``target_cv``: with enough labelled target rows (``min_events`` events for survival,
  ``min_rows`` rows for regression), K-fold cross-validation over them: each fold is refitted
  on the source rows, the target pool and the other labelled target rows, and scored on its
  held-out rows;
- ``iw_source_cv`` (label-free, the documented alternative to importance-weighted
  concordance on target-like rows): K-fold cross-validation over the source rows, each held-out
  source row weighted by its importance weight p_t(x)/p_s(x) (the domain classifier of
  ``iw_domain_lr``).

Scores: survival, Harrell's C (weighted) and the IPCW integrated Brier score (per row, Graf's
weights from the Kaplan-Meier censoring curve of the scored rows, over their 5-95% time
range); regression, the mean absolute error and the squared error (on the fitted scale).

Bar first. One candidate is *the bar*: the model on the study's reference score (e.g. APACHE
IV recalibrated) when there is one, else the best baseline chosen **without target labels**
(``iw_source_cv`` on the candidates that need no labels, with every target label hidden; with
target labels this is still the bar: picking the best baseline on a few dozen labels is itself
a noisy pick). The bar is returned unless a challenger beats it on the same out-of-fold rows:
its paired gain in C (MAE) must exceed ``z`` standard errors (``margin``'s one-sided error rate
split over the k challengers, Bonferroni: about 2 se for a dozen candidates) and ``min_gain``,
and its IBS (squared error) must not be worse than the bar's beyond one standard error. Among
the challengers that clear it, the highest lower bound (gain - z se) wins. With no target
labels the same test runs on ``iw_source_cv``: the bar stays unless that documented label-free
criterion shows a gain beyond noise. ``OutcomeChoice.explanation`` holds all of it as data.

Example
-------
>>> import numpy as np
>>> weighted_concordance(np.array([1., 2., 3.]), np.array([True, True, False]), np.array([3., 2., 1.]))
1.0
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["weighted_concordance", "OutcomeChoice", "select_outcome"]


def weighted_concordance(time, event, risk, weights=None) -> float:
    """Harrell's C with each comparable pair weighted by the weight of its earlier-event row
    (ties in risk count 1/2). With unit weights it is Harrell's C."""
    time, event, risk = np.asarray(time, float), np.asarray(event, bool), np.asarray(risk, float)
    w = np.ones(len(time)) if weights is None else np.asarray(weights, float)
    i = np.flatnonzero(event)
    if len(i) == 0:
        return float("nan")
    comparable = time[None, :] > time[i][:, None]  # row i had the event before row j
    conc = (risk[i][:, None] > risk[None, :]) + 0.5 * (risk[i][:, None] == risk[None, :])
    num = (w[i][:, None] * conc * comparable).sum()
    den = (w[i][:, None] * comparable).sum()
    return float(num / den) if den > 0 else float("nan")


def brier_rows(y, surv: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Each row's IPCW integrated Brier score over ``grid`` (Graf et al. 1999; the censoring
    curve is the Kaplan-Meier of the rows themselves): the mean of these is the IBS, and their
    paired differences give a standard error without a bootstrap."""
    from sksurv.nonparametric import kaplan_meier_estimator

    t, e = np.asarray(y["time"], float), np.asarray(y["event"], bool)
    if (~e).any():
        tc, gc = kaplan_meier_estimator(~e, t)
    else:
        tc, gc = np.array([t.min()]), np.array([1.0])

    def G(x, side):
        i = np.searchsorted(tc, x, side=side) - 1
        return np.maximum(np.where(i >= 0, gc[np.clip(i, 0, None)], 1.0), 0.05)

    died = e[:, None] & (t[:, None] <= grid[None, :])
    alive = t[:, None] > grid[None, :]
    B = np.where(died, surv ** 2 / G(t, "left")[:, None], 0.0) + np.where(alive, (1 - surv) ** 2 / G(grid, "right")[None, :], 0.0)
    return np.trapezoid(B, grid, axis=1) / (grid[-1] - grid[0])


@dataclass
class OutcomeChoice:
    chosen: str
    criterion: str
    bar: str | None
    scores: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    explanation: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "criterion": self.criterion, "bar": self.bar, "reason": self.reason,
                "scores": {k: float(v) for k, v in self.scores.items()}, "explanation": self.explanation}


def _score(kind, y, pred, w, rows=None):
    if rows is not None:
        y, pred, w = y[rows], pred[rows], w[rows]
    if kind == "survival":
        return weighted_concordance(y["time"], y["event"], pred, w)
    return float(-np.sum(w * np.abs(y - pred)) / np.sum(w))  # minus the MAE: higher is better


def _wmean_se(d, w) -> tuple[float, float]:
    """Weighted mean of per-row values and its standard error."""
    w = w / w.sum()
    m = float(np.sum(w * d))
    return m, float(np.sqrt(np.sum(w ** 2 * (d - m) ** 2)))


def _ibs_grid(y) -> np.ndarray:
    t = y["time"]
    lo, hi = np.quantile(t, [0.05, 0.95])
    g = np.linspace(lo, hi, 20)
    return g[g < t.max()] if hi > lo else np.array([])


def _evidence(kind, y, w, a, b, n_boot, rng) -> dict:
    """Challenger ``a`` against the bar ``b`` on the same rows: gain in the primary score (C;
    minus MAE) with a paired standard error, and the secondary loss difference (IBS; squared
    error) with its own."""
    if kind == "survival":
        n = len(y)
        idx = [rng.integers(0, n, n) for _ in range(n_boot)]
        d = np.array([_score(kind, y, a["pred"], w, i) - _score(kind, y, b["pred"], w, i) for i in idx])
        d = d[np.isfinite(d)]
        gain = _score(kind, y, a["pred"], w) - _score(kind, y, b["pred"], w)
        se = float(d.std(ddof=1)) if len(d) > 1 else np.inf
        if a.get("brier") is not None and b.get("brier") is not None:
            loss, loss_se = _wmean_se(a["brier"] - b["brier"], w)
        else:
            loss, loss_se = 0.0, np.inf
    else:
        gain, se = _wmean_se(np.abs(y - b["pred"]) - np.abs(y - a["pred"]), w)
        loss, loss_se = _wmean_se((y - a["pred"]) ** 2 - (y - b["pred"]) ** 2, w)
    return {"gain": float(gain), "se": float(se), "loss_diff": float(loss), "loss_se": float(loss_se)}


def _oof(kind, candidates, X, y, sd, rows, folds, criterion, seed, cache, extra_column, tag):
    """Out-of-fold risk scores (and survival curves on ``grid``) of every candidate on ``rows``."""
    from ..data.outcomes import masked_survival

    grid = _ibs_grid(y[rows]) if kind == "survival" else None
    out = {}
    for c in candidates:
        # the same fits at every budget of a unit: every target label hidden, or a model that reads
        # none of them scored on source rows
        reusable = tag == "label_free" or (criterion == "iw_source_cv" and c.spec.uses_target in ("none", "unlabelled"))
        key = (tag, c.name, criterion)
        if cache is not None and key in cache and reusable:
            out[c.name] = cache[key]
            continue
        pred = np.full(len(rows), np.nan)
        surv = np.full((len(rows), len(grid)), np.nan) if grid is not None and len(grid) >= 2 else None
        Xc = X if not c.spec.uses_reference else np.column_stack([X, extra_column])
        for tr, te in folds:
            hide = np.zeros(len(y), bool)
            hide[rows[te]] = True
            y_fit = masked_survival(y, ~hide) if kind == "survival" else np.where(hide, np.nan, y)
            # held-out source rows leave the fit; held-out target rows stay as unlabelled rows
            keep = ~hide if criterion == "iw_source_cv" else np.ones(len(y), bool)
            est = c.factory(random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    est.fit(Xc[keep], y_fit[keep], sample_domain=sd[keep])
                    pred[te] = est.predict(Xc[rows[te]], sample_domain=sd[rows[te]])
                    if surv is not None:
                        surv[te] = est.predict_survival(Xc[rows[te]], grid, sample_domain=sd[rows[te]])
                except (ValueError, np.linalg.LinAlgError, ArithmeticError):
                    pred[te] = np.nan
        res = {"pred": pred, "brier": None}
        if surv is not None and np.isfinite(surv).all():
            res["brier"] = brier_rows(y[rows], surv, grid)
        out[c.name] = res
        if cache is not None and reusable:
            cache[key] = res
    return out


def _fin(x):
    x = float(x)
    return x if np.isfinite(x) else None


def _stage(kind, candidates, X, y, sd, rows, folds, criterion, w_eval, *, seed, cache, extra_column, tag, bar_hint,
           margin, min_gain, n_boot):
    """Score ``candidates`` on ``rows`` by ``criterion`` and decide against the bar."""
    from ._select import _threshold

    oof = _oof(kind, candidates, X, y, sd, rows, folds, criterion, seed, cache, extra_column, tag)
    yr, wr = y[rows], w_eval[rows]
    scores = {n: (_score(kind, yr, o["pred"], wr) if np.isfinite(o["pred"]).all() else -np.inf) for n, o in oof.items()}
    ok = [c for c in candidates if np.isfinite(scores[c.name])]
    if not ok:
        return candidates[0].name, None, scores, oof, {"reason": "no candidate could be scored", "candidates": []}
    refs = [c.name for c in ok if c.spec.uses_reference]
    baselines = [c.name for c in ok if c.spec.family == "baseline"]
    if bar_hint is not None and bar_hint in scores and np.isfinite(scores[bar_hint]):
        bar, bar_kind = bar_hint, "chosen without target labels (iw_source_cv)"
    elif refs:
        bar, bar_kind = max(refs, key=lambda n: scores[n]), "the reference score's model"
    elif baselines:
        bar, bar_kind = max(baselines, key=lambda n: scores[n]), f"best baseline on {criterion}"
    else:
        bar, bar_kind = max(scores, key=lambda n: scores[n]), "best candidate (no baseline in the pool)"
    family = {c.name: c.spec.family for c in candidates}
    challengers = [c.name for c in ok if c.name != bar]
    z = _threshold(margin, len(challengers))
    scale = 1.0 if kind == "survival" else abs(scores[bar])  # regression: min_gain is relative to the MAE
    rng = np.random.default_rng(seed)
    loss_name = "IBS" if kind == "survival" else "squared error"
    rows_out = [{"name": bar, "family": family[bar], "score": _fin(scores[bar]), "gain": 0.0, "se": 0.0,
                 "lower": 0.0, "loss_diff": 0.0, "verdict": "the bar"}]
    best, best_lower = None, -np.inf
    for n in challengers:
        ev = _evidence(kind, yr, wr, oof[n], oof[bar], n_boot, rng)
        lower = ev["gain"] - z * ev["se"]
        if not ev["gain"] > min_gain * scale:
            verdict = f"gain {ev['gain']:+.4f} not above {min_gain * scale:.4f}"
        elif not lower > 0:
            verdict = f"gain {ev['gain']:+.4f} within noise ({z:.2f} se = {z * ev['se']:.4f})"
        elif not ev["loss_diff"] <= ev["loss_se"]:
            verdict = f"{loss_name} worse by {ev['loss_diff']:+.4f} (se {ev['loss_se']:.4f})"
        else:
            verdict = "clears the bar"
            if lower > best_lower:
                best, best_lower = n, lower
        rows_out.append({"name": n, "family": family[n], "score": _fin(scores[n]), "gain": _fin(ev["gain"]),
                         "se": _fin(ev["se"]), "lower": _fin(lower), "loss_diff": _fin(ev["loss_diff"]),
                         "verdict": verdict})
    metric = "C" if kind == "survival" else "MAE"
    if best is None:
        top = max(rows_out[1:], key=lambda r: r["gain"] if r["gain"] is not None else -np.inf, default=None)
        reason = f"kept the bar {bar} on {criterion}: " + (
            "no challenger" if top is None else f"the best challenger {top['name']}: {top['verdict']}")
        chosen = bar
    else:
        r = next(r for r in rows_out if r["name"] == best)
        r["verdict"] = "chosen: " + r["verdict"]
        reason = (f"{best} beat the bar {bar} by {r['gain']:+.4f} {metric} (se {r['se']:.4f}, lower bound "
                  f"{r['lower']:+.4f} at {z:.2f} se) on {criterion}")
        chosen = best
    expl = {"bar": bar, "bar_kind": bar_kind, "criterion": criterion, "threshold_se": z, "min_gain": min_gain,
            "primary": metric, "secondary": loss_name, "n_scored_rows": int(len(rows)), "candidates": rows_out,
            "reason": reason}
    return chosen, bar, scores, oof, expl


def select_outcome(kind: str, candidates: list, X, y, sd, labelled_target: np.ndarray, *, seed: int = 0,
                   folds_target: int = 5, folds_source: int = 3, min_events: int = 10, min_rows: int = 20,
                   margin: float = 1.0, min_gain: float = 0.005, n_boot: int = 100, cache: dict | None = None,
                   extra_column=None) -> OutcomeChoice:
    """Choose among fitted-by-name ``candidates`` (``.name``, ``.spec``, ``.factory``) on the
    fit rows only. ``y`` is the survival array (unlabelled target rows time NaN) or the
    continuous label (NaN); ``labelled_target`` marks the labelled target rows."""
    from sklearn.model_selection import KFold

    from ..data.outcomes import masked_survival

    n_lab = int(labelled_target.sum())
    enough = (y["event"][labelled_target].sum() >= min_events) if kind == "survival" else n_lab >= min_rows
    src = sd > 0
    src_rows = np.flatnonzero(src)
    src_folds = list(KFold(folds_source, shuffle=True, random_state=seed).split(src_rows))
    w_src = np.ones(len(y))
    if cache is not None and ("iw", seed) in cache:
        w_src[src] = cache[("iw", seed)]
    else:
        w_src[src] = _importance_weights(X[src], X[~src], sd[src], seed)
        if cache is not None:
            cache[("iw", seed)] = w_src[src]
    # the label-free stage: every target label hidden, the candidates that need none
    y_free = masked_survival(y, src) if kind == "survival" else np.where(src, y, np.nan)
    free = [c for c in candidates if not c.spec.needs_labels]
    common = dict(seed=seed, cache=cache, extra_column=extra_column, margin=margin, min_gain=min_gain, n_boot=n_boot)
    lf_chosen, lf_bar, lf_scores, _, lf_expl = _stage(kind, free or candidates, X, y_free, sd, src_rows, src_folds,
                                                      "iw_source_cv", w_src, tag="label_free", bar_hint=None, **common)
    if not enough:
        if n_lab == 0:
            return OutcomeChoice(lf_chosen, "iw_source_cv", lf_bar, lf_scores, lf_expl["reason"], lf_expl)
        # a few target labels: the label-free criterion, with those labels in the fits
        chosen, bar, scores, _, expl = _stage(kind, candidates, X, y, sd, src_rows, src_folds, "iw_source_cv", w_src,
                                              tag="few_labels", bar_hint=lf_bar, **common)
        return OutcomeChoice(chosen, "iw_source_cv", bar, scores, expl["reason"], expl)
    rows = np.flatnonzero(labelled_target)
    folds = list(KFold(min(folds_target, n_lab), shuffle=True, random_state=seed).split(rows))
    chosen, bar, scores, _, expl = _stage(kind, candidates, X, y, sd, rows, folds, "target_cv", np.ones(len(y)),
                                          tag="target", bar_hint=lf_bar, **common)
    expl["label_free"] = {"bar": lf_bar, "chosen": lf_chosen, "reason": lf_expl["reason"]}
    return OutcomeChoice(chosen, "target_cv", bar, scores, expl["reason"], expl)


def _importance_weights(Xs, Xt, ds, seed) -> np.ndarray:
    from ..methods._base import DomainSplit
    from ..methods.instance import DomainClassifierIW, _clip_normalise

    if len(Xt) < 2:
        return np.ones(len(Xs))
    iw = DomainClassifierIW(random_state=seed)
    split = DomainSplit(Xs=Xs, ys=np.zeros(len(Xs), int), ds=ds, Xt=Xt, Xtl=Xt[:0], ytl=np.zeros(0, int), n_classes=2)
    return _clip_normalise(iw._source_weights(split), iw.clip_quantile, iw.max_weight)
