"""Frozen backbones that turn images into embeddings: torchvision's, and timm's
(`model.timm_backbones`: efficientnet_lite0 with packaged weights, DINOv2, CLIP, ConvNeXt-22k)."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision import models
from torchvision.transforms import functional as F

from model import timm_backbones
from model.timm_backbones import TIMM_BACKBONES, WeightsUnavailable

log = logging.getLogger(__name__)

# torchvision's (their weights by name from the torch cache or a download).
BACKBONES = (
    "resnet18",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "vit_b_16",
)
DEFAULT_BACKBONE = "efficientnet_lite0"  # why: the README's model table


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _strip_classifier(net: nn.Module) -> int:
    """Replace the last Linear layer by Identity so the net outputs its penultimate features."""
    last_name, last = None, None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            last_name, last = name, mod
    if last is None:
        raise ValueError("backbone has no Linear classifier to remove")
    parent = net
    *path, leaf = last_name.split(".")
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, leaf, nn.Identity())
    return last.in_features


def _resolve_weights(name: str, weights: str):
    """Return (torchvision weights enum or None, local file or None) for a WEIGHTS setting."""
    if weights.lower() == "none":
        return None, None
    path = Path(weights).expanduser()
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or path.exists():
        if not path.is_file():
            raise WeightsUnavailable(f"weights file {path} does not exist")
        return None, path
    enum = models.get_model_weights(name)
    key = weights.split(".")[-1]
    try:
        return enum[key] if key != "DEFAULT" else enum.DEFAULT, None
    except KeyError:
        names = ", ".join(["DEFAULT", *enum.__members__])
        raise WeightsUnavailable(
            f"unknown weights {weights!r} for {name}; use one of {names}, a local file, or none"
        ) from None


def _load_named_weights(net: nn.Module, name: str, enum) -> None:
    filename = enum.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    try:
        state = torch.hub.load_state_dict_from_url(enum.url, progress=False, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise WeightsUnavailable(
            f"weights {enum} for {name} are not cached and could not be downloaded ({exc}). "
            f"Download {enum.url} and save it as {cached} (TORCH_HOME sets the folder), "
            f"or set WEIGHTS to a local file or to none."
        ) from None
    net.load_state_dict(state)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, unwrapped from {"state_dict": ...} or {"model": ...}
    and from DataParallel's "module." prefix, or a .safetensors file (as the Hugging Face hub
    serves timm's weights); never unpickles arbitrary objects."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle and zip errors of many kinds
        raise WeightsUnavailable(f"{path} is not a torch state dict file ({exc})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(f"{path} holds no state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_file_weights(net: nn.Module, name: str, path: Path) -> None:
    """Load a file into the classifier-less net: a classifier in the file (any size) is ignored."""
    state = read_state_dict(path)
    if name == "efficientnet_lite0":
        try:
            state = timm_backbones.from_efficientnet_pytorch(state, net)
        except ValueError as exc:
            raise WeightsUnavailable(f"{path} does not fit {name}: {exc}") from None
    try:
        missing, _ = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of the wrong shape: another architecture
        first = str(exc).strip().splitlines()[-1].strip()
        raise WeightsUnavailable(f"{path} does not fit {name}: {first}") from None
    if missing:
        raise WeightsUnavailable(
            f"{path} lacks {len(missing)} backbone tensors, e.g. {missing[:3]}")


def file_digest(path: Path) -> str:
    """Short content digest: a weights file's digest is part of the backbone fingerprint."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Short digest of a state dict's names and values (torch.save's bytes are not stable)."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def save_weights(folder: Path, name: str, state: dict[str, torch.Tensor]) -> Path:
    """Write a backbone state dict as `<folder>/<name>-<digest>.pth`, atomically; the same
    weights always land in the same file (and so keep their fingerprint and embeddings)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{state_digest(state)}.pth"
    if path.is_file():
        return path
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pth", dir=folder)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


@dataclass
class Backbone:
    """A frozen feature extractor with the preprocessing its weights define."""

    name: str
    weights: str
    net: nn.Module
    transform: nn.Module
    dim: int
    fingerprint: str
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def input_size(self) -> int:
        """Side of the square the weights' preprocessing crops to (224 for most)."""
        return int(self.transform.crop_size[0])

    @property
    def resize_size(self) -> int:
        """Shorter side an image is resized to before the centre crop."""
        return int(self.transform.resize_size[0])

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """`[3, s, s]` uint8 tensor of one decoded image, resized and centre-cropped as the
        weights define. Runs in the decode threads; scaling and normalisation follow once per
        batch (`inputs`), where one large op is far cheaper than many small ones."""
        t = self.transform
        img = F.resize(img.convert("RGB"), t.resize_size, interpolation=t.interpolation,
                       antialias=True)
        # Channels first, copied here in the worker with numpy (no torch thread pool involved):
        # a strided view would make the batch stack a slow copy on the forward's thread.
        pixels = np.asarray(F.center_crop(img, t.crop_size))
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))

    def inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's input for a uint8 batch `[n, 3, s, s]`: float in [0, 1], normalised with
        the weights' mean and std (torchvision's preprocessing, split in two)."""
        t = self.transform
        mean = torch.tensor(t.mean, device=batch.device).view(1, -1, 1, 1)
        std = torch.tensor(t.std, device=batch.device).view(1, -1, 1, 1)
        return (batch.float() / 255.0 - mean) / std

    @torch.inference_mode()
    def embed_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Embeddings `[n, dim]` (float32) of a batch from `preprocess` (uint8) or of network
        inputs (float, already normalised)."""
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.device.type == "cuda":
            batch = batch.pin_memory()  # lets the copy overlap with the previous batch's work
        batch = batch.to(self.device, non_blocking=True)
        if batch.dtype == torch.uint8:  # a quarter of the bytes to move; normalised on device
            batch = self.inputs(batch)
        return self.net(batch).float().cpu().numpy()

    def embed_batch(self, images: list[Image.Image]) -> np.ndarray:
        """Embeddings `[n, dim]` (float32) of already decoded images."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_tensors(torch.stack([self.preprocess(img) for img in images]))


def _torchvision(name: str, weights: str) -> tuple[nn.Module, nn.Module, int, str]:
    """(net without classifier, preprocessing, feature size, fingerprint tag)."""
    enum, path = _resolve_weights(name, weights)
    # Random weights must be the same in every process (server and workers share embeddings).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = models.get_model(name, weights=None)
    tag = "random-seed0"
    if enum is not None:
        _load_named_weights(net, name, enum)
        tag = f"{enum.__class__.__name__}.{enum.name}"
    dim = _strip_classifier(net)
    if path is not None:
        _load_file_weights(net, name, path)
        tag = f"file-{file_digest(path)}"
    transform = (enum or models.get_model_weights(name).DEFAULT).transforms()
    return net, transform, dim, tag


def _timm(name: str, weights: str) -> tuple[nn.Module, nn.Module, int, str]:
    """As `_torchvision`. DEFAULT: efficientnet_lite0's packaged weights (the same embeddings and
    fingerprint as WEIGHTS set to that file), the others' from the Hugging Face cache."""
    spec = TIMM_BACKBONES[name]
    key = weights.lower()
    path = None
    if key == "default" and name == "efficientnet_lite0":
        path = timm_backbones.packaged_weights()
    elif key == "default":
        net = timm_backbones.create(name, pretrained=True)
        tag = f"timm-{spec.arch}"
        return net, timm_backbones.preprocessing(net, spec), net.num_features, tag
    elif key != "none":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(
                f"weights {weights!r} for {name}: no such file; use DEFAULT, a local file "
                f"(.pth state dict or .safetensors), or none")
    net = timm_backbones.create(name)
    tag = "random-seed0"
    if path is not None:
        _load_file_weights(net, name, path)
        tag = f"file-{file_digest(path)}"
    return net, timm_backbones.preprocessing(net, spec), net.num_features, tag


def load_backbone(name: str, weights: str = "DEFAULT", device: str = "auto") -> Backbone:
    """Build backbone `name` with `weights`: DEFAULT (its pretrained weights), a torchvision
    weights name, a local file, or none (random initialisation, the same in every process)."""
    if name in TIMM_BACKBONES:
        net, transform, dim, tag = _timm(name, weights)
    elif name in BACKBONES:
        net, transform, dim, tag = _torchvision(name, weights)
    else:
        names = ", ".join([*TIMM_BACKBONES, *BACKBONES])
        raise ValueError(f"unknown backbone {name!r}; choose one of {names}")
    if tag == "random-seed0":
        log.warning("backbone %s uses random weights (WEIGHTS=none): embeddings are weak", name)
    dev = pick_device(device)
    net.eval().to(dev)
    for p in net.parameters():
        p.requires_grad_(False)
    fingerprint = hashlib.sha256(f"{name}|{tag}".encode()).hexdigest()[:16]
    return Backbone(name, weights, net, transform, dim, fingerprint, dev)
