"""A small classifier head trained on frozen embeddings: seconds per retrain, not minutes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class Head(nn.Module):
    """Standardise, then a linear layer or a one-hidden-layer MLP, with dropout."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or dim, n_classes))
        self.body = nn.Sequential(*layers)
        self.config = {"dim": dim, "n_classes": n_classes, "hidden": hidden, "dropout": dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


@dataclass
class TrainReport:
    epochs: int
    best_epoch: int
    val_loss: float | None
    seconds: float


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights, so a rare class is not drowned out by a common one."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0)
    return w.astype(np.float32)


def train_head(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    hidden: int = 0,
    dropout: float = 0.2,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    max_epochs: int = 300,
    patience: int = 25,
    val_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[Head, TrainReport]:
    """Train a head with full-batch Adam, class-weighted loss and early stopping.

    Early stopping watches a random held-out slice of the given examples (only when there are
    enough of them); the weights of the best epoch are kept. Deterministic for a seed.
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    if n == 0:
        raise ValueError("no labelled examples to train on")

    n_val = int(n * val_fraction) if n >= 20 else 0
    order = rng.permutation(n)
    val_idx, train_idx = order[:n_val], order[n_val:]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = Head(x.shape[1], n_classes, hidden=hidden, dropout=dropout)
    xt = torch.from_numpy(x[train_idx])
    yt = torch.from_numpy(y[train_idx])
    head.mean.copy_(xt.mean(0))
    head.std.copy_(xt.std(0, unbiased=False).clamp_min(1e-6))
    weights = torch.from_numpy(class_weights(y[train_idx], n_classes))
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    val_loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    xv, yv = torch.from_numpy(x[val_idx]), torch.from_numpy(y[val_idx])

    best_state, best_loss, best_epoch, epoch = None, float("inf"), 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        for epoch in range(1, max_epochs + 1):
            head.train()
            opt.zero_grad(set_to_none=True)
            loss_fn(head(xt), yt).backward()
            opt.step()
            if n_val:
                head.eval()
                with torch.no_grad():
                    val = float(val_loss_fn(head(xv), yv))
                if val < best_loss - 1e-5:
                    best_loss, best_epoch = val, epoch
                    best_state = {k: v.clone() for k, v in head.state_dict().items()}
                elif epoch - best_epoch >= patience:
                    break
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    report = TrainReport(
        epochs=epoch,
        best_epoch=best_epoch or epoch,
        val_loss=best_loss if n_val else None,
        seconds=time.perf_counter() - start,
    )
    return head, report


@torch.no_grad()
def predict_proba(head: Head, x: np.ndarray, passes: int = 1, seed: int = 0) -> np.ndarray:
    """Class probabilities `[n, c]`; with `passes > 1`, MC-dropout passes `[n, c, T]`."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if passes <= 1:
        head.eval()
        return torch.softmax(head(xt), dim=1).numpy()
    head.train()  # keep dropout on for stochastic passes
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = torch.stack([torch.softmax(head(xt), dim=1) for _ in range(passes)], dim=2)
    finally:
        head.eval()
    return out.numpy()
