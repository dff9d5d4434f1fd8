"""Self-contained models out (ONNX, TorchScript) and users' own classifiers in.

An export is backbone + head + softmax in one file (for a version answering several questions,
or a multiple-choice one: backbone + one head per question, each with its softmax or sigmoids,
one output each): ONNX, which onnxruntime runs without torch
(what camera-trap and edge pipelines ship), and TorchScript, which needs only torch (deprecated
by torch, kept for existing users and for `import-model`). An import turns a classifier trained
elsewhere into a backbone weights file and a head, the two halves every version of this backend
is made of.
"""

from __future__ import annotations

import copy
import json
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import models

from model.backbone import BACKBONES, Backbone, read_state_dict
from model.timm_backbones import TIMM_BACKBONES
from model.export_readme import readme
from model.export_questions import (
    QuestionsClassifier,
    as_outputs,
    questions_info,
)
from model.head import Ensemble, Head, build_head, predict_proba
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


FORMATS = ("onnx", "torchscript")
FILES = {"onnx": "model.onnx", "torchscript": "model.pt"}
ONNX_OPSET = 17  # read by every onnxruntime since 1.11 (2022)
TOLERANCE = 1e-4  # largest difference allowed between an export's and the backend's probabilities


def model_info(backbone: Backbone, version: ModelVersion) -> dict:
    """What an export is: classes in output order (or per output, its question), where it
    comes from, its preprocessing."""
    labels = ({"questions": questions_info(version)} if version.several_questions
              else {"classes": version.classes})
    return {
        **labels,
        "version": version.name,
        "project": version.meta.get("project"),
        "backbone": backbone.name,
        "backbone_fingerprint": backbone.fingerprint,
        "head_config": version.head.config,
        "preprocessing": preprocessing(backbone),
    }


def _classifier(backbone: Backbone, version: ModelVersion) -> Classifier | QuestionsClassifier:
    """Copies on the CPU, in eval mode: no dropout, an ensemble gives its members' mean."""
    net = copy.deepcopy(backbone.net).cpu()
    if version.several_questions:
        heads = [copy.deepcopy(h).cpu() for h in version.heads]
        qs = version.questions
        return QuestionsClassifier(net, heads, [q.multiple for q in qs],
                                   [q.name for q in qs]).eval()
    return Classifier(net, copy.deepcopy(version.head).cpu()).eval()


def export_torchscript(backbone: Backbone, version: ModelVersion, path: Path) -> dict:
    """Write `version` on `backbone` as one TorchScript file; returns the info stored in it."""
    with _quiet_torchscript():
        scripted = torch.jit.script(_classifier(backbone, version))
    info = {"format": "al-backend-torchscript/1", **model_info(backbone, version)}
    with _quiet_torchscript():
        torch.jit.save(scripted, str(path), _extra_files={INFO_FILE: json.dumps(info)})
    return info


def export_onnx(backbone: Backbone, version: ModelVersion, path: Path) -> dict:
    """Write `version` on `backbone` as one ONNX file (input `image` [n, 3, s, s], output
    `probabilities` [n, classes], any n) carrying its info as metadata; returns the info.

    Uses torch's TorchScript-based exporter (`dynamo=False`): it needs only the onnx package,
    where the torch.export-based one also needs onnxscript and took five times as long here
    (20 s against 4 s for mobilenet_v3_small). torch marks it deprecated; the file it writes is
    plain ONNX.
    """
    import onnx

    module = _classifier(backbone, version)
    outputs = ["probabilities"]
    if isinstance(module, QuestionsClassifier):  # one output per question's head
        module, outputs = as_outputs(module), [q["output"] for q in questions_info(version)]
    x = torch.zeros(1, 3, backbone.input_size, backbone.input_size)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    # Attention's fused CPU kernel has no ONNX form (vit_b_16); its plain ops do.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                module, (x,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                input_names=["image"], output_names=outputs,
                dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
            )
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    info = {"format": "onnx", "onnx_opset": ONNX_OPSET, **model_info(backbone, version)}
    proto = onnx.load(str(path))
    # onnxruntime shows these as session.get_modelmeta().custom_metadata_map.
    onnx.helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v)
                                        for k, v in info.items() if v is not None})
    what = (", ".join(version.classes) if "classes" in info else
            "; ".join(f"{q['name']}: {', '.join(q['classes'])}" for q in info["questions"]))
    proto.doc_string = f"{what} classifier ({version.name})"
    onnx.save(proto, str(path))
    return info


def onnx_probabilities(path: Path, x: np.ndarray) -> np.ndarray:
    """Run an exported ONNX model with onnxruntime on the CPU: probabilities `[n, classes]`."""
    return onnx_outputs(path, x)["probabilities"]


def onnx_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of an exported ONNX model run with onnxruntime on the CPU, by name."""
    import onnxruntime as ort  # only export checks and tests need it

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": np.asarray(x, dtype=np.float32)})))


def write_export(backbone: Backbone, version: ModelVersion, folder: Path,
                 formats: Sequence[str] = FORMATS) -> dict:
    """Write `version` into `folder` in each of `formats`, with labels.json, model.json,
    metrics.json and README.md, then check every model file answers as the backend does
    (ValueError otherwise). Returns the model's info."""
    unknown = sorted(set(formats) - set(FORMATS))
    formats = tuple(f for f in FORMATS if f in formats)
    if unknown or not formats:
        raise ValueError(f"unknown export format {', '.join(unknown) or '(none)'}: "
                         f"use {', '.join(FORMATS)}")
    info = model_info(backbone, version)
    if "torchscript" in formats:
        export_torchscript(backbone, version, folder / FILES["torchscript"])
    if "onnx" in formats:
        info = {**info, "onnx_opset": export_onnx(backbone, version, folder / FILES["onnx"])[
            "onnx_opset"]}
    labels = info["questions"] if "questions" in info else version.classes
    (folder / "labels.json").write_text(json.dumps(labels, indent=2))
    (folder / "model.json").write_text(json.dumps(
        {**info, "files": {f: FILES[f] for f in formats}}, indent=2))
    metrics = {k: version.meta.get(k) for k in (
        "version", "n_labels", "label_counts", "n_heldout", "metrics", "n_test",
        "test_metrics", "promotion", "created_at")}
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (folder / "README.md").write_text(readme(info, formats))
    check_export(folder, backbone, version, formats)
    return info


def check_export(folder: Path, backbone: Backbone, version: ModelVersion,
                 formats: Sequence[str] = FORMATS) -> None:
    """Each exported model must give the backend's own probabilities (`predict_proba` of the
    head on the backbone's embeddings) within TOLERANCE on the same inputs, every question's
    head for a version answering several; ValueError if not."""
    x = torch.randn(3, 3, backbone.input_size, backbone.input_size,
                    generator=torch.Generator().manual_seed(0))
    # Embedded on the CPU, as the exports run here: on a GPU, TF32 convolutions alone would
    # differ by more than TOLERANCE.
    with torch.inference_mode():
        embeddings = _classifier(backbone, version).backbone(x).numpy()
    several = version.several_questions
    if several:  # per question, the probabilities serving computes (sigmoids: multiple-choice)
        qs = questions_info(version)
        want = {q["name"]: predict_proba(h, embeddings) for q, h in zip(qs, version.heads)}
    else:
        want = {"": predict_proba(version.head, embeddings)}
    for fmt in formats:
        path = folder / FILES[fmt]
        if fmt == "onnx":
            out = onnx_outputs(path, x.numpy())
            got = ({q["name"]: out.get(q["output"]) for q in qs} if several
                   else {"": out.get("probabilities")})
        else:
            with torch.no_grad():
                out = load_torchscript(path)(x)
            got = ({k: v.numpy() for k, v in out.items()} if several else {"": out.numpy()})
        for name, w in want.items():
            g = got.get(name)
            what = f"question {name!r} of " if several else ""
            if g is None or g.shape != w.shape or not np.allclose(g, w, atol=TOLERANCE):
                diff = (f"shape {None if g is None else g.shape}"
                        if g is None or g.shape != w.shape else abs(g - w).max())
                raise ValueError(f"{what}exported {path.name} differs from the backend's model "
                                 f"by {diff}")


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


def classifier(name: str, n_classes: int | None = None) -> tuple[nn.Module, str]:
    """(randomly initialised classifier network `name`, the module name of its last layer),
    as torchvision's `models.get_model` or timm's `create_model` builds it."""
    if name in TIMM_BACKBONES:
        import timm

        spec = TIMM_BACKBONES[name]
        kw = {} if n_classes is None else {"num_classes": n_classes}
        net = timm.create_model(spec.arch, pretrained=False, **spec.options, **kw)
        return net, net.pretrained_cfg["classifier"]
    net = models.get_model(name, weights=None, **({} if n_classes is None else
                                                  {"num_classes": n_classes}))
    last = None
    for module_name, mod in net.named_modules():
        if isinstance(mod, nn.Linear):
            last = module_name
    return net, last


def split_torchscript(path: Path) -> tuple[str, dict, Head | Ensemble, list[str]]:
    """(backbone name, backbone state dict, head, classes) of a file `export` wrote."""
    extra = {INFO_FILE: ""}
    loaded = load_torchscript(path, extra)
    if not extra[INFO_FILE]:
        raise ValueError(f"{path} is a TorchScript file but not one this backend exported "
                         "(it lacks model.json); import a state dict instead")
    info = json.loads(extra[INFO_FILE])
    if "classes" not in info:
        names = ", ".join(q["name"] for q in info.get("questions") or [])
        raise ValueError(f"{path} answers several questions ({names}); import-model takes a "
                         "classifier of one single-choice question")
    head = build_head(info["head_config"])
    head.load_state_dict(loaded.head.state_dict())
    state = {k: v.clone() for k, v in loaded.backbone.state_dict().items()}
    return info["backbone"], state, head, list(info["classes"])


def split_state_dict(path: Path, name: str, n_labels: int | None,
                     dropout: float = 0.2) -> tuple[dict, Head]:
    """(backbone state dict, head) of a classifier `name` saved as a state dict.

    The file must hold every tensor of torchvision's `models.get_model(name, num_classes=K)` or,
    for the timm backbones, timm's `create_model` of the same architecture; its last Linear
    layer (the classifier, K outputs) becomes a linear head, the rest the backbone.
    """
    known = (*TIMM_BACKBONES, *BACKBONES)
    if name not in known:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(known)}")
    state = read_state_dict(path)
    _, fc = classifier(name)
    if f"{fc}.weight" not in state:
        raise ValueError(f"{path} is not a {name} classifier: it has no {fc}.weight")
    k = state[f"{fc}.weight"].shape[0]
    if n_labels is not None and n_labels != k:
        raise ValueError(f"{path} has {k} outputs but the labels file names {n_labels} classes")
    net, _ = classifier(name, k)
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
