"""Shared torch pieces for the deep transfer methods: a small tabular MLP, a deterministic
minibatch fit loop, and the alignment losses (multi-kernel MMD, quadratic or linear-time;
CORAL) plus a gradient reversal layer.

Everything here is small, CPU-friendly torch code written for tables of a few hundred to a few
thousand rows; it does not depend on skorch or on ``skada.deep``.

Example
-------
>>> import torch
>>> from healthtransfer.methods._torch import mmd_loss
>>> g = torch.Generator().manual_seed(0)
>>> xs = torch.randn(200, 3, generator=g); xt = torch.randn(200, 3, generator=g) + 2.0
>>> bool(mmd_loss(xs, xt) > mmd_loss(xs, xs[torch.randperm(200, generator=g)][:100]))
True
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import ClassVar, Iterator

import numpy as np
import torch
from sklearn.utils import check_random_state
from torch import nn
from torch.nn import functional as F

from ._base import DomainSplit, TransferClassifier

__all__ = [
    "BANDWIDTH_SCALES",
    "DeepTransferClassifier",
    "GradientReversal",
    "TabularMLP",
    "coral_loss",
    "grad_reverse",
    "mmd_linear",
    "mmd_loss",
    "mmd_quadratic",
    "torch_fit_context",
]

# Multi-kernel MMD: Gaussian bandwidths (squared) as multiples of the median squared distance.
BANDWIDTH_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


# --------------------------------------------------------------------------------------------
# network
# --------------------------------------------------------------------------------------------
class TabularMLP(nn.Module):
    """input -> [Linear, ReLU, Dropout] x len(hidden) -> Linear, ReLU (embedding) -> head.

    ``forward`` returns ``(logits, embedding)``; ``features`` is the shared part (everything
    but the head), the part that alignment losses act on and L2-SP anchors.
    """

    def __init__(self, n_in: int, n_classes: int, hidden=(64,), embedding_dim: int = 32,
                 dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = []
        d = n_in
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = int(h)
        layers += [nn.Linear(d, int(embedding_dim)), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(int(embedding_dim), n_classes)

    def forward(self, x):
        z = self.features(x)
        return self.head(z), z


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coeff):
        ctx.coeff = float(coeff)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    """Identity on the forward pass; multiplies the gradient by ``-coeff`` on the way back."""
    return _GradReverse.apply(x, coeff)


class GradientReversal(nn.Module):
    """Gradient reversal layer (Ganin & Lempitsky 2015); ``coeff`` may be changed during fit."""

    def __init__(self, coeff: float = 1.0):
        super().__init__()
        self.coeff = coeff

    def forward(self, x):
        return grad_reverse(x, self.coeff)


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def _bandwidths(median_sq: torch.Tensor, scales) -> torch.Tensor:
    base = median_sq.detach()
    base = torch.where(base > 1e-12, base, torch.ones_like(base))
    return base * torch.as_tensor(scales, dtype=base.dtype)


def _multi_kernel(d2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Mean of Gaussian kernels exp(-d2 / sigma2_k) over the bandwidths."""
    return torch.exp(-d2[..., None] / sigma2).mean(-1)


def mmd_quadratic(xs: torch.Tensor, xt: torch.Tensor, bandwidth=None, scales=BANDWIDTH_SCALES,
                  unbiased: bool = False) -> torch.Tensor:
    """Squared MMD with a multi-kernel Gaussian, O((n+m)^2).

    Bandwidths are ``scales`` times ``bandwidth`` (a squared length); by default ``bandwidth``
    is the median squared distance over the pooled rows (detached, so it is not optimised).
    ``unbiased=False`` is the V-statistic (>= 0, what the training losses use);
    ``unbiased=True`` drops the diagonal terms (the U-statistic, unbiased for MMD^2).
    """
    n, m = xs.shape[0], xt.shape[0]
    if n < 1 or m < 1 or (unbiased and (n < 2 or m < 2)):
        return xs.sum() * 0.0
    z = torch.cat([xs, xt])
    d2 = _sq_dists(z, z)
    if bandwidth is None:
        with torch.no_grad():
            iu = torch.triu_indices(n + m, n + m, offset=1)
            off = d2[iu[0], iu[1]]
            med = off.median() if off.numel() else d2.new_tensor(1.0)
    else:
        med = d2.new_tensor(float(bandwidth))
    k = _multi_kernel(d2, _bandwidths(med, scales))
    kss, ktt, kst = k[:n, :n], k[n:, n:], k[:n, n:]
    if unbiased:
        sss = (kss.sum() - kss.diagonal().sum()) / (n * (n - 1))
        stt = (ktt.sum() - ktt.diagonal().sum()) / (m * (m - 1))
    else:
        sss, stt = kss.mean(), ktt.mean()
    return sss + stt - 2.0 * kst.mean()


def mmd_linear(xs: torch.Tensor, xt: torch.Tensor, bandwidth=None,
               scales=BANDWIDTH_SCALES) -> torch.Tensor:
    """Linear-time unbiased estimate of squared MMD (Gretton et al. 2012, sec. 6).

    Takes ``p = min(n, m) // 2`` disjoint pairs ``(x_{2i}, x_{2i+1})``, ``(y_{2i}, y_{2i+1})``
    and averages ``h = k(x, x') + k(y, y') - k(x, y') - k(x', y)``. Same multi-kernel and
    bandwidth rule as :func:`mmd_quadratic`, with the median taken over the distances used.
    Rows are taken in the order given; shuffle them first if the order is not random.
    """
    p = min(xs.shape[0], xt.shape[0]) // 2
    if p < 1:
        return xs.sum() * 0.0
    x1, x2 = xs[0:2 * p:2], xs[1:2 * p:2]
    y1, y2 = xt[0:2 * p:2], xt[1:2 * p:2]
    d2 = torch.stack([
        ((x1 - x2) ** 2).sum(1),
        ((y1 - y2) ** 2).sum(1),
        ((x1 - y2) ** 2).sum(1),
        ((x2 - y1) ** 2).sum(1),
    ])
    med = d2.median() if bandwidth is None else d2.new_tensor(float(bandwidth))
    k = _multi_kernel(d2, _bandwidths(med, scales))
    return (k[0] + k[1] - k[2] - k[3]).mean()


def mmd_loss(xs: torch.Tensor, xt: torch.Tensor, kind: str = "quadratic", **kw) -> torch.Tensor:
    """``kind="quadratic"`` (:func:`mmd_quadratic`) or ``"linear"`` (:func:`mmd_linear`)."""
    if kind == "quadratic":
        return mmd_quadratic(xs, xt, **kw)
    if kind == "linear":
        return mmd_linear(xs, xt, **kw)
    raise ValueError(f"unknown mmd kind {kind!r}; expected 'quadratic' or 'linear'.")


def coral_loss(xs: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """CORAL: ||C_s - C_t||_F^2 / (4 d^2) between feature covariances (Sun & Saenko 2016)."""
    if xs.shape[0] < 2 or xt.shape[0] < 2:
        return xs.sum() * 0.0
    d = xs.shape[1]
    cs = torch.cov(xs.T).reshape(d, d)
    ct = torch.cov(xt.T).reshape(d, d)
    return ((cs - ct) ** 2).sum() / (4.0 * d * d)


# --------------------------------------------------------------------------------------------
# fitting machinery
# --------------------------------------------------------------------------------------------
@contextmanager
def _threads(n: int):
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, prev)))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@contextmanager
def torch_fit_context(seed: int, max_threads: int = 1):
    """Seed torch's CPU generator (restored afterwards) and use at most ``max_threads``
    threads for the duration of a fit; restore the global state after.

    ``torch.use_deterministic_algorithms`` is deliberately not switched on: every op used here
    (dense linear algebra, elementwise maps, sort-based median, dropout) is already
    deterministic on CPU with a fixed thread count, and the first call of that switch imports
    torch's compiler stack (~5 s per process).

    One thread is the default: these nets are tiny, so a second thread costs more in
    synchronisation than it gains, and runners already parallelise over fits (joblib)."""
    with _threads(max_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _cycler(n: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless stream of row indices 0..n-1, reshuffled at every pass."""
    while True:
        yield from rng.permutation(n)


def _take(it: Iterator, k: int) -> np.ndarray:
    return np.fromiter((next(it) for _ in range(k)), dtype=np.int64, count=k)


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.array(a, dtype=np.float32, copy=True))


def _weighted_ce(logits, y, w=None):
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if w is None:
        return F.cross_entropy(logits, y)
    losses = F.cross_entropy(logits, y, reduction="none")
    return (losses * w).sum() / w.sum().clamp_min(1e-12)


class DeepTransferClassifier(TransferClassifier):
    """Base for the deep methods: standardise, build a :class:`TabularMLP`, run the loop.

    Subclasses set ``_align_unlabelled`` (draw target batches for an alignment loss) and
    implement ``_alignment_loss(zs, zt, progress)``. ``_scale_on_target`` says whether the
    input standardisation is fitted on source + target rows or on source rows only.

    Every step draws a source minibatch (``batch_size`` rows, the source rows are split into
    near-equal batches each epoch), a target minibatch of the same size from all target rows,
    and a minibatch of labelled target rows when there are any; the loss is
    ``CE(source) + lambda_target * CE(labelled target) + mu * alignment``.
    Several source domains are pooled into one source distribution; several target domains
    into one target distribution (``sample_domain`` at prediction time is ignored).
    """

    _align_unlabelled: ClassVar[bool] = False
    _scale_on_target: ClassVar[bool] = False
    _use_labelled_target: ClassVar[bool] = True

    # -- hooks ------------------------------------------------------------------------
    def _extra_modules(self, embedding_dim: int) -> nn.ModuleDict:
        return nn.ModuleDict()

    def _alignment_loss(self, zs, zt, progress: float, extra: nn.ModuleDict):
        return None

    # -- helpers ----------------------------------------------------------------------
    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _fit_scaler(self, split: DomainSplit) -> None:
        rows = np.vstack([split.Xs, split.Xt]) if self._scale_on_target else split.Xs
        mean = rows.mean(0)
        scale = rows.std(0)
        scale[~np.isfinite(scale) | (scale < 1e-12)] = 1.0
        self.scaler_mean_, self.scaler_scale_ = mean, scale

    def _scale(self, X) -> torch.Tensor:
        return _tensor((np.asarray(X, float) - self.scaler_mean_) / self.scaler_scale_)

    def _build_module(self, n_in: int, n_classes: int) -> TabularMLP:
        return TabularMLP(n_in, n_classes, hidden=tuple(self.hidden_layer_sizes),
                          embedding_dim=self.embedding_dim, dropout=self.dropout)

    def _optimizer(self, params, lr=None, weight_decay=None):
        return torch.optim.Adam(params, lr=self.lr if lr is None else lr,
                                weight_decay=self.weight_decay if weight_decay is None
                                else weight_decay)

    # -- the loop ---------------------------------------------------------------------
    def _fit(self, split: DomainSplit) -> None:
        seed = self._seed()
        with torch_fit_context(seed):
            rng = np.random.default_rng(seed)
            self._fit_scaler(split)
            self.module_ = self._build_module(split.Xs.shape[1], split.n_classes)
            self._train_loop(split, rng)
            self._after_training(split, rng)
            self.module_.eval()

    def _after_training(self, split: DomainSplit, rng: np.random.Generator) -> None:
        """A step after the training loop, in the same seeded context (fine-tuning uses it)."""

    def _train_loop(self, split: DomainSplit, rng: np.random.Generator,
                    max_epochs: int | None = None) -> None:
        """The source (+ target) training loop; fills ``loss_curve_`` and ``n_iter_``."""
        Xs, ys = self._scale(split.Xs), torch.as_tensor(split.ys, dtype=torch.long)
        ws = None if split.ws is None else _tensor(split.ws)
        Xt = self._scale(split.Xt)
        Xtl, ytl = self._scale(split.Xtl), torch.as_tensor(split.ytl, dtype=torch.long)
        wtl = None if split.wtl is None else _tensor(split.wtl)
        ns, nt, ntl = Xs.shape[0], Xt.shape[0], Xtl.shape[0]
        align = self._align_unlabelled and nt > 0
        use_tl = self._use_labelled_target and ntl > 0 and self.lambda_target > 0

        extra = self._extra_modules(self.embedding_dim)
        params = list(self.module_.parameters()) + list(extra.parameters())
        opt = self._optimizer(params)
        bs = max(1, int(self.batch_size))
        n_batches = max(1, int(round(ns / bs)))
        t_iter = _cycler(nt, rng) if align else None
        tl_iter = _cycler(ntl, rng) if use_tl else None
        epochs = int(self.max_epochs if max_epochs is None else max_epochs)
        total = max(1, epochs * n_batches)
        curve = []
        step = 0
        self.module_.train()
        for _ in range(epochs):
            epoch_loss = 0.0
            for idx in np.array_split(rng.permutation(ns), n_batches):
                progress = step / total
                logits_s, zs = self.module_(Xs[idx])
                loss = _weighted_ce(logits_s, ys[idx], None if ws is None else ws[idx])
                if use_tl:
                    j = _take(tl_iter, min(len(idx), ntl))
                    logits_tl, _ = self.module_(Xtl[j])
                    loss = loss + self.lambda_target * _weighted_ce(
                        logits_tl, ytl[j], None if wtl is None else wtl[j])
                if align and self.mu > 0:
                    j = _take(t_iter, min(len(idx), nt))
                    _, zt = self.module_(Xt[j])
                    a = self._alignment_loss(zs, zt, progress, extra)
                    if a is not None:
                        loss = loss + self.mu * a
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                epoch_loss += float(loss.detach())
                step += 1
            curve.append(epoch_loss / n_batches)
        self.loss_curve_ = curve
        self.n_iter_ = epochs

    def _predict_proba(self, X, sample_domain):
        self.module_.eval()
        with torch.no_grad(), _threads(1):
            logits, _ = self.module_(self._scale(X))
            return torch.softmax(logits.double(), dim=1).numpy()

    def embed(self, X):
        """The learned embedding of ``X`` (after imputation and standardisation)."""
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self, "module_")
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan", dtype=float)
        if self._imputer is not None:
            X = self._imputer.transform(X)
        self.module_.eval()
        with torch.no_grad(), _threads(1):
            return self.module_(self._scale(X))[1].numpy().astype(float)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
