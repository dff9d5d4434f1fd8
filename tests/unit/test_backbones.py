"""Backbones through timm: efficientnet_lite0's packaged ImageNet weights, and the foundation
models with random initialisation and local files (no test downloads anything)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_sample_images
from timm.data import ImageNetInfo

from model.backbone import WeightsUnavailable, load_backbone, read_state_dict, save_weights
from model.timm_backbones import packaged_weights
from tests.images import png_bytes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", "DEFAULT", "cpu")


def imagenet_top5(backbone, images) -> list[list[str]]:
    """The packaged ImageNet classifier applied to the backbone's embeddings."""
    state = read_state_dict(packaged_weights())
    logits = torch.from_numpy(backbone.embed_batch(images)) @ state["_fc.weight"].T
    logits += state["_fc.bias"]
    info = ImageNetInfo()
    return [[info.index_to_description(int(i)) for i in row.topk(5).indices] for row in logits]


def test_efficientnet_lite0_recognises_photos_with_no_download(lite0):
    temple, flower = (Image.fromarray(a) for a in load_sample_images().images)
    top_temple, top_flower = imagenet_top5(lite0, [temple, flower])
    assert top_flower[0] == "daisy"
    assert {"palace", "monastery", "bell cote, bell cot"} <= set(top_temple)
    assert lite0.dim == 1280
    t = lite0.transform  # TF-Lite's convention, which the weights were trained with
    assert list(t.mean) == list(t.std) == [0.5, 0.5, 0.5] and lite0.input_size == 224


def test_fingerprints_tell_weights_and_backbones_apart(lite0):
    same = load_backbone("efficientnet_lite0", str(packaged_weights()), "cpu")
    assert same.fingerprint == lite0.fingerprint  # the same weights: embeddings are reused
    random = load_backbone("efficientnet_lite0", "none", "cpu")
    others = {random.fingerprint, load_backbone("mobilenet_v3_small", "none").fingerprint}
    assert lite0.fingerprint not in others and len(others) == 2


def test_wrong_files_for_efficientnet_lite0_are_refused(tmp_path):
    with pytest.raises(WeightsUnavailable, match="no such file"):
        load_backbone("efficientnet_lite0", str(tmp_path / "missing.pth"))
    other = tmp_path / "mobilenet.pth"
    torch.save(load_backbone("mobilenet_v3_small", "none").net.state_dict(), other)
    with pytest.raises(WeightsUnavailable, match=r"lacks \d+ backbone tensors"):
        load_backbone("efficientnet_lite0", str(other))


@pytest.mark.parametrize("name, dim, mean", [
    ("dinov2_vits14", 384, 0.485),
    ("clip_vit_b16", 768, 0.48145466),  # CLIP's own normalisation
    ("convnext_tiny_in22k", 768, 0.485),
])
def test_foundation_backbone_round_trips_through_a_local_file(tmp_path, name, dim, mean):
    bb = load_backbone(name, "none", "cpu")
    assert bb.dim == dim and bb.input_size == 224  # DINOv2 at 224, not its 518
    assert bb.transform.mean[0] == pytest.approx(mean)
    images = [Image.open(io.BytesIO(png_bytes(c, i, size=96))) for i, c in enumerate(COLOURS)]
    before = bb.embed_batch(images)
    assert before.shape == (3, dim) and np.isfinite(before).all()

    state = {k: v.clone() for k, v in bb.net.state_dict().items()}
    saved = save_weights(tmp_path, name, state)
    tensors = tmp_path / "model.safetensors"  # as the Hugging Face hub serves timm's weights
    save_file({k: v.contiguous() for k, v in state.items()}, tensors)
    for path in (saved, tensors):
        loaded = load_backbone(name, str(path), "cpu")
        np.testing.assert_allclose(loaded.embed_batch(images), before, rtol=1e-5, atol=1e-5)
        assert loaded.fingerprint != bb.fingerprint  # file weights never share random's cache


COLOURS = ("red", "green", "blue")


def test_foundation_weights_offline_and_not_cached_say_what_to_put_where(tmp_path):
    code = ("from model.backbone import load_backbone, WeightsUnavailable\n"
            "try:\n    load_backbone('dinov2_vits14', 'DEFAULT', 'cpu')\n"
            "except WeightsUnavailable as exc:\n    print(exc)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    message = out.stdout.strip()
    assert len(message.splitlines()) == 1, out.stdout + out.stderr
    assert "hf download timm/vit_small_patch14_dinov2.lvd142m" in message
    assert str(tmp_path / "hf") in message and "WEIGHTS" in message


def test_demo_uses_the_installed_weights_where_the_chosen_ones_cannot_load(tmp_path, monkeypatch):
    from tools.demo import demo_weights
    from model import backbone as backbone_mod

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(backbone_mod.torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setenv("BACKBONE", "resnet18")
    monkeypatch.delenv("WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file
    assert demo_weights() == "DEFAULT"
    assert os.environ["BACKBONE"] == "efficientnet_lite0"
