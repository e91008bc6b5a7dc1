"""Pick one candidate per (target, seed, budget) without the target's test labels.

Candidates are the study's methods, each over its small hyper-parameter grid. The criterion
depends on what is available:

- n_t = 0: importance-weighted validation on held-out source rows (``iwcv``, AUROC) and deep
  embedded validation (``dev``, log loss), combined by average rank; reverse validation and
  target prediction entropy are computed and reported as heuristics, not used to choose;
- n_t > 0 labelled target rows: repeated stratified cross-validation on them (``target_cv``).

Bar first. One candidate is *the bar*: the study's reference score recalibrated at the target
(e.g. APACHE IV) when it has one, else the best baseline on the label-free criterion; with
target labels, the bar chosen without them (picking the best baseline on a few dozen labels is
itself a noisy pick). The bar is returned unless a challenger beats it on the same out-of-fold
rows by more than ``z`` paired-bootstrap standard errors and ``min_gain`` AUROC, with a Brier
score not worse beyond noise. ``z`` splits ``margin``'s one-sided error rate over the k
challengers (Bonferroni): the best of a dozen noisy gains is biased upward, and that winner's
curse is what made the old winner-take-all rule fall below the bar. Among challengers that clear
it, the one with the highest lower bound wins. With fewer than ``min_per_class`` labelled rows of
a class, the label-free choice stands. ``Selection.explanation`` holds all of it as data (the
bar, every candidate's gain, se, lower bound, Brier difference and verdict, the weights of what
ships); :func:`explanation_html` renders it.

>>> sel = select(expand_candidates(["source_lr", "pooled_lr"]), X, y, sd, 2)  # doctest: +SKIP
>>> sel.chosen, sel.criterion, sel.reason  # doctest: +SKIP
('source_lr', 'target_cv', 'kept the bar source_lr on target_cv: the best challenger ...')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from ..evaluation.metrics import _auroc_rows
from ..methods import MethodSpec, get_method
from ._criteria import (OOF, dev_risk, entropy, importance_weights, source_cv_oof, target_cv_oof,
                        target_cv_possible)

__all__ = ["Candidate", "Selection", "expand_candidates", "select"]


@dataclass(frozen=True)
class Candidate:
    """One method at one hyper-parameter setting."""

    name: str
    method: str
    family: str
    params: tuple = ()
    uses_reference: bool = False

    @property
    def spec(self) -> MethodSpec:
        return get_method(self.method)

    def factory(self, random_state=None):
        return self.spec.factory(random_state=random_state, **dict(self.params))


def _label(method: str, params: dict) -> str:
    if not params:
        return method
    inner = ",".join(f"{k}={v}" for k, v in params.items())
    return f"{method}[{inner}]"


def expand_candidates(methods: list[str], *, grid: bool = True) -> list[Candidate]:
    """Every method at its default settings, plus its grid points when ``grid``."""
    out: list[Candidate] = []
    seen = set()
    for m in methods:
        spec = get_method(m)
        settings = [{}] + (list(spec.grid) if grid else [])
        for params in settings:
            c = Candidate(_label(m, params), m, spec.family, tuple(sorted(params.items())),
                          bool(getattr(spec, "uses_reference", False)))
            if c.name not in seen:
                seen.add(c.name)
                out.append(c)
    return out


@dataclass
class Selection:
    chosen: str
    criterion: str
    reason: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    best_candidate: str | None = None
    best_baseline: str | None = None
    anchor: str | None = None  # with target labels: the label-free choice a candidate had to beat
    label_free: "Selection | None" = field(default=None, repr=False)  # that selection (a caller may reuse it)
    oof: dict[str, OOF] = field(default_factory=dict, repr=False)
    bar: str | None = None  # the candidate every other had to beat (reference score or best baseline)
    # why this choice, as data: the bar, each challenger's paired gain / se / Brier and verdict,
    # the weights of the returned model ({chosen: 1.0}); rendered by ``explanation_table``
    explanation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "criterion": self.criterion, "reason": self.reason,
                "best_candidate": self.best_candidate, "best_baseline": self.best_baseline,
                "anchor": self.anchor, "bar": self.bar, "scores": self.scores, "explanation": self.explanation}


def _auroc(y, proba, w=None) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1], sample_weight=w))
    vals = [roc_auc_score(y == c, proba[:, c], sample_weight=w) for c in np.unique(y)]
    return float(np.mean(vals))


def _paired_gain(a: OOF, b: OOF, n_boot: int = 200, seed: int = 0) -> tuple[float, float]:
    """Mean and std of AUROC(a) - AUROC(b) over bootstrap draws of the same rows, drawn with
    probability proportional to the importance weights (so IWCV is respected)."""
    g = _paired_evidence(a, b, n_boot=n_boot, seed=seed)
    return g["gain"], g["se"]


def _paired_evidence(a: OOF, b: OOF, n_boot: int = 200, seed: int = 0) -> dict[str, float]:
    """Paired evidence that ``a`` beats ``b`` on the same out-of-fold rows: AUROC gain and
    Brier difference (a - b), each with its bootstrap standard error. Rows are drawn with
    probability proportional to their weights (IWCV's importance weights, or 1)."""
    rng = np.random.default_rng(seed)
    w = a.weight / a.weight.sum()
    n = len(a.y)
    idx = rng.choice(n, size=(n_boot, n), p=w)
    yb = a.y[idx]
    if a.proba.shape[1] == 2:
        pa, pb = a.proba[:, 1][idx], b.proba[:, 1][idx]
        yy = yb
    else:  # multi-class: compare on the top class of the majority one-vs-rest (coarse but paired)
        c = np.bincount(a.y).argmax()
        pa, pb, yy = a.proba[:, c][idx], b.proba[:, c][idx], (yb == c).astype(int)
    onehot = np.eye(a.proba.shape[1])[a.y]
    brier_rows = ((a.proba - onehot) ** 2).sum(axis=1) - ((b.proba - onehot) ** 2).sum(axis=1)
    db = brier_rows[idx].mean(axis=1)
    brier = float(np.average(brier_rows, weights=a.weight))
    ok = (yy.sum(axis=1) > 0) & (yy.sum(axis=1) < n)
    d = _auroc_rows(yy[ok], pa[ok]) - _auroc_rows(yy[ok], pb[ok])
    d = d[np.isfinite(d)]
    if len(d) < 10:
        return {"gain": 0.0, "se": float("inf"), "brier_diff": brier, "brier_se": float(db.std(ddof=1))}
    return {"gain": float(d.mean()), "se": float(d.std(ddof=1)), "brier_diff": brier,
            "brier_se": float(db.std(ddof=1))}


def _threshold(margin: float, n_challengers: int) -> float:
    """Standard errors a challenger must clear: ``margin`` is the one-sided z for a single
    comparison; with k challengers the same error rate is split k ways (Bonferroni), because the
    best of k noisy gains is biased upward (the winner's curse that picked noisy winners)."""
    from statistics import NormalDist

    if margin <= 0:
        return 0.0
    tail = (1.0 - NormalDist().cdf(margin)) / max(1, n_challengers)
    return float(NormalDist().inv_cdf(1.0 - tail))


def _fin(x):
    x = float(x)
    return x if np.isfinite(x) else None


def _decide(names, bar, oofs, scores, fam, criterion, *, margin, min_gain, seed, n_boot=200):
    """The bar unless a challenger beats it beyond noise on the paired out-of-fold rows.

    A challenger is eligible when its AUROC gain over the bar exceeds ``z`` bootstrap standard
    errors (``z`` from :func:`_threshold`) and ``min_gain``, and its Brier score is not worse
    than the bar's beyond one standard error. Among eligible challengers the one with the
    highest lower bound (gain - z se) wins: the most certain improvement, not the noisiest.
    Returns (chosen, reason, explanation rows, z).
    """
    challengers = [n for n in names if n != bar]
    z = _threshold(margin, len(challengers))
    rows = [{"name": bar, "family": fam[bar], "score": _fin(scores[bar]["auroc"]), "gain": 0.0, "se": 0.0,
             "lower": 0.0, "brier_diff": 0.0, "verdict": "the bar"}]
    best, best_lower = None, -np.inf
    for n in challengers:
        ev = _paired_evidence(oofs[n], oofs[bar], n_boot=n_boot, seed=seed)
        lower = ev["gain"] - z * ev["se"]
        if not ev["gain"] > min_gain:
            verdict = f"gain {ev['gain']:+.3f} not above {min_gain:g}"
        elif not lower > 0:
            verdict = f"gain {ev['gain']:+.3f} within noise ({z:.2f} se = {z * ev['se']:.3f})"
        elif ev["brier_diff"] > ev["brier_se"]:
            verdict = f"Brier worse by {ev['brier_diff']:+.4f} (se {ev['brier_se']:.4f})"
        else:
            verdict = "clears the bar"
            if lower > best_lower:
                best, best_lower = n, lower
        rows.append({"name": n, "family": fam[n], "score": _fin(scores[n]["auroc"]), "gain": _fin(ev["gain"]),
                     "se": _fin(ev["se"]), "lower": _fin(lower), "brier_diff": _fin(ev["brier_diff"]),
                     "verdict": verdict})
    if best is None:
        top = max((r for r in rows[1:]), key=lambda r: r["gain"] if r["gain"] is not None else -np.inf, default=None)
        why = "no challenger" if top is None else (
            f"the best challenger {top['name']}: {top['verdict']}")
        return bar, f"kept the bar {bar} on {criterion}: {why}", rows, z
    r = next(r for r in rows if r["name"] == best)
    for row in rows:
        if row["name"] == best:
            row["verdict"] = "chosen: " + row["verdict"]
    return best, (f"{best} beat the bar {bar} by {r['gain']:+.3f} AUROC (se {r['se']:.3f}, lower bound "
                  f"{r['lower']:+.3f} at {z:.2f} se) on {criterion}"), rows, z


def select(candidates: list[Candidate], X, y, sd, n_classes: int, *, seed: int = 0,
           margin: float = 1.0, min_gain: float = 0.01, n_splits_target: int = 5, n_splits_source: int = 3,
           extra_columns: Callable[[Candidate], tuple[np.ndarray, np.ndarray]] | None = None,
           score_mask: np.ndarray | None = None, min_per_class: int = 5, n_repeats: int | None = None,
           label_free: "Selection | None" = None, max_rows: int = 60_000) -> Selection:
    """Score every candidate on the fit rows only and choose one (see the module docstring).

    ``X, y, sd`` are exactly the rows and masked labels the candidates are fitted on; no
    target test row is ever passed here. ``extra_columns(c)`` may return the column to append
    for a candidate that uses the study's reference score. ``label_free`` is the selection on
    the same rows with the target labels hidden (computed here when not given; a study passes
    its n_t = 0 selection, which is exactly that). ``n_repeats`` of the target CV default to
    enough repeats for about 100 out-of-fold predictions (at most 3). Above ``max_rows`` rows,
    candidates are scored on every labelled target row plus a uniform sample of the others,
    ``max_rows`` in all (the CV refits would otherwise cost several full fits per candidate).
    """
    if len(X) > max_rows:
        X, y, sd, score_mask, extra_columns = _sample_rows(X, y, sd, score_mask, extra_columns, max_rows, seed)
    lab_mask = (sd < 0) & (y != -1)
    n_lab = int(lab_mask.sum())
    if n_lab:
        if label_free is None:
            free = [c for c in candidates if not c.spec.needs_labels]
            label_free = select(free, X, np.where(sd < 0, -1, y), sd, n_classes, seed=seed, margin=margin,
                                min_gain=min_gain, n_splits_source=n_splits_source, extra_columns=extra_columns,
                                score_mask=score_mask) if free else None
        if n_repeats is None:
            n_repeats = int(np.clip(np.ceil(100 / n_lab), 1, 3))
        if label_free is not None and not target_cv_possible(y, sd, n_classes):
            # too few labels for any target CV: scoring the candidates would redo the
            # label-free selection's source CV; its choice is the answer
            return replace(label_free, anchor=label_free.chosen, label_free=label_free, reason=(
                f"kept the label-free choice {label_free.chosen} ({label_free.criterion}): the labelled target "
                f"rows hold fewer than 2 rows of a class, too few for target CV"))
    # the labelled rows target CV will be scored on (with a score_mask, only those rows count)
    scored = lab_mask if score_mask is None else lab_mask & np.asarray(score_mask, bool)
    counts = np.bincount(y[scored], minlength=n_classes) if n_lab else np.zeros(n_classes, int)
    scores: dict[str, dict[str, float]] = {}
    oofs: dict[str, OOF] = {}
    weights = None
    criterion = "target_cv"
    for c in candidates:
        Xc = X if extra_columns is None or not c.uses_reference else np.column_stack([X, extra_columns(c)])
        oof = target_cv_oof(c.factory, Xc, y, sd, n_classes, seed=seed, n_splits=n_splits_target,
                            uses_target_labels=c.spec.uses_target in ("labelled", "both"),
                            n_repeats=n_repeats or 1) if n_lab else None
        if oof is None:
            if c.spec.needs_labels:
                continue
            criterion = "iwcv+dev"
            if weights is None:
                weights = importance_weights(X, sd, seed=seed)
            oof = source_cv_oof(c.factory, Xc, y, sd, n_classes, weights, seed=seed, n_splits=n_splits_source,
                                n_features=X.shape[1])
        elif criterion != "target_cv":
            continue  # mixed availability cannot happen within one call; keep the first kind
        oofs[c.name] = oof
        row = {"auroc": _auroc(oof.y, oof.proba, oof.weight if oof.criterion == "iwcv" else None)}
        if oof.criterion == "iwcv":
            row["dev_logloss"] = dev_risk(oof.y, oof.proba, oof.weight)
            row["ess_fraction"] = float(oof.weight.sum() ** 2 / (oof.weight ** 2).sum() / len(oof.weight))
            row["reverse_auroc"] = _auroc(oof.y, oof.reverse_proba)
            row["target_entropy"] = oof.target_entropy
        scores[c.name] = row
    if not scores:
        raise ValueError("no candidate could be scored")
    names = list(scores)
    if criterion == "target_cv":
        rank_score = {n: scores[n]["auroc"] for n in names}
    else:
        auc_rank = _ranks([scores[n]["auroc"] for n in names], higher_better=True)
        dev_rank = _ranks([scores[n]["dev_logloss"] for n in names], higher_better=False)
        rank_score = {n: -(a + d) / 2 for n, a, d in zip(names, auc_rank, dev_rank)}
    if score_mask is not None:
        # score only the rows the test metric will use (e.g. those with the reference score),
        # so candidates are compared on the same kind of rows in selection and in evaluation
        for name, oof in oofs.items():
            keep = oof.rows_mask(score_mask)
            if keep.sum() >= 4 and len(np.unique(oof.y[keep])) > 1:
                oofs[name] = oof.subset(keep)
                scores[name]["auroc"] = _auroc(oofs[name].y, oofs[name].proba,
                                               oofs[name].weight if oof.criterion == "iwcv" else None)
    fam = {c.name: c.family for c in candidates}
    best = max(names, key=lambda n: (np.nan_to_num(rank_score[n], nan=-np.inf), -names.index(n)))
    ref = {c.name: c.uses_reference for c in candidates}
    baselines = [n for n in names if ref[n]] or [n for n in names if fam[n] == "baseline"]
    best_base = max(baselines, key=lambda n: (np.nan_to_num(rank_score[n], nan=-np.inf), -names.index(n))) if baselines else None
    bar, bar_kind = _the_bar(names, ref, best_base, criterion, label_free, oofs)
    anchor = bar if criterion == "target_cv" and label_free is not None else None
    rare = int(counts.min()) if n_lab else 0
    if anchor is not None and rare < min_per_class and label_free.chosen in oofs:
        # too few labels of a class for target CV to tell models apart: the label-free
        # decision stands (it is the prior the labels would have had to overturn)
        chosen = label_free.chosen
        reason = (f"kept the label-free choice {chosen} ({label_free.criterion}): only {rare} labelled target "
                  f"rows of the rarest class (< {min_per_class}), too few for target CV to tell models apart")
        rows, z = [], None
    else:
        chosen, reason, rows, z = _decide(names, bar, oofs, scores, fam, criterion, margin=margin,
                                          min_gain=min_gain, seed=seed)
    explanation = {"bar": bar, "bar_kind": bar_kind, "criterion": criterion, "chosen": chosen,
                   "weights": {chosen: 1.0}, "threshold_se": z, "min_gain": min_gain,
                   "n_scored_rows": int(len(oofs[bar].y)), "candidates": rows,
                   "why_not_bar": None if chosen == bar else reason}
    return Selection(chosen=chosen, criterion=criterion, reason=reason, scores=scores, best_candidate=best,
                     best_baseline=best_base, anchor=anchor, label_free=label_free, oof=oofs, bar=bar,
                     explanation=explanation)


# The reference score recalibrated at the target: the model the site already trusts (APACHE IV
# in eICU). When the study has a reference score this, not a baseline, is the bar.
REFERENCE_BAR = "reference_recalibration"


def _the_bar(names, ref, best_base, criterion, label_free, oofs) -> tuple[str, str]:
    """Which candidate is the bar, and what kind of bar it is.

    - the recalibrated reference score, when the study has one;
    - with target labels: the label-free selection's bar (the baseline chosen without labels;
      choosing the best *baseline* on a few dozen labels is itself a noisy pick);
    - otherwise the best baseline on the criterion (or the first candidate if none is a baseline).
    """
    refs = [n for n in names if ref[n]]
    if refs:
        return (REFERENCE_BAR if REFERENCE_BAR in refs else best_base), "reference score"
    if criterion == "target_cv" and label_free is not None:
        lf_bar = label_free.bar or label_free.chosen
        if lf_bar in oofs:
            return lf_bar, f"best baseline without target labels ({label_free.criterion})"
    if best_base is not None:
        return best_base, f"best baseline on {criterion}"
    return names[0], "first candidate (no baseline in the pool)"


def _sample_rows(X, y, sd, score_mask, extra_columns, max_rows, seed):
    """Every labelled target row plus uniform others, ``max_rows`` in all (order kept)."""
    labelled = np.flatnonzero((sd < 0) & (y != -1))
    others = np.setdiff1d(np.arange(len(X)), labelled)
    k = min(len(others), max(max_rows - len(labelled), max_rows // 2))  # never without source rows
    rows = np.sort(np.r_[labelled, np.random.default_rng(seed).choice(others, k, replace=False)])
    extra = None if extra_columns is None else (lambda c, _f=extra_columns: np.asarray(_f(c))[rows])
    return X[rows], y[rows], sd[rows], None if score_mask is None else np.asarray(score_mask)[rows], extra


def _ranks(values, higher_better=True) -> np.ndarray:
    from scipy.stats import rankdata

    v = np.asarray(values, float)
    v = np.where(np.isfinite(v), v, -np.inf if higher_better else np.inf)
    return rankdata(-v if higher_better else v)


def recalibration_evidence(y, p, *, seed: int = 0, n_splits: int = 5) -> dict[str, Any]:
    """Does recalibrating on these out-of-fold target rows lower the Brier score of rows it was
    not fitted on? Cross-fitted over the rows; ``helps`` only when the Brier change is below
    minus one standard error (the raw model is the default, as the bar is for selection:
    on 10-40 labels a fitted recalibration map often costs more than it corrects).

    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 200)
    >>> recalibration_evidence(y, np.clip(0.2 + 0.5 * y + 0.1 * rng.random(200), 0, 1))["helps"]
    True
    """
    from sklearn.model_selection import StratifiedKFold

    from ..evaluation.calibration import Recalibrator

    y = np.asarray(y).astype(int)
    p = np.asarray(p, float)
    k = int(min(n_splits, np.bincount(y, minlength=2).min()))
    if k < 2:
        return {"brier_change": None, "se": None, "helps": False}
    diff = np.zeros(len(y))
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(p, y):
        q = Recalibrator().fit(y[tr], p[tr]).transform(p[te])
        diff[te] = (q - y[te]) ** 2 - (p[te] - y[te]) ** 2
    mean, se = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
    return {"brier_change": mean, "se": se, "helps": bool(mean < -se)}
