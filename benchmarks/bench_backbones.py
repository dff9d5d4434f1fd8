"""Backbones compared: throughput on this machine's CPU cores and a linear probe on digits.

    .venv/bin/python benchmarks/bench_backbones.py            # every backbone
    .venv/bin/python benchmarks/bench_backbones.py --quick    # fewer rounds, 500 digits
    .venv/bin/python benchmarks/bench_backbones.py --only efficientnet_lite0 --only resnet18

Nothing is downloaded: pretrained weights are used only where they are already here (the torch
and Hugging Face caches; efficientnet_lite0's come with the package).
  * throughput, every backbone: images per second of the bare forward pass, batch 32, on ready
    input tensors (random weights: the weights do not change the cost), `--threads` torch
    threads (2 by default, the machine the targets are set for); one batch per backbone per
    round, rounds interleaved so that changing load hits all alike; medians over rounds. Also
    from CPU time: what an idle machine would give if both threads were busy all the time.
    Decoding and resizing come on top (`bench_model.py` measures the whole pipeline);
  * linear probe, for the backbones whose pretrained weights are here and for random-init
    resnet18 (the former default) as the reference: a logistic regression on the embeddings of
    scikit-learn's handwritten digits (64x64 RGB, dark ink on white, as the demo renders them),
    5-fold cross-validated accuracy with every label, and accuracy with 10 labels per class
    (the rest as test set, mean of 5 draws), the few-label regime active learning lives in.
And, for efficientnet_lite0, the preprocessing its weights want, measured: the TF-Lite convention
(mean = std = 0.5, timm's config) against ImageNet's mean and std, by the top ImageNet classes of
scikit-learn's two sample photos and by the digits probe.
Timings are medians of the timed batches; the load average is printed, since other processes on
a 2-core machine change every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub is imported: no downloads

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.backbone import BACKBONES, WeightsUnavailable, load_backbone  # noqa: E402
from model.timm_backbones import TIMM_BACKBONES  # noqa: E402

BATCH = 32


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def throughput(names: list[str], rounds: int) -> dict[str, tuple[float, float]]:
    """{name: (images/s wall clock, images/s from CPU time)}, medians over interleaved rounds."""
    nets, inputs = {}, {}
    for name in names:
        bb = load_backbone(name, "none", "cpu")
        nets[name] = bb.net
        inputs[name] = torch.randn(BATCH, 3, bb.input_size, bb.input_size,
                                   generator=torch.Generator().manual_seed(0))
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(rounds + 1):  # round 0 warms up: allocator, kernel choice
            for name in names if r % 2 else names[::-1]:
                t0, c0 = time.perf_counter(), time.process_time()
                nets[name](inputs[name])
                if r:
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
    threads = torch.get_num_threads()
    return {n: (BATCH / float(np.median(wall[n])), BATCH * threads / float(np.median(cpu[n])))
            for n in names}


def pretrained_here(name: str):
    """The backbone with its pretrained weights if they are here (no download), else None."""
    if name in BACKBONES:
        from torchvision import models

        url = models.get_model_weights(name).DEFAULT.url
        if not (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file():
            return None
    try:
        return load_backbone(name, "DEFAULT", "cpu")
    except WeightsUnavailable:
        return None


def digits(n: int | None) -> tuple[list[Image.Image], np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.arange(len(d.target)) if n is None else np.random.default_rng(0).permutation(
        len(d.target))[:n]
    images = [Image.fromarray((255 - d.images[i] * (255 / 16)).astype(np.uint8))
              .resize((64, 64), Image.BILINEAR).convert("RGB") for i in idx]
    return images, d.target[idx]


def probe(bb, images: list[Image.Image], y: np.ndarray) -> tuple[float, float]:
    """(5-fold accuracy with every label, accuracy with 10 labels per class)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([bb.embed_batch(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    full = float(np.mean(cross_val_score(clf, x, y, cv=5)))
    few = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        train = np.concatenate([rng.choice(np.flatnonzero(y == c), 10, replace=False)
                                for c in np.unique(y)])
        test = np.setdiff1d(np.arange(len(y)), train)
        few.append(clf.fit(x[train], y[train]).score(x[test], y[test]))
    return full, float(np.mean(few))


def with_imagenet_normalisation(bb):
    from torchvision.transforms._presets import ImageClassification

    t = bb.transform
    return dataclasses.replace(bb, transform=ImageClassification(
        crop_size=t.crop_size[0], resize_size=t.resize_size[0], interpolation=t.interpolation,
        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))


def sample_photo_classes(bb) -> list[str]:
    from sklearn.datasets import load_sample_images
    from timm.data import ImageNetInfo

    from model.backbone import read_state_dict
    from model.timm_backbones import packaged_weights

    state = read_state_dict(packaged_weights())
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    logits = torch.from_numpy(bb.embed_batch(photos)) @ state["_fc.weight"].T + state["_fc.bias"]
    info = ImageNetInfo()
    return [", ".join(info.index_to_description(int(i)).split(",")[0] for i in row.topk(3).indices)
            for row in logits]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds, 500 digits")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", action="append", help="backbones to run (default: all)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)
    names = args.only or [*TIMM_BACKBONES, *BACKBONES]
    print(f"bench_backbones: {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, load {load()}", flush=True)
    print(f"\nThroughput, bare forward, batch {BATCH} (random weights)")
    print(f"  {'backbone':<22} {'img/s':>8} {'img/s from CPU time':>20}")
    for name, (rate, cpu_rate) in throughput(names, 3 if args.quick else 5).items():
        print(f"  {name:<22} {rate:>8.1f} {cpu_rate:>20.1f}", flush=True)

    images, y = digits(500 if args.quick else None)
    print(f"\nLinear probe on {len(y)} digits: 5-fold accuracy, accuracy with 10 labels/class")
    probed = {n: pretrained_here(n) for n in names}
    probed = {n: bb for n, bb in probed.items() if bb is not None}
    if "resnet18" in names:
        probed["resnet18 (random init)"] = load_backbone("resnet18", "none", "cpu")
    scores = {}
    for name, bb in probed.items():
        full, few = scores[name] = probe(bb, images, y)
        print(f"  {name:<24} dim {bb.dim:>5}  {full:.3f}  {few:.3f}", flush=True)
    print("  (no pretrained weights here for: "
          f"{', '.join(n for n in names if n not in probed) or 'none'})")

    if "efficientnet_lite0" in probed:
        print("\nefficientnet_lite0 preprocessing: digits probe; top 3 ImageNet classes of the photos")
        bb = probed["efficientnet_lite0"]
        for label, b in (("mean=std=0.5 (TF-Lite)", bb),
                         ("ImageNet mean/std", with_imagenet_normalisation(bb))):
            full, few = scores["efficientnet_lite0"] if b is bb else probe(b, images, y)
            temple, flower = sample_photo_classes(b)
            print(f"  {label:<24} {full:.3f}  {few:.3f}; temple: {temple}; flower: {flower}",
                  flush=True)
    print(f"\nload average at the end: {load()}")


if __name__ == "__main__":
    main()
