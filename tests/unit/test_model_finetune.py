import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import models

from model.backbone import Backbone, load_backbone, save_weights
from model.finetune import FinetuneConfig, batch_hard_triplet, finetune, pk_batches
from model.head import predict_proba, train_head
from tests.images import png_bytes

COLOURS = ("red", "green", "blue")


@pytest.fixture(scope="module")
def tiny():
    images = [Image.open(io.BytesIO(png_bytes(c, i, size=32))) for i in range(4) for c in COLOURS]
    labels = [k for _ in range(4) for k in range(3)]
    return load_backbone("mobilenet_v3_small", "none"), images, labels


@pytest.mark.parametrize("loss, sampler", [("ce", "pk"), ("triplet", "plain")])
def test_finetune_changes_a_copy_and_the_file_gives_a_new_backbone(tmp_path, tiny, loss, sampler):
    bb, images, labels = tiny
    before = {k: v.clone() for k, v in bb.net.state_dict().items()}
    cfg = FinetuneConfig(epochs=1, loss=loss, sampler=sampler, p=3, k=2, batch_size=6, lr=1e-3)
    state = finetune(bb, images, labels, cfg, progress=False)
    for k, v in bb.net.state_dict().items():  # the serving backbone is untouched
        assert torch.equal(v, before[k])
    # Weights, not buffers: BatchNorm's running statistics change even with a learning rate of 0.
    weights = [name for name, _ in bb.net.named_parameters()]
    assert sum(not torch.equal(state[k], before[k]) for k in weights) > len(weights) / 2

    path = save_weights(tmp_path / "backbones", bb.name, state)
    tuned = load_backbone("mobilenet_v3_small", str(path))
    assert tuned.fingerprint != bb.fingerprint  # embeddings move to a new store
    assert torch.equal(tuned.net.state_dict()["features.0.0.weight"], state["features.0.0.weight"])
    again = finetune(bb, images, labels, cfg, progress=False)
    assert save_weights(tmp_path / "backbones", bb.name, again) == path  # deterministic


def test_pk_batches_are_class_balanced():
    labels = np.array([0] * 50 + [1] * 3 + [2] * 7)
    batches = pk_batches(labels, p=3, k=4, rng=np.random.default_rng(0))
    assert len(batches) == 5  # ceil(60 / 12): one epoch sees about every image once
    for batch in batches:
        assert np.bincount(labels[batch], minlength=3).tolist() == [4, 4, 4]


def test_batch_hard_triplet_is_zero_only_when_classes_are_apart():
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[1.0, 0], [1.0, 0.01], [0, 1.0], [0.01, 1.0]])
    mixed = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0.01], [0.01, 1.0]])
    assert float(batch_hard_triplet(apart, labels, margin=0.2)) == 0.0
    assert float(batch_hard_triplet(mixed, labels, margin=0.2)) > 1.0


def test_finetune_refuses_a_single_class(tiny):
    bb, images, _ = tiny
    with pytest.raises(ValueError, match="two classes"):
        finetune(bb, images[:4], [0] * 4, FinetuneConfig(epochs=1))


# -- fine-tuning learns what the frozen features cannot tell apart ----------------------------
def stripes(horizontal: bool, seed: int, size: int = 32) -> Image.Image:
    """Grey stripes 2 pixels wide at a random phase, with noise: both orientations have the
    same brightness, only the direction tells them apart."""
    rng = np.random.default_rng(seed)
    on = (np.arange(size) + rng.integers(4)) % 4 < 2
    pixels = np.where(on[:, None] if horizontal else on[None, :], 200, 50) * np.ones((size, size))
    pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([pixels] * 3, axis=-1))


def blind_backbone() -> Backbone:
    """A tiny conv net whose filters start as box blurs: its features are the same for an image
    and its transpose, so frozen they cannot tell horizontal from vertical stripes, while its
    weights can learn to (orientated filters). BatchNorm included: its buffers move regardless."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv = nn.Conv2d(3, 8, 5, padding=2, bias=False)
        nn.init.constant_(conv.weight, 1 / 75)
        net = nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 16))
    net.eval().requires_grad_(False)
    transform = models.get_model_weights("resnet18").DEFAULT.transforms(crop_size=32,
                                                                         resize_size=32)
    return Backbone("blind", "none", net, transform, 16, "blind-test")


def heldout_accuracy(bb: Backbone, train: tuple[list, list], test: tuple[list, list]) -> float:
    """A head trained on `bb`'s embeddings of `train`, scored on `test`."""
    head, _ = train_head(bb.embed_batch(train[0]), np.array(train[1]), 2)
    probs = predict_proba(head, bb.embed_batch(test[0]))
    return float((probs.argmax(1) == np.array(test[1])).mean())


def test_finetuning_changes_the_weights_and_learns_what_frozen_features_miss():
    def split(n, first):
        return [stripes(i % 2 == 0, first + i) for i in range(n)], [i % 2 for i in range(n)]

    bb, train, test = blind_backbone(), split(40, 0), split(40, 1000)
    cfg = FinetuneConfig(epochs=3, lr=1e-2, p=2, k=8)
    state = finetune(bb, *train, cfg, progress=False)
    tuned = copy.deepcopy(bb)
    tuned.net.load_state_dict(state)

    filters = state["0.weight"]
    assert (filters - bb.net.state_dict()["0.weight"]).abs().max() > 1e-2
    assert not torch.allclose(filters, filters.transpose(2, 3), atol=1e-3)  # orientated now
    assert heldout_accuracy(bb, train, test) <= 0.65  # frozen: chance
    assert heldout_accuracy(tuned, train, test) >= 0.9
