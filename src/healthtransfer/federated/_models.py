"""The two federated models (logistic regression, small MLP) and their local training loops.

Parameters travel as a list of float32 numpy arrays in ``state_dict`` order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["make_model", "get_weights", "set_weights", "train_local", "predict_proba", "finetune"]


class _MLP(nn.Module):
    def __init__(self, n_in: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(x)


def make_model(kind: str, n_in: int, seed: int = 0, hidden: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "logreg":
        m = nn.Sequential(nn.Linear(n_in, 1))
        nn.init.zeros_(m[0].weight), nn.init.zeros_(m[0].bias)
        return m
    if kind == "mlp":
        return _MLP(n_in, hidden)
    raise ValueError(f"unknown model '{kind}'")


def get_weights(model: nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy().astype(np.float32).copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: list[np.ndarray]) -> None:
    keys = list(model.state_dict().keys())
    model.load_state_dict({k: torch.as_tensor(np.asarray(a, dtype=np.float32)) for k, a in zip(keys, arrays)})


def _loader(X, y, batch_size, seed):
    g = torch.Generator().manual_seed(int(seed))
    ds = torch.utils.data.TensorDataset(torch.as_tensor(X, dtype=torch.float32),
                                        torch.as_tensor(y, dtype=torch.float32).view(-1, 1))
    return torch.utils.data.DataLoader(ds, batch_size=int(batch_size), shuffle=True, generator=g)


def train_local(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
                seed: int, proximal_mu: float = 0.0, weight_decay: float = 0.0, dp: dict | None = None) -> dict:
    """Local SGD epochs; FedProx term ``mu/2 ||w - w_global||^2`` when ``proximal_mu > 0``;
    DP-SGD through Opacus when ``dp`` gives ``noise_multiplier`` and ``max_grad_norm``.
    Returns ``{"steps": optimizer steps, "loss": last epoch mean loss}``."""
    torch.manual_seed(int(seed))
    global_params = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    loader = _loader(X, y, batch_size, seed)
    net = model
    if dp:
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        net, opt, loader = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                               noise_multiplier=float(dp["noise_multiplier"]),
                                               max_grad_norm=float(dp["max_grad_norm"]), poisson_sampling=True)
    loss_fn = nn.BCEWithLogitsLoss()
    steps, last = 0, float("nan")
    net.train()
    for _ in range(int(epochs)):
        tot, cnt = 0.0, 0
        for xb, yb in loader:
            if len(xb) == 0:
                continue
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            if proximal_mu > 0:
                params = list(net.parameters())
                loss = loss + proximal_mu / 2 * sum(((p - g) ** 2).sum() for p, g in zip(params, global_params))
            loss.backward()
            opt.step()
            steps += 1
            tot, cnt = tot + float(loss) * len(xb), cnt + len(xb)
        last = tot / max(cnt, 1)
    if dp:
        net._close() if hasattr(net, "_close") else None
    return {"steps": steps, "loss": last, "sample_rate": min(1.0, batch_size / max(len(X), 1))}


def predict_proba(model: nn.Module, X: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(torch.as_tensor(X, dtype=torch.float32))).view(-1).numpy()


def finetune(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
             seed: int, anchor: float = 0.0) -> None:
    """Local fine-tuning from the federated weights (Adam; optional L2-SP pull towards them)."""
    torch.manual_seed(int(seed))
    start = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    loader = _loader(X, y, batch_size, seed + 7)
    model.train()
    for _ in range(int(epochs)):
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            if anchor > 0:
                loss = loss + anchor / 2 * sum(((p - s) ** 2).sum() for p, s in zip(model.parameters(), start))
            loss.backward()
            opt.step()
