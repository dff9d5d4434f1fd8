"""Exports of a version answering several questions, or a multiple-choice one: backbone and
one head per question, each with its own activation and output.

Why outputs per question rather than one concatenated tensor: a consumer reads the question it
needs by name (`probabilities_<question>` in ONNX, a dict key in TorchScript) and each keeps its
own meaning (class probabilities summing to 1, or one independent probability per label).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from model.questions import DEFAULT_THRESHOLD
from model.versions import ModelVersion


class _Probabilities(nn.Module):
    """One question's head and its activation: softmax over classes, or a sigmoid per label."""

    def __init__(self, head: nn.Module, multiple: bool):
        super().__init__()
        self.head = head
        self.multiple = multiple

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.head(z)
        return torch.sigmoid(logits) if self.multiple else torch.softmax(logits, dim=1)


class QuestionsClassifier(nn.Module):
    """Preprocessed images in; per question its probabilities `[n, classes]` (a sigmoid per
    label for a multiple-choice question), by question name."""

    def __init__(self, backbone: nn.Module, heads: Sequence[nn.Module],
                 multiple: Sequence[bool], names: Sequence[str]):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList([_Probabilities(h, m) for h, m in zip(heads, multiple)])
        self.names = list(names)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.backbone(x)
        out: dict[str, torch.Tensor] = {}
        for i, head in enumerate(self.heads):
            out[self.names[i]] = head(z)
        return out


class _Outputs(nn.Module):
    """A `QuestionsClassifier` whose outputs are a tuple (ONNX names them one by one)."""

    def __init__(self, model: QuestionsClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.model.backbone(x)
        return tuple(head(z) for head in self.model.heads)


def output_names(names: Sequence[str]) -> list[str]:
    """ONNX output names per question: `probabilities_<name>`, anything but letters, digits and
    `_` replaced by `_`, made unique."""
    out: list[str] = []
    for name in names:
        base = "probabilities_" + (re.sub(r"[^A-Za-z0-9_]", "_", name) or "question")
        unique, k = base, 2
        while unique in out:
            unique, k = f"{base}_{k}", k + 1
        out.append(unique)
    return out


def questions_info(version: ModelVersion) -> list[dict]:
    """labels.json of a version answering several questions: per head, in output order, its
    question's name, classes, kind, the per-label thresholds its pre-annotations use (0.5
    where none was chosen; null for single-choice) and its ONNX output's name."""
    qs = version.questions
    return [{"name": q.name, "classes": list(q.classes), "multiple": q.multiple,
             "thresholds": ((version.thresholds(q.name) or [DEFAULT_THRESHOLD] * len(q.classes))
                            if q.multiple else None),
             "output": out}
            for q, out in zip(qs, output_names([q.name for q in qs]))]


def as_outputs(model: QuestionsClassifier) -> nn.Module:
    """`model` with a tuple of outputs in the questions' order, for ONNX to name one by one."""
    return _Outputs(model)
