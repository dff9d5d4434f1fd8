"""Fine-tuning the backbone on a project's labelled images, now and then (minutes, not seconds).

The head is retrained after every label on frozen embeddings; this adapts the embeddings
themselves. The result is a state dict of the classifier-less backbone: saved as a weights file
(`model.backbone.save_weights`), its digest gives the backbone a new fingerprint, so the
embedding store moves to a fresh file and nothing computed with the old weights is mixed in.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import v2
from tqdm import tqdm

from model.backbone import Backbone

log = logging.getLogger(__name__)

LOSSES = ("ce", "triplet")
SAMPLERS = ("pk", "plain")


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    loss: str = "ce"  # cross-entropy through a temporary linear layer, or batch-hard triplet
    sampler: str = "pk"  # P classes x K images per batch (class-balanced), or plain shuffling
    p: int = 8  # classes per batch (pk)
    k: int = 4  # images per class per batch (pk)
    batch_size: int = 32  # plain
    lr: float = 1e-4
    weight_decay: float = 1e-4
    margin: float = 0.2  # triplet
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"fine-tuning loss must be one of {', '.join(LOSSES)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"fine-tuning sampler must be one of {', '.join(SAMPLERS)}")


def pk_batches(labels: np.ndarray, p: int, k: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of class-balanced batches: P classes, K images each (drawn again when a class
    has fewer), so a rare class is seen as often as a common one and every batch has positives."""
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    n_batches = max(1, math.ceil(len(labels) / (p * k)))
    batches = []
    for _ in range(n_batches):
        chosen = rng.choice(len(by_class), size=min(p, len(by_class)), replace=False)
        batch = []
        for c in chosen:
            rows = by_class[c]
            batch += rng.choice(rows, size=k, replace=len(rows) < k).tolist()
        batches.append(batch)
    return batches


def plain_batches(n: int, size: int, rng: np.random.Generator) -> list[list[int]]:
    order = rng.permutation(n)
    return [order[i : i + size].tolist() for i in range(0, n, size)]


def batch_hard_triplet(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """For each anchor, its farthest positive against its nearest negative (on the unit sphere)."""
    emb = F.normalize(emb, dim=1)
    dist = torch.cdist(emb, emb)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (dist * same).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    valid = torch.isfinite(hardest_neg)
    if not valid.any():
        return emb.sum() * 0.0  # one class only: nothing to separate
    return F.relu(hardest_pos - hardest_neg + margin)[valid].mean()


def _train_transform(backbone: Backbone, augment: bool):
    if not augment:
        return lambda img: backbone.inputs(backbone.preprocess(img)[None])[0]
    t = backbone.transform
    pipeline = v2.Compose([
        v2.RandomResizedCrop(backbone.input_size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.2, 0.2, 0.2),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(t.mean), std=list(t.std)),
    ])
    return lambda img: pipeline(img.convert("RGB"))


def finetune(
    backbone: Backbone,
    images: Sequence[Image.Image],
    labels: Sequence[int],
    config: FinetuneConfig = FinetuneConfig(),
    *,
    progress: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Fine-tune a copy of `backbone` on `images` with class indices `labels`; returns the
    state dict of the fine-tuned, classifier-less net (CPU tensors). `backbone` is unchanged.

    `images` may be a lazy sequence (decoded on access), so memory holds one batch at a time.
    Adam; the BatchNorm statistics adapt too. Deterministic for a seed on CPU.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(images) or len(labels) < 2:
        raise ValueError("fine-tuning needs at least two labelled images")
    if len(np.unique(labels)) < 2:
        raise ValueError("fine-tuning needs labels of at least two classes")
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    device = backbone.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = copy.deepcopy(backbone.net).to(device)
        classifier = nn.Linear(backbone.dim, int(labels.max()) + 1).to(device)
        for p in net.parameters():
            p.requires_grad_(True)
        params = list(net.parameters()) + (list(classifier.parameters())
                                           if config.loss == "ce" else [])
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        transform = _train_transform(backbone, config.augment)
        net.train()
        for epoch in range(config.epochs):
            batches = (pk_batches(labels, config.p, config.k, rng) if config.sampler == "pk"
                       else plain_batches(len(labels), config.batch_size, rng))
            losses = []
            for batch in tqdm(batches, desc=f"fine-tuning {epoch + 1}/{config.epochs}",
                              unit="batch", disable=None if progress is None else not progress):
                if len(batch) < 2:
                    continue  # BatchNorm cannot train on a single image
                x = torch.stack([transform(images[i]) for i in batch]).to(device, non_blocking=True)
                y = torch.from_numpy(labels[batch]).to(device)
                emb = net(x)
                if config.loss == "ce":
                    loss = F.cross_entropy(classifier(emb), y)
                else:
                    loss = batch_hard_triplet(emb, y, config.margin)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            log.info("fine-tuning epoch %d/%d: loss %.4f", epoch + 1, config.epochs,
                     float(np.mean(losses)) if losses else float("nan"))
    log.info("fine-tuned %s on %d images in %.1f s", backbone.name, len(labels),
             time.perf_counter() - start)
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
