"""Self-contained models out (TorchScript) and users' own classifiers in.

An export is backbone + head + softmax in one TorchScript file that needs only torch to run; an
import turns a classifier trained elsewhere into a backbone weights file and a head, the two
halves every version of this backend is made of.
"""

from __future__ import annotations

import copy
import json
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from model.backbone import BACKBONES, Backbone, read_state_dict
from model.head import Ensemble, Head, build_head
from model.versions import ModelVersion

INFO_FILE = "model.json"  # stored inside the TorchScript archive


class Classifier(nn.Module):
    """Preprocessed images `[n, 3, s, s]` in, class probabilities `[n, classes]` out."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.backbone(x)), dim=1)


def preprocessing(backbone: Backbone) -> dict:
    """The input an exported model expects, as its weights define it."""
    t = backbone.transform
    return {
        "resize_shorter_side": backbone.resize_size,
        "interpolation": str(t.interpolation.value),
        "center_crop": backbone.input_size,
        "scale": "RGB uint8 / 255 -> float32 in [0, 1]",
        "mean": [float(m) for m in t.mean],
        "std": [float(s) for s in t.std],
        "layout": "NCHW",
    }


def export_torchscript(backbone: Backbone, version: ModelVersion, path: Path) -> dict:
    """Write `version` on `backbone` as one TorchScript file; returns the info stored in it."""
    module = Classifier(copy.deepcopy(backbone.net).cpu(), copy.deepcopy(version.head)).eval()
    with _quiet_torchscript():
        scripted = torch.jit.script(module)
    info = {
        "format": "al-backend-torchscript/1",
        "classes": version.classes,
        "version": version.name,
        "project": version.meta.get("project"),
        "backbone": backbone.name,
        "backbone_fingerprint": backbone.fingerprint,
        "head_config": version.head.config,
        "preprocessing": preprocessing(backbone),
    }
    with _quiet_torchscript():
        torch.jit.save(scripted, str(path), _extra_files={INFO_FILE: json.dumps(info)})
    return info


def load_torchscript(path: Path, extra: dict[str, str] | None = None) -> torch.jit.ScriptModule:
    with _quiet_torchscript():
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra or {})


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """TorchScript is deprecated in favour of torch.export, but it is still what loads with
    nothing but `torch.jit.load`; its FutureWarnings would only confuse CLI users."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `code/` folder; state dicts have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in name for name in zf.namelist())


def read_labels(path: Path) -> list[str]:
    """Class names in output order: a JSON list, or a JSON object {"0": name, ...}."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        try:
            data = [data[k] for k in sorted(data, key=int)]
        except ValueError:
            raise ValueError(f"{path}: keys must be output indices 0..n-1") from None
    if not isinstance(data, list) or not all(isinstance(c, str) and c for c in data):
        raise ValueError(f"{path}: expected a JSON list of class names")
    if len(set(data)) != len(data):
        raise ValueError(f"{path}: class names must be unique")
    return data


def _classifier_name(net: nn.Module) -> str:
    last = None
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    return last


def split_torchscript(path: Path) -> tuple[str, dict, Head | Ensemble, list[str]]:
    """(backbone name, backbone state dict, head, classes) of a file `export` wrote."""
    extra = {INFO_FILE: ""}
    loaded = load_torchscript(path, extra)
    if not extra[INFO_FILE]:
        raise ValueError(f"{path} is a TorchScript file but not one this backend exported "
                         "(it lacks model.json); import a state dict instead")
    info = json.loads(extra[INFO_FILE])
    head = build_head(info["head_config"])
    head.load_state_dict(loaded.head.state_dict())
    state = {k: v.clone() for k, v in loaded.backbone.state_dict().items()}
    return info["backbone"], state, head, list(info["classes"])


def split_state_dict(path: Path, name: str, n_labels: int | None,
                     dropout: float = 0.2) -> tuple[dict, Head]:
    """(backbone state dict, head) of a torchvision classifier `name` saved as a state dict.

    The file must hold every tensor of `models.get_model(name, num_classes=K)`; its last Linear
    layer (the classifier, K outputs) becomes a linear head, the rest the backbone.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    state = read_state_dict(path)
    net = models.get_model(name, weights=None)
    fc = _classifier_name(net)
    if f"{fc}.weight" not in state:
        raise ValueError(f"{path} is not a {name} classifier: it has no {fc}.weight")
    k = state[f"{fc}.weight"].shape[0]
    if n_labels is not None and n_labels != k:
        raise ValueError(f"{path} has {k} outputs but the labels file names {n_labels} classes")
    net = models.get_model(name, weights=None, num_classes=k)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{path} does not fit {name}: {first}") from None
    linear = net.get_submodule(fc)
    head = Head(linear.in_features, k, hidden=0, dropout=dropout)
    with torch.no_grad():
        head.body[1].weight.copy_(linear.weight)
        head.body[1].bias.copy_(linear.bias)
    backbone_state = {key: v for key, v in state.items() if not key.startswith(f"{fc}.")}
    return backbone_state, head.eval()


README = """# {title}

A self-contained image classifier exported by the active-learning backend
(project {project}, version {version}, backbone {backbone}).

Files:

- `model.pt`: TorchScript module: backbone + head + softmax. Input: a float32 tensor
  `[n, 3, {crop}, {crop}]` of preprocessed RGB images; output: `[n, {n_classes}]` class
  probabilities, columns in the order of `labels.json`.
- `labels.json`: class names, in output order.
- `metrics.json`: how this version did on its held-out tasks when it was trained.

## Preprocessing

Exactly what the backbone's weights expect (torchvision's `{backbone}` transforms):

1. decode to RGB;
2. resize so the shorter side is {resize} pixels ({interpolation} interpolation, antialiased);
3. crop the central {crop} x {crop} square;
4. scale to float32 in [0, 1] (divide by 255), channels first;
5. normalise each channel: subtract mean {mean}, divide by std {std}.

## Loading

```python
import json
import torch
from PIL import Image
from torchvision.transforms import v2

model = torch.jit.load("model.pt").eval()
labels = json.load(open("labels.json"))
preprocess = v2.Compose([
    v2.ToImage(),
    v2.Resize({resize}, interpolation=v2.InterpolationMode.{interp_enum}, antialias=True),
    v2.CenterCrop({crop}),
    v2.ToDtype(torch.float32, scale=True),
    v2.Normalize(mean={mean}, std={std}),
])
x = preprocess(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)
with torch.no_grad():
    probs = model(x)[0]
print(labels[int(probs.argmax())], float(probs.max()))
```

Only `torch` is needed to run `model.pt`; the snippet uses torchvision and Pillow for
preprocessing. `python -m ml_backend import-model --project ID model.pt` makes this file a
version of a project again.
"""


def readme(info: dict) -> str:
    p = info["preprocessing"]
    return README.format(
        title=f"Image classifier: {', '.join(info['classes'])}",
        project=info.get("project"), version=info["version"], backbone=info["backbone"],
        crop=p["center_crop"], resize=p["resize_shorter_side"], n_classes=len(info["classes"]),
        interpolation=p["interpolation"], interp_enum=p["interpolation"].upper(),
        mean=p["mean"], std=p["std"],
    )
