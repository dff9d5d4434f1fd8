import io

import numpy as np
import pytest
import torch
from PIL import Image

from model.backbone import load_backbone, save_weights
from model.finetune import FinetuneConfig, batch_hard_triplet, finetune, pk_batches
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
    assert any(not torch.equal(state[k], before[k])
               for k in before if before[k].is_floating_point())

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
