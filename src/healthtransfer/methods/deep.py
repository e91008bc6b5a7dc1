"""Deep transfer methods: small tabular MLPs trained with torch on CPU.

- :class:`MLPSource`: the deep reference, an MLP trained on the source rows only;
- :class:`JointMMD`: ``L_source + lambda_target * L_target + mu * MMD(source, target)`` on the
  embedding, with a multi-kernel Gaussian MMD (quadratic or linear-time estimator);
- :class:`DeepCORAL`: the same with CORAL (covariance alignment) instead of MMD;
- :class:`DANN`: domain-adversarial training through a gradient reversal layer;
- :class:`FineTuneMLP`: pretrain on the source rows, fine-tune on the labelled target rows
  (``full``, ``last_layer`` or ``l2sp``).

All share :class:`~healthtransfer.methods._torch.DeepTransferClassifier`: inputs are
standardised inside the estimator, fits are deterministic given ``random_state``, and several
source (or target) domains are pooled. Missing values are imputed by the base class.

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> from healthtransfer.methods.deep import JointMMD
>>> d = make_shifted_domains("scale", n_source=100, n_target=100, random_state=0)
>>> m = JointMMD(max_epochs=5, random_state=0)
>>> m = m.fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
>>> m.predict_proba(d.X[d.target]).shape
(100, 2)
"""

from __future__ import annotations


import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._base import DomainSplit
from ._chunked import _Moments
from ._torch import (
    DeepTransferClassifier,
    _tensor,
    _weighted_ce,
    coral_loss,
    grad_reverse,
    mmd_loss,
)

__all__ = ["DANN", "DeepCORAL", "FineTuneMLP", "JointMMD", "JointMMDMinibatch", "MLPSource"]

_COMMON_DOC = """
    hidden_layer_sizes : tuple of int, default=(64,)
        Hidden layers before the embedding (Linear, ReLU, Dropout each).
    embedding_dim : int, default=32
        Width of the embedding the head (and the alignment loss) sees.
    dropout : float, default=0.1
    lr : float, default=1e-3
        Adam learning rate.
    weight_decay : float, default=1e-4
    batch_size : int, default=64
        Source rows per step; target batches have the same size.
    max_epochs : int, default=150
        Passes over the source rows (the fit stops there).
    random_state : int, RandomState or None
        Seeds torch and numpy for the fit: the same int gives the same model.
"""


class MLPSource(DeepTransferClassifier):
    """MLP trained on the labelled source rows only: the deep reference.

    Parameters
    ----------
    {common}
    Examples
    --------
    >>> import numpy as np
    >>> from healthtransfer.methods.deep import MLPSource
    >>> X = np.random.default_rng(0).normal(size=(60, 3)); y = (X[:, 0] > 0).astype(int)
    >>> MLPSource(max_epochs=5, random_state=0).fit(X, y).predict(X[:3]).shape
    (3,)
    """

    family = "baseline"
    uses_target = "none"
    _use_labelled_target = False

    def __init__(self, hidden_layer_sizes=(64,), embedding_dim=32, dropout=0.1, lr=1e-3,
                 weight_decay=1e-4, batch_size=64, max_epochs=150, random_state=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.random_state = random_state


class JointMMD(DeepTransferClassifier):
    """Joint objective ``L_s + lambda_target * L_t + mu * MMD^2(p_s, p_t)`` on the embedding.

    ``L_s`` is the cross-entropy on labelled source rows, ``L_t`` the cross-entropy on the
    labelled target rows (0 when there are none) and the MMD compares the embeddings of source
    and target minibatches (every target row, labelled or not) with a multi-kernel Gaussian
    (bandwidths 1/4..4 times the median squared distance).

    Parameters
    ----------
    lambda_target : float, default=1.0
        Weight of the labelled-target cross-entropy.
    mu : float, default=0.5
        Weight of the MMD term (0 gives a pooled MLP).
    mmd : {{"quadratic", "linear"}}, default="quadratic"
        The quadratic-time V-statistic or the linear-time estimator of Gretton et al. (2012).
    {common}
    Examples
    --------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> from healthtransfer.methods.deep import JointMMD
    >>> d = make_shifted_domains("scale", n_source=100, n_target=100, random_state=0)
    >>> m = JointMMD(mu=2.0, max_epochs=5, random_state=0)
    >>> m.fit(d.X, d.masked_y(10), sample_domain=d.sample_domain).predict(d.X[:2]).shape
    (2,)
    """

    family = "feature"
    uses_target = "both"
    _align_unlabelled = True
    _scale_on_target = True

    def __init__(self, lambda_target=1.0, mu=0.5, mmd="quadratic", hidden_layer_sizes=(64,),
                 embedding_dim=32, dropout=0.1, lr=1e-3, weight_decay=1e-4, batch_size=64,
                 max_epochs=150, random_state=None):
        self.lambda_target = lambda_target
        self.mu = mu
        self.mmd = mmd
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.random_state = random_state

    def _fit(self, split: DomainSplit) -> None:
        if self.mmd not in ("quadratic", "linear"):
            raise ValueError(f"mmd={self.mmd!r}; expected 'quadratic' or 'linear'.")
        super()._fit(split)

    def _alignment_loss(self, zs, zt, progress, extra):
        return mmd_loss(zs, zt, kind=self.mmd)


class DeepCORAL(DeepTransferClassifier):
    """Deep CORAL (Sun & Saenko 2016): ``L_s + lambda_target * L_t + mu * CORAL(z_s, z_t)``,
    aligning the covariances of source and target embeddings.

    Parameters
    ----------
    lambda_target : float, default=1.0
        Weight of the labelled-target cross-entropy (0 when there are none).
    mu : float, default=1.0
        Weight of the CORAL term.
    {common}
    Examples
    --------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> from healthtransfer.methods.deep import DeepCORAL
    >>> d = make_shifted_domains("scale", n_source=100, n_target=100, random_state=0)
    >>> m = DeepCORAL(max_epochs=5, random_state=0)
    >>> m.fit(d.X, d.masked_y(0), sample_domain=d.sample_domain).predict(d.X[:2]).shape
    (2,)
    """

    family = "feature"
    uses_target = "both"
    _align_unlabelled = True
    _scale_on_target = True

    def __init__(self, lambda_target=1.0, mu=1.0, hidden_layer_sizes=(64,), embedding_dim=32,
                 dropout=0.1, lr=1e-3, weight_decay=1e-4, batch_size=64, max_epochs=150,
                 random_state=None):
        self.lambda_target = lambda_target
        self.mu = mu
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.random_state = random_state

    def _alignment_loss(self, zs, zt, progress, extra):
        return coral_loss(zs, zt)


class DANN(DeepTransferClassifier):
    """Domain-adversarial network (Ganin et al. 2016): a domain classifier on the embedding,
    trained through a gradient reversal layer so the embedding becomes domain-invariant.

    The loss is ``L_s + lambda_target * L_t + mu * L_domain`` (binary cross-entropy, source vs
    target); the reversal coefficient ramps from 0 to 1 as ``2 / (1 + exp(-10 p)) - 1`` over
    training progress ``p``.

    Parameters
    ----------
    lambda_target : float, default=1.0
        Weight of the labelled-target cross-entropy (0 when there are none).
    mu : float, default=0.5
        Weight of the domain loss.
    domain_hidden : int, default=32
        Width of the domain classifier's hidden layer.
    {common}
    Examples
    --------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> from healthtransfer.methods.deep import DANN
    >>> d = make_shifted_domains("scale", n_source=100, n_target=100, random_state=0)
    >>> m = DANN(max_epochs=5, random_state=0)
    >>> m.fit(d.X, d.masked_y(0), sample_domain=d.sample_domain).predict(d.X[:2]).shape
    (2,)
    """

    family = "feature"
    uses_target = "both"
    _align_unlabelled = True
    _scale_on_target = True

    def __init__(self, lambda_target=1.0, mu=0.5, domain_hidden=32, hidden_layer_sizes=(64,),
                 embedding_dim=32, dropout=0.1, lr=1e-3, weight_decay=1e-4, batch_size=64,
                 max_epochs=150, random_state=None):
        self.lambda_target = lambda_target
        self.mu = mu
        self.domain_hidden = domain_hidden
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.random_state = random_state

    def _extra_modules(self, embedding_dim):
        h = int(self.domain_hidden)
        return nn.ModuleDict({"domain": nn.Sequential(
            nn.Linear(int(embedding_dim), h), nn.ReLU(), nn.Linear(h, 1))})

    def _alignment_loss(self, zs, zt, progress, extra):
        coeff = 2.0 / (1.0 + np.exp(-10.0 * progress)) - 1.0
        z = grad_reverse(torch.cat([zs, zt]), coeff)
        logit = extra["domain"](z).squeeze(1)
        label = torch.cat([torch.zeros(zs.shape[0]), torch.ones(zt.shape[0])])
        return F.binary_cross_entropy_with_logits(logit, label)


class FineTuneMLP(DeepTransferClassifier):
    """Pretrain an MLP on the source rows, then fine-tune it on the labelled target rows.

    ``mode``:

    - ``"full"``: every weight is trained again (Adam, same weight decay);
    - ``"last_layer"``: the shared layers are frozen, only the classifier head is trained;
    - ``"l2sp"``: every weight is trained, with the L2-SP penalty
      ``alpha * ||w - w_source||^2`` on the shared layers instead of weight decay towards 0
      (Li, Grandvalet & Davoine 2018).

    With no labelled target rows this is the source model. ``source_params_`` keeps the
    pretrained weights (numpy arrays by parameter name).

    Parameters
    ----------
    mode : {{"full", "last_layer", "l2sp"}}, default="full"
    alpha : float, default=0.1
        L2-SP strength (``mode="l2sp"`` only).
    finetune_epochs : int, default=100
        Passes over the labelled target rows.
    finetune_lr : float or None, default=None
        Learning rate of the fine-tuning stage. None: ``lr`` for ``full`` and ``l2sp``,
        ``10 * lr`` for ``last_layer`` (a linear head on frozen features needs larger steps
        to move within ``finetune_epochs`` passes over a few dozen rows).
    {common}
    Examples
    --------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> from healthtransfer.methods.deep import FineTuneMLP
    >>> d = make_shifted_domains("concept", n_source=100, n_target=100, random_state=0)
    >>> m = FineTuneMLP(mode="l2sp", max_epochs=5, finetune_epochs=5, random_state=0)
    >>> m.fit(d.X, d.masked_y(20), sample_domain=d.sample_domain).predict(d.X[:2]).shape
    (2,)
    """

    family = "model"
    uses_target = "labelled"
    _use_labelled_target = False  # the pretraining stage sees the source rows only

    def __init__(self, mode="full", alpha=0.1, finetune_epochs=100, finetune_lr=None,
                 hidden_layer_sizes=(64,), embedding_dim=32, dropout=0.1, lr=1e-3,
                 weight_decay=1e-4, batch_size=64, max_epochs=150, random_state=None):
        self.mode = mode
        self.alpha = alpha
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.random_state = random_state

    def _fit(self, split: DomainSplit) -> None:
        if self.mode not in ("full", "last_layer", "l2sp"):
            raise ValueError(f"mode={self.mode!r}; expected 'full', 'last_layer' or 'l2sp'.")
        super()._fit(split)

    def _after_training(self, split: DomainSplit, rng: np.random.Generator) -> None:
        self.source_params_ = {k: v.detach().numpy().copy()
                               for k, v in self.module_.named_parameters()}
        self.finetuned_ = bool(split.Xtl.shape[0] > 0 and self.finetune_epochs > 0)
        if self.finetuned_:
            self._finetune(split, rng)

    def _finetune(self, split: DomainSplit, rng: np.random.Generator) -> None:
        m = self.module_
        X, y = self._scale(split.Xtl), torch.as_tensor(split.ytl, dtype=torch.long)
        w = None if split.wtl is None else _tensor(split.wtl)
        lr = self.finetune_lr
        if lr is None:
            lr = self.lr * (10.0 if self.mode == "last_layer" else 1.0)
        shared = list(m.features.parameters())
        anchors = [p.detach().clone() for p in shared]
        if self.mode == "full":
            opt = self._optimizer(m.parameters(), lr=lr)
        elif self.mode == "last_layer":
            opt = self._optimizer(m.head.parameters(), lr=lr)
        else:
            opt = torch.optim.Adam([
                {"params": shared, "weight_decay": 0.0},
                {"params": m.head.parameters(), "weight_decay": self.weight_decay},
            ], lr=lr)
        n = X.shape[0]
        n_batches = max(1, int(round(n / max(1, int(self.batch_size)))))
        m.train()
        if self.mode == "last_layer":
            m.features.eval()  # frozen: no dropout noise either
            for p in shared:
                p.requires_grad_(False)
        curve = []
        try:
            for _ in range(int(self.finetune_epochs)):
                total = 0.0
                for idx in np.array_split(rng.permutation(n), n_batches):
                    logits, _ = m(X[idx])
                    loss = _weighted_ce(logits, y[idx], None if w is None else w[idx])
                    if self.mode == "l2sp":
                        loss = loss + self.alpha * sum(
                            ((p - a) ** 2).sum() for p, a in zip(shared, anchors))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                curve.append(total / n_batches)
        finally:
            for p in shared:
                p.requires_grad_(True)
        self.finetune_loss_curve_ = curve


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
class JointMMDMinibatch(JointMMD):
    """:class:`~healthtransfer.methods.deep.JointMMD` with the linear-time MMD estimator
    (Gretton et al. 2012) over minibatches and a budget of ``max_steps`` optimisation steps.

    Each step costs O(batch_size) whatever the data size; the number of epochs is
    ``min(max_epochs, ceil(max_steps / batches_per_epoch))``, so on small data it is exactly
    ``JointMMD(mmd="linear")`` and on a million rows it stops after ``max_steps`` steps
    (a few passes). The input standardisation is accumulated over chunks. The other
    parameters are those of :class:`~healthtransfer.methods.deep.JointMMD` (``mmd`` fixed to
    ``"linear"``; larger default batch).

    Parameters
    ----------
    max_steps : int
        Optimisation-step budget.
    """

    mmd = "linear"  # class attribute: not a parameter of this variant

    def __init__(self, lambda_target=1.0, mu=0.5, hidden_layer_sizes=(64,), embedding_dim=32,
                 dropout=0.1, lr=1e-3, weight_decay=1e-4, batch_size=256, max_epochs=150,
                 max_steps=4000, random_state=None):
        self.lambda_target = lambda_target
        self.mu = mu
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.max_steps = max_steps
        self.random_state = random_state

    def _fit_scaler(self, split):
        m = _Moments(split.Xs.shape[1]).fit(split.Xs, split.Xt)
        self.scaler_mean_, self.scaler_scale_ = m.mean, m.scale()

    def _train_loop(self, split, rng, max_epochs=None):
        n_batches = max(1, int(round(len(split.Xs) / max(1, int(self.batch_size)))))
        epochs = int(self.max_epochs if max_epochs is None else max_epochs)
        epochs = max(1, min(epochs, math.ceil(int(self.max_steps) / n_batches)))
        return super()._train_loop(split, rng, max_epochs=epochs)


for _cls in (MLPSource, JointMMD, DeepCORAL, DANN, FineTuneMLP):
    if _cls.__doc__:  # None under python -OO
        _cls.__doc__ = _cls.__doc__.format(common=_COMMON_DOC.strip() + "\n")
del _cls
