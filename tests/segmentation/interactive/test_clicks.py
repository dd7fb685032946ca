"""Clicks, the RITM simulated user, NoC and the classic predictors (fast, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustvision.registry import UnknownNameError
from robustvision.segmentation.interactive import (
    Click,
    Clicker,
    click_maps,
    create_predictor,
    disk_maps,
    evaluate_sample,
    iou,
    list_predictors,
    number_of_clicks,
    sample_next_click,
)
from robustvision.segmentation.interactive.evaluate import summarize
from robustvision.segmentation.interactive.predictor import Predictor, box_iou, object_roi, to_image_tensor


def test_clicker_picks_centre_of_square_error_region():
    gt = np.zeros((40, 50), bool)
    gt[10:21, 20:31] = True  # 11x11 square centred at (15, 25)
    click = Clicker(gt).make_next_click(np.zeros_like(gt))
    assert click == Click(15, 25, True)


def test_clicker_negative_click_on_larger_false_positive():
    gt = np.zeros((60, 60), bool)
    gt[5:10, 5:10] = True  # small missed object (FN, max DT 3)
    pred = np.zeros_like(gt)
    pred[30:51, 30:51] = True  # large false positive centred at (40, 40)
    click = Clicker(gt).next_click(pred)
    assert click == Click(40, 40, False)


def test_clicker_excludes_clicked_pixels_and_ignore():
    gt = np.zeros((21, 21), np.int64)
    gt[5:16, 5:16] = 1
    clicker = Clicker(gt)
    first = clicker.make_next_click(np.zeros((21, 21), bool))
    second = clicker.make_next_click(np.zeros((21, 21), bool))
    assert first == Click(10, 10, True) and second != first and second.is_positive
    ignored = gt.copy()
    ignored[5:16, 5:16] = 255  # everything ignored but the background: no FN left, the click is negative
    assert not Clicker(ignored).next_click(np.zeros((21, 21), bool)).is_positive


def test_clicker_border_counts_as_boundary():
    gt = np.ones((9, 9), bool)  # object fills the image: the 1-px padding makes the centre the farthest point
    assert Clicker(gt).next_click(np.zeros_like(gt)) == Click(4, 4, True)


def test_disk_area_radius_5():
    maps = click_maps([Click(30, 30, True), Click(5, 50, False)], 64, 64, radius=5)
    assert maps.shape == (2, 64, 64)
    # 81 integer points lie within distance 5 of a lattice point (pi * 25 ~ 78.5).
    assert maps[0].sum() == 81
    assert maps[1].sum() == 81
    assert maps[0, 30, 35] == 1 and maps[0, 30, 36] == 0 and maps[0, 34, 33] == 1 and maps[0, 34, 34] == 0
    pad = disk_maps(torch.tensor([[[-1.0, -1.0, -1.0]]]), 8, 8)
    assert pad.sum() == 0


def test_noc_on_toy_masks():
    assert number_of_clicks([0.2, 0.86, 0.91], 0.85) == 2
    assert number_of_clicks([0.2, 0.86, 0.91], 0.90) == 3
    assert number_of_clicks([0.2, 0.5], 0.90, max_clicks=20) == 20

    class Oracle(Predictor):
        """Reveals a 10x10 quadrant of the object per click (4 quadrants)."""

        name = "oracle"

        def __init__(self, gt):
            super().__init__()
            self.gt = gt

        def _predict(self, clicks, prev_mask):
            out = np.zeros(self.gt.shape, np.float32)
            for q, (y, x) in enumerate([(0, 0), (0, 10), (10, 0), (10, 10)][: len(clicks)]):
                out[y : y + 10, x : x + 10] = self.gt[y : y + 10, x : x + 10]
                del q
            return out

    gt = np.zeros((20, 20), np.int64)
    gt[:, :] = 1
    img = np.zeros((20, 20, 3), np.uint8)
    r = evaluate_sample(Oracle(gt), img, gt, max_clicks=20, min_clicks=1)
    assert np.allclose(r.ious, [0.25, 0.5, 0.75, 1.0])
    s = summarize("oracle", [r], thresholds=(0.85, 0.9), ks=(1, 3, 5))
    assert s.noc == {0.85: 4.0, 0.9: 4.0}
    assert s.iou_at[5] == 1.0 and s.iou_at[1] == 0.25
    assert s.over_max == {0.85: 0, 0.9: 0}


def test_iou_and_sampler():
    a = np.zeros((10, 10), bool)
    a[:5] = True
    b = np.zeros((10, 10), bool)
    b[:, :5] = True
    assert iou(a, b) == pytest.approx(25 / 75)
    assert iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    gt = np.zeros((30, 30), bool)
    gt[5:26, 5:26] = True
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        c = sample_next_click(np.zeros_like(gt), gt, generator=g)
        assert c.is_positive and 10 <= c.y <= 20 and 10 <= c.x <= 20  # inside the core (DT > max/2)
    assert sample_next_click(gt, gt) is None


def test_zoom_roi_helpers():
    m = np.zeros((100, 100), bool)
    m[40:60, 40:60] = True
    roi = object_roi(m, [Click(50, 50, True)], expansion=1.4, min_crop=10)
    assert roi[0] < 40 and roi[1] > 59 and roi[0] >= 0 and roi[1] <= 99
    assert box_iou(roi, roi) == 1.0 and box_iou((0, 9, 0, 9), (20, 29, 20, 29)) == 0.0


def test_image_contract_errors():
    with pytest.raises(ValueError, match="H x W x 3"):
        to_image_tensor(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_image_tensor(torch.full((3, 4, 4), 2.0))
    with pytest.raises(TypeError):
        to_image_tensor([[1, 2]])
    t = to_image_tensor(np.full((4, 5, 3), 255, np.uint8))
    assert t.shape == (3, 4, 5) and t.dtype == torch.float32 and float(t.max()) == 1.0


@pytest.mark.parametrize("name", ["grabcut", "random_walker"])
def test_classic_predictors_segment_a_square_and_reject_bad_input(name):
    img = np.full((48, 64, 3), 30, np.uint8)
    img[12:36, 16:48] = (220, 40, 40)
    gt = np.zeros((48, 64), np.int64)
    gt[12:36, 16:48] = 1
    p = create_predictor(name)
    p.set_image(img)
    prob = p.predict([Click(24, 32, True)])
    assert prob.shape == (48, 64) and prob.dtype == np.float32
    assert iou(prob > 0.49, gt.astype(bool)) > 0.8
    with pytest.raises(ValueError, match="outside"):
        p.predict([Click(48, 10, True)])
    with pytest.raises(ValueError, match="prev_mask"):
        p.predict([Click(4, 4, True)], prev_mask=np.zeros((10, 10)))
    r = evaluate_sample(p, img, gt, max_clicks=3)
    assert r.ious[-1] > 0.8
    with pytest.raises(ValueError, match="mask has shape"):
        evaluate_sample(p, img, gt[:10])
    with pytest.raises(ValueError, match="checkpoint"):
        create_predictor(name, checkpoint="x.safetensors")


def test_registry():
    assert {"edgeflow", "edgeflow_noedge", "grabcut", "random_walker"} <= set(list_predictors())
    with pytest.raises(UnknownNameError, match="edgeflow"):
        create_predictor("edgeflw")
    p = create_predictor("grabcut")
    with pytest.raises(RuntimeError, match="set_image"):
        p.predict([Click(0, 0, True)])
