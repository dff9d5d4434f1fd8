"""A small classifier head trained on frozen embeddings: seconds per retrain, not minutes."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Head(nn.Module):
    """Standardise, then a linear layer or a one-hidden-layer MLP, with dropout.

    `body` is `[Dropout, Linear]` or `[Dropout, Linear, ReLU, Dropout, Linear]`. In eval mode
    the standardisation is folded into the first Linear, so scoring is one matrix product.
    """

    def __init__(self, dim: int, n_classes: int, hidden: int = 0, dropout: float = 0.2,
                 multiple: bool = False):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        layers: list[nn.Module] = [nn.Dropout(dropout), nn.Linear(dim, hidden or n_classes)]
        if hidden:
            layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes)]
        self.body = nn.Sequential(*layers)
        self.config = {"dim": dim, "n_classes": n_classes, "hidden": hidden, "dropout": dropout}
        if multiple:  # one sigmoid per label (a multiple-choice question), not one softmax
            self.config["multiple"] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.body((x - self.mean) / self.std)
        first = self.body[1]
        w = first.weight / self.std
        h = F.linear(x, w, first.bias - w @ self.mean)
        for i, layer in enumerate(self.body):
            if i >= 2:
                h = layer(h)
        return h


class Ensemble(nn.Module):
    """Heads trained on bootstrap resamples: their disagreement is the model's uncertainty.

    `forward` returns the log of the members' mean probabilities, so softmax of it is the mean
    (for multiple-choice heads, the logit of the mean, so its sigmoid is).
    """

    def __init__(self, members: list[Head]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = {**members[0].config, "members": len(members)}
        self.multiple = bool(self.config.get("multiple"))  # a plain bool: TorchScript reads it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.multiple:
            probs = torch.stack([torch.sigmoid(m(x)) for m in self.members]).mean(0)
            return torch.logit(probs, eps=1e-6)
        probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.members]).mean(0)
        return torch.log(probs.clamp_min(1e-12))


def activation(head: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from a head's logits: a softmax over classes, or a sigmoid per label."""
    return torch.sigmoid(logits) if head.config.get("multiple") else torch.softmax(logits, dim=1)


class QuestionHeads(nn.Module):
    """One head per question, in the questions' order, sharing the input embeddings.

    `forward` returns the heads' logits concatenated (what ONNX export traces); a version with one
    single-choice question stores its plain head instead, as versions always have.
    """

    def __init__(self, heads: Sequence[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.config = {"questions": [h.config for h in heads]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(x) for h in self.heads], dim=1)


def build_head(config: dict) -> nn.Module:
    """An untrained head of a saved `config` (a version's `head_config`): a head, an ensemble,
    or one of those per question (`QuestionHeads`)."""
    if "questions" in config:
        return QuestionHeads([build_head(c) for c in config["questions"]])
    config = dict(config)
    members = config.pop("members", 0)
    if members:
        return Ensemble([Head(**config) for _ in range(members)])
    return Head(**config)


@dataclass
class TrainReport:
    epochs: int
    seconds: float


def label_weights(y: np.ndarray) -> np.ndarray:
    """Per label of a multiple-choice question (`y` [n, L] of 0/1), the weight of a positive:
    negatives over positives, capped, so a rare label is not learnt as never present."""
    pos = y.sum(0)
    return np.clip((len(y) - pos) / np.maximum(pos, 1), 1.0, 100.0).astype(np.float32)


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency weights, so a rare class is not drowned out by a common one."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0)
    return w.astype(np.float32)


EPOCHS = 150
WEIGHT_DECAY = 1e-2
MASK_WINDOWS = 1024
SMALL_PROBLEM = 1 << 24  # elements per op below which one thread is faster (e.g. 30k x 512)


@contextmanager
def _threads_for(elements: int) -> Iterator[None]:
    """One intra-op thread for head-sized ops: they take milliseconds, and splitting each one
    makes it wait for a second core; on a busy machine that wait costs more than the op
    (measured 5-7x slower training with 2 threads on 2 loaded cores)."""
    threads = torch.get_num_threads()
    if elements >= SMALL_PROBLEM or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _dropout_masks(n: int, dim: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """A pool of `n + min(n, MASK_WINDOWS)` input-dropout masks; each epoch uses a random window.

    Drawing a fresh mask every epoch costs more than the rest of the epoch together; windows
    into one pool give every example a different mask each epoch at a fraction of the cost.
    Float, not bool: multiplying by a bool mask costs about 2.5x as much (type promotion).
    """
    return (torch.rand(n + min(n, MASK_WINDOWS), dim, generator=gen) >= p).float()


def train_head(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    hidden: int = 0,
    dropout: float = 0.2,
    lr: float = 1e-2,
    weight_decay: float = WEIGHT_DECAY,
    epochs: int = EPOCHS,
    seed: int = 0,
) -> tuple[Head, TrainReport]:
    """Train a head with full-batch Adam and a class-weighted loss for a fixed number of epochs.

    `y` holds class indices [n], or for a multiple-choice question 0/1 per label [n, L]: then
    each label gets a sigmoid and a binary loss weighted by `label_weights`.

    No early stopping: with few labels its validation slice is a handful of rows, and the
    epoch it picked swung accuracy by up to 0.3 on digits (0.12-0.41 at 20 labels, 0.81-0.90
    at 800); weight decay and dropout regularise instead. Deterministic for a seed.
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    x = np.asarray(x, dtype=np.float32)
    multiple = np.ndim(y) == 2
    y = np.asarray(y, dtype=np.float32 if multiple else np.int64)
    if len(y) == 0:
        raise ValueError("no labelled examples to train on")

    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    mean, std = xt.mean(0), xt.std(0, unbiased=False).clamp_min(1e-6)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = Head(x.shape[1], n_classes, hidden=hidden, dropout=dropout, multiple=multiple)
    head.mean.copy_(mean)
    head.std.copy_(std)
    # Standardise once; the epochs then run the body on fixed inputs.
    xs = (xt - mean) / std
    p = float(head.config["dropout"])
    masks = _dropout_masks(len(xs), xs.shape[1], p, gen) if p > 0 else None
    if masks is not None:
        scaled = xs * (1.0 / (1.0 - p))  # dropout's rescaling, done once
        dropped = torch.empty_like(xs)
    layers = head.body[1:]  # the input dropout is applied through the mask pool
    if multiple:
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.from_numpy(label_weights(y)))
    else:
        loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(y, n_classes)))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    head.train()
    with torch.random.fork_rng(devices=[]), _threads_for(xs.numel()):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        for _ in range(epochs):
            inputs = xs
            if masks is not None:
                offset = int(torch.randint(0, len(masks) - len(xs) + 1, (1,), generator=gen))
                inputs = torch.mul(scaled, masks[offset : offset + len(xs)], out=dropped)
            opt.zero_grad(set_to_none=True)
            loss_fn(layers(inputs), yt).backward()
            opt.step()
    head.eval()
    return head, TrainReport(epochs=epochs, seconds=time.perf_counter() - start)


def train_ensemble(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    members: int,
    *,
    epochs: int = EPOCHS,
    hidden: int = 0,
    dropout: float = 0.2,
    seed: int = 0,
) -> Ensemble:
    """`members` heads, each fitted for `epochs` on a bootstrap resample drawn within each class
    (so a rare class is never left out of a member)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    heads = []
    for m in range(members):
        if y.ndim == 2:  # multiple-choice: a plain bootstrap of the rows
            idx = rng.choice(len(y), size=len(y), replace=True)
        else:
            idx = np.concatenate([
                rng.choice(rows, size=len(rows), replace=True)
                for rows in (np.flatnonzero(y == c) for c in np.unique(y))
            ])
        head, _ = train_head(x[idx], y[idx], n_classes, hidden=hidden, dropout=dropout,
                             epochs=epochs, seed=seed + 1 + m)
        heads.append(head)
    return Ensemble(heads)


@torch.no_grad()
def predict_proba(
    head: Head | Ensemble, x: np.ndarray, passes: int = 1, seed: int = 0, chunk: int = 65536
) -> np.ndarray:
    """Class probabilities `[n, c]`; with `passes > 1`, stochastic samples `[n, c, T]`.
    (For a multiple-choice head, each label's own probability: rows do not sum to 1.)

    The samples are MC-dropout passes of a single head (T = passes), or the members of an
    ensemble (T = number of members, whatever `passes` says).
    """
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if passes <= 1:
        head.eval()
        return torch.cat([activation(head, head(xt[i : i + chunk]))
                          for i in range(0, max(len(xt), 1), chunk)]).numpy()
    if isinstance(head, Ensemble):
        head.eval()
        return torch.stack([activation(m, m(xt)) for m in head.members], dim=2).numpy()
    return _mc_dropout(head, xt, passes, seed)


def _mc_dropout(head: Head, xt: torch.Tensor, passes: int, seed: int,
                chunk: int = 4096) -> np.ndarray:
    """MC-dropout samples `[n, c, T]`: pass t gives example i input mask i + t of one pool.

    Each example gets T different masks and each pass independent masks across examples, but
    the random numbers are drawn once per block of rows instead of once per pass (they would
    dominate), and blocks keep the T passes over a block in cache.
    """
    p = float(head.config["dropout"])
    gen = torch.Generator().manual_seed(seed)
    layers = head.body[1:]
    out = torch.empty(len(xt), head.config["n_classes"], passes)
    head.train()  # dropout after the first layer (MLP heads) stays on too
    try:
        with torch.random.fork_rng(devices=[]), _threads_for(chunk * xt.shape[1]):
            torch.manual_seed(seed)
            for i in range(0, len(xt), chunk):
                z = (xt[i : i + chunk] - head.mean) / head.std
                if p > 0:
                    z *= 1.0 / (1.0 - p)
                    masks = torch.rand(len(z) + passes, z.shape[1], generator=gen) >= p
                for t in range(passes):
                    zt = z * masks[t : t + len(z)] if p > 0 else z
                    out[i : i + chunk, :, t] = activation(head, layers(zt))
    finally:
        head.eval()
    return out.numpy()
