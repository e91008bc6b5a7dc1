"""Selection without target test labels for survival and continuous outcomes.

Two criteria, the same ones the classification selection uses, translated:

- ``target_cv``: with enough labelled target rows (``min_events`` events for survival,
  ``min_rows`` rows for regression), K-fold cross-validation over them: each fold is refitted
  on the source rows, the target pool and the other labelled target rows, and scored on its
  held-out rows (Harrell's C; negative mean squared error).
- ``iw_source_cv`` (label-free, the documented alternative to importance-weighted
  concordance on target-like rows): K-fold cross-validation over the source rows, scored with
  each held-out source row weighted by its importance weight p_t(x)/p_s(x) (the domain
  classifier of ``iw_domain_lr``): importance-weighted Harrell's C or weighted squared error.

The bar: the best baseline by the same criterion. Another method replaces it only when it
beats it by ``margin`` bootstrap standard errors of the paired difference and by ``min_gain``.

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


@dataclass
class OutcomeChoice:
    chosen: str
    criterion: str
    bar: str | None
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"chosen": self.chosen, "criterion": self.criterion, "bar": self.bar,
                "scores": {k: float(v) for k, v in self.scores.items()}}


def _score(kind, y, pred, w, rows=None):
    if rows is not None:
        y, pred, w = y[rows], pred[rows], w[rows]
    if kind == "survival":
        return weighted_concordance(y["time"], y["event"], pred, w)
    return float(-np.sum(w * (y - pred) ** 2) / np.sum(w))


def select_outcome(kind: str, candidates: list, X, y, sd, labelled_target: np.ndarray, *, seed: int = 0,
                   folds_target: int = 5, folds_source: int = 3, min_events: int = 10, min_rows: int = 20,
                   margin: float = 1.0, min_gain: float = 0.005, n_boot: int = 50, cache: dict | None = None,
                   extra_column=None) -> OutcomeChoice:
    """Choose among fitted-by-name ``candidates`` (``.name``, ``.spec``, ``.factory``) on the
    fit rows only. ``y`` is the survival array (unlabelled target rows time NaN) or the
    continuous label (NaN); ``labelled_target`` marks the labelled target rows."""
    from sklearn.model_selection import KFold

    from ..data.outcomes import masked_survival

    n_lab = int(labelled_target.sum())
    enough = (y["event"][labelled_target].sum() >= min_events) if kind == "survival" else n_lab >= min_rows
    src = sd > 0
    rng = np.random.default_rng(seed)
    if enough:
        criterion = "target_cv"
        rows = np.flatnonzero(labelled_target)
        folds = list(KFold(min(folds_target, n_lab), shuffle=True, random_state=seed).split(rows))
        w_eval = np.ones(len(y))
    else:
        criterion = "iw_source_cv"
        rows = np.flatnonzero(src)
        folds = list(KFold(folds_source, shuffle=True, random_state=seed).split(rows))
        w_eval = np.ones(len(y))
        w_eval[src] = _importance_weights(X[src], X[~src], sd[src], seed)
    oof: dict[str, np.ndarray] = {}
    for c in candidates:
        key = (c.name, criterion)
        label_free = c.spec.uses_target in ("none", "unlabelled")
        if cache is not None and criterion == "iw_source_cv" and label_free and key in cache:
            oof[c.name] = cache[key]
            continue
        pred = np.full(len(rows), np.nan)
        Xc = X if not c.spec.uses_reference else np.column_stack([X, extra_column])
        for tr, te in folds:
            hide = np.zeros(len(y), bool)
            hide[rows[te]] = True
            y_fit = masked_survival(y, ~hide) if kind == "survival" else np.where(hide, np.nan, y)
            keep = ~hide if criterion == "iw_source_cv" else np.ones(len(y), bool)
            # held-out source rows leave the fit; held-out target rows stay as unlabelled rows
            est = c.factory(random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    est.fit(Xc[keep], y_fit[keep], sample_domain=sd[keep])
                    pred[te] = est.predict(Xc[rows[te]], sample_domain=sd[rows[te]])
                except (ValueError, np.linalg.LinAlgError, ArithmeticError):
                    pred[te] = np.nan
        oof[c.name] = pred
        if cache is not None and criterion == "iw_source_cv" and label_free:
            cache[key] = pred
    yr, wr = y[rows], w_eval[rows]
    scores = {n: (_score(kind, yr, p, wr) if np.isfinite(p).all() else -np.inf) for n, p in oof.items()}
    baselines = [c.name for c in candidates if c.spec.family == "baseline" and np.isfinite(scores[c.name])]
    best = max(scores, key=lambda n: scores[n])
    if not baselines:
        return OutcomeChoice(best, criterion, None, scores)
    bar = max(baselines, key=lambda n: scores[n])
    if best == bar:
        return OutcomeChoice(bar, criterion, bar, scores)
    # paired bootstrap of (best - bar) over the scored rows
    diffs = []
    for _ in range(n_boot):
        b = rng.integers(0, len(rows), len(rows))
        diffs.append(_score(kind, yr, oof[best], wr, b) - _score(kind, yr, oof[bar], wr, b))
    diffs = np.asarray([d for d in diffs if np.isfinite(d)])
    se = float(diffs.std(ddof=1)) if len(diffs) > 1 else np.inf
    gain = scores[best] - scores[bar]
    scale = 1.0 if kind == "survival" else abs(scores[bar])  # regression: relative gain in MSE
    chosen = best if (gain > margin * se and gain >= min_gain * scale) else bar
    return OutcomeChoice(chosen, criterion, bar, scores)


def _importance_weights(Xs, Xt, ds, seed) -> np.ndarray:
    from ..methods._base import DomainSplit
    from ..methods.instance import DomainClassifierIW, _clip_normalise

    if len(Xt) < 2:
        return np.ones(len(Xs))
    iw = DomainClassifierIW(random_state=seed)
    split = DomainSplit(Xs=Xs, ys=np.zeros(len(Xs), int), ds=ds, Xt=Xt, Xtl=Xt[:0], ytl=np.zeros(0, int), n_classes=2)
    return _clip_normalise(iw._source_weights(split), iw.clip_quantile, iw.max_weight)
