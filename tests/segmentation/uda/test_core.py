"""Unit tests for the UDA building blocks: labels, losses, memory bank, pseudo-labels, FDA, segmenter, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustvision.segmentation.uda import (
    ID_TO_TRAINID,
    IGNORE_INDEX,
    PrototypeMemory,
    confusion_matrix,
    create_segmenter,
    entropy_loss,
    fda_source_to_target,
    ids_to_train_ids,
    list_segmenters,
    metrics_from_confusion,
)
from robustvision.segmentation.uda.labels import CLASS_NAMES


def test_label_mapping_matches_cityscapes_table():
    ids = np.arange(34)
    train = ids_to_train_ids(ids)
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    for i in ids:
        assert train[i] == expected.get(int(i), IGNORE_INDEX)
    assert sorted(v for v in ID_TO_TRAINID.values() if v != IGNORE_INDEX) == list(range(19))
    assert len(CLASS_NAMES) == 19 and CLASS_NAMES[13] == "car"


def test_label_mapping_rejects_ids_outside_table():
    with pytest.raises(ValueError, match=r"\[34, 200\].*outside the Cityscapes id table"):
        ids_to_train_ids(np.array([[7, 34], [200, 26]], dtype=np.uint8), source="x.png")
    with pytest.raises(ValueError, match="integers"):
        ids_to_train_ids(np.array([1.5]))


def test_entropy_loss_in_unit_interval_and_extremes():
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 10.0, 100.0):
        v = float(entropy_loss(torch.randn(2, 19, 5, 7, generator=g) * scale))
        assert 0.0 <= v <= 1.0
    assert float(entropy_loss(torch.zeros(1, 19, 3, 3))) == pytest.approx(1.0, abs=1e-6)
    confident = torch.full((1, 19, 3, 3), -50.0)
    confident[:, 4] = 50.0
    assert float(entropy_loss(confident)) == pytest.approx(0.0, abs=1e-6)


def test_prototype_update_keeps_unit_norm_and_absent_classes():
    g = torch.Generator().manual_seed(1)
    bank = PrototypeMemory(5, 8, momentum=0.9)
    sums = torch.randn(5, 8, generator=g)
    bank.initialise(sums, torch.tensor([3.0, 2.0, 1.0, 4.0, 0.0]))
    assert bank.present.tolist() == [True, True, True, True, False]
    assert torch.allclose(bank.prototypes[:4].norm(dim=1), torch.ones(4), atol=1e-6)
    before = bank.prototypes.clone()
    feats = torch.randn(2, 8, 3, 3, generator=g)
    labels = torch.tensor([0, 1]).view(2, 1, 1).expand(2, 3, 3).clone()  # only classes 0 and 1 present
    labels[0, 0, 0] = IGNORE_INDEX
    updated = bank.update(feats, labels)
    assert updated.tolist() == [True, True, False, False, False]
    assert torch.allclose(bank.prototypes[:2].norm(dim=1), torch.ones(2), atol=1e-6)
    assert not torch.allclose(bank.prototypes[:2], before[:2])
    assert torch.equal(bank.prototypes[2:], before[2:])  # absent classes untouched
    # The update is the normalised momentum mix with the normalised batch centre.
    f = F.normalize(feats[1].reshape(8, -1).t(), dim=1)
    centre = F.normalize(f.mean(0), dim=0)
    expect = F.normalize(0.9 * before[1] + 0.1 * centre, dim=0)
    assert torch.allclose(bank.prototypes[1], expect, atol=1e-5)


def test_pseudo_labels_mask_ambiguous_pixels():
    bank = PrototypeMemory(3, 2)
    bank.initialise(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), torch.tensor([1.0, 1.0, 0.0]))
    # Pixel 0 lies on class 0; pixel 1 on the bisector (equal distances); pixel 2 slightly nearer class 1
    # (gap below 0.05); pixel 3 clearly class 1.
    a = np.deg2rad([0.0, 45.0, 46.0, 80.0])
    feats = torch.tensor(np.stack([np.cos(a), np.sin(a)]), dtype=torch.float32).view(1, 2, 1, 4)
    labels = bank.pseudo_labels(feats, threshold=0.05)
    assert labels.shape == (1, 1, 4)
    assert labels.flatten().tolist() == [0, IGNORE_INDEX, IGNORE_INDEX, 1]
    assert bank.pseudo_labels(feats, threshold=0.0).flatten().tolist()[3] == 1
    # Class 2 is absent from the bank: never predicted.
    assert 2 not in bank.pseudo_labels(torch.randn(1, 2, 4, 4), threshold=0.0).unique().tolist()


def test_contrastive_loss_prefers_own_prototype_and_ignores():
    bank = PrototypeMemory(3, 4, temperature=0.07)
    bank.initialise(torch.eye(4)[:3], torch.ones(3))
    feats = torch.eye(4)[:3].t().reshape(1, 4, 1, 3).clone().requires_grad_(True)
    good = bank.loss(feats, torch.tensor([[[0, 1, 2]]]))
    bad = bank.loss(feats, torch.tensor([[[1, 2, 0]]]))
    assert float(good.detach()) < 0.01 < float(bad.detach())
    bad.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    none = bank.loss(feats, torch.full((1, 1, 3), IGNORE_INDEX))
    assert float(none.detach()) == 0.0


def test_bank_size_independent_of_image_and_batch():
    bank = PrototypeMemory(19, 128)
    sizes = set()
    for n, h, w in ((1, 8, 16), (8, 32, 64)):
        bank.update(torch.randn(n, 128, h, w), torch.randint(0, 19, (n, h, w)))
        sizes.add(bank.nbytes())
    assert sizes == {19 * 128 * 4 + 19}


def test_fda_moves_low_frequencies_keeps_layout():
    g = torch.Generator().manual_seed(0)
    src = torch.zeros(2, 3, 32, 64)
    src[:, :, :, ::8] = 0.6  # fine vertical stripes: high frequencies, kept by FDA
    tgt = (torch.rand(2, 3, 32, 64, generator=g) * 0.2 + 0.3).clamp(0, 1)
    tgt[:, 0] += 0.3
    out = fda_source_to_target(src, tgt, beta=0.05)
    assert out.shape == src.shape and out.min() >= 0 and out.max() <= 1
    # Mean colour follows the target; the source's edge is still there.
    assert torch.allclose(out.mean((2, 3)), tgt.mean((2, 3)), atol=0.03)
    a, b = out - out.mean((2, 3), keepdim=True), src - src.mean((2, 3), keepdim=True)
    corr = (a * b).sum((2, 3)) / (a.norm(dim=(2, 3)) * b.norm(dim=(2, 3)))
    assert (corr > 0.9).all()
    with pytest.raises(ValueError, match="same C x H x W"):
        fda_source_to_target(src, tgt[:, :, :16])


@pytest.mark.parametrize("name", ["deeplabv2_tiny", "deeplabv2_resnet18"])
def test_segmenter_outputs_logits_and_features(name):
    model = create_segmenter(name).eval()
    out = model(torch.rand(2, 3, 64, 128))
    stride = 4 if name.endswith("tiny") else 8
    assert out.logits.shape == (2, 19, 64 // stride, 128 // stride)
    assert out.aux_logits.shape == out.logits.shape
    assert out.features.shape == (2, model.feature_dim, 64 // stride, 128 // stride)
    assert [len(h.branches) for h in (model.head, model.aux_head)] == [4, 4]
    assert [b.dilation[0] for b in model.head.branches] == [6, 12, 18, 24]
    assert model.predict(torch.rand(1, 3, 64, 128)).shape == (1, 19, 64, 128)
    assert {"deeplabv2_resnet101", "deeplabv2_resnet50"} <= set(list_segmenters())


def test_unknown_segmenter_suggests_close_name():
    with pytest.raises(KeyError, match="deeplabv2_tiny"):
        create_segmenter("deeplabv2_tiy")


def test_confusion_and_miou():
    gt = torch.tensor([[0, 0, 1, 1, 255, 2]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    conf = confusion_matrix(pred, gt, 19)
    assert int(conf.sum()) == 5 and int(conf[0, 1]) == 1
    m = metrics_from_confusion(conf)
    assert m.eval_classes == [0, 1, 2]
    assert m.iou[0] == pytest.approx(0.5) and m.iou[1] == pytest.approx(2 / 3) and m.iou[2] == 1.0
    assert np.isnan(m.iou[5])
    assert m.miou == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert m.pixel_accuracy == pytest.approx(0.8)
