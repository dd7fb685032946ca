"""Data loaders (GrabCut/Berkeley/DAVIS layouts), the synthetic training set and the iseg CLI."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robustvision.commands.iseg import app
from robustvision.segmentation.interactive.data import (
    SyntheticObjects,
    encode_fbrs_mask,
    load_berkeley,
    load_davis,
    load_grabcut,
    package_photos,
)
from robustvision.segmentation.interactive.model import EdgeFlowConfig, EdgeFlowNet, save_edgeflow

runner = CliRunner()


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


def test_fbrs_mask_encoding():
    raw = np.array([[0, 128, 255, 200]], np.uint8)
    assert encode_fbrs_mask(raw).tolist() == [[0, 255, 1, 1]]


def test_grabcut_layout_and_errors(fake_grabcut, tmp_path):
    fake_grabcut(tmp_path)
    _write(tmp_path / "boundary_GT" / "orphan.png", np.zeros((40, 60), np.uint8))  # mask without image: skipped
    samples = load_grabcut(tmp_path)
    assert [s.name for s in samples] == ["im0", "im1"]
    name, image, mask = samples[0]
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    assert mask.dtype == np.int64 and set(np.unique(mask)) == {0, 1, 255}
    # An image without its mask.
    _write(tmp_path / "data_GT" / "lonely.jpg", np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="no mask"):
        load_grabcut(tmp_path)
    (tmp_path / "data_GT" / "lonely.jpg").unlink()
    # A mask of another size.
    _write(tmp_path / "boundary_GT" / "im1.bmp", np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match="20x20 but its image is 60x40"):
        load_grabcut(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_grabcut(tmp_path / "missing")


def test_berkeley_and_davis_layouts(tmp_path):
    img = np.zeros((20, 30, 3), np.uint8)
    m = np.zeros((20, 30, 3), np.uint8)
    m[5:10, 5:10, 1] = 255
    _write(tmp_path / "davis" / "img" / "a.jpg", img)
    _write(tmp_path / "davis" / "gt" / "a.png", m)
    d = load_davis(tmp_path / "davis")
    assert d[0].mask.sum() == 25
    _write(tmp_path / "berk" / "images" / "b.jpg", img)
    _write(tmp_path / "berk" / "masks" / "b.png", m[..., 1])
    assert load_berkeley(tmp_path / "berk")[0].mask.sum() == 25


@pytest.mark.shared_data
def test_shared_grabcut(shared_data):
    samples = load_grabcut(shared_data / "grabcut")
    assert len(samples) == 20
    for s in samples:
        assert s.mask.shape == s.image.shape[:2] and (s.mask == 1).any()


def test_synthetic_objects_deterministic_and_valid():
    ds = SyntheticObjects(length=6, size=64, seed=1, include_backgrounds=False)
    assert len(ds.photos) >= 10  # skimage + sklearn + matplotlib photos, no download
    img, mask = ds[3]
    img2, mask2 = ds[3]
    assert torch.equal(img, img2) and torch.equal(mask, mask2)
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) <= {0, 1}
    for i in range(6):
        frac = float(ds[i][1].float().mean())
        assert 0.01 < frac < 0.7


@pytest.mark.shared_data
def test_package_photos_exclude_evaluation_images(shared_data):
    photos = package_photos(include_backgrounds=True)
    grab = [s.image for s in load_grabcut(shared_data / "grabcut")]
    shapes = {p.shape for p in photos}
    for g in grab:  # no GrabCut image is among the training photos (compare same-shape ones pixel-wise)
        if g.shape in shapes:
            assert not any(p.shape == g.shape and np.array_equal(p, g) for p in photos)


def _tiny_ckpt(tmp_path: Path) -> Path:
    net = EdgeFlowNet(EdgeFlowConfig(width=4, num_branches=2, stem_channels=8, head_channels=8, fine_channels=4))
    return save_edgeflow(net.eval(), tmp_path / "tiny.safetensors", {"inference": {"target_size": 64}})


def test_cli_predict_and_errors(tmp_path):
    ck = _tiny_ckpt(tmp_path)
    img = np.zeros((40, 60, 3), np.uint8)
    img[10:30, 15:45] = 220
    _write(tmp_path / "im.png", img)
    out = tmp_path / "mask.png"
    r = runner.invoke(app, ["predict", str(tmp_path / "im.png"), "-c", "20,30,+", "-c", "2,2,-", "--out", str(out),
                            "--checkpoint", str(ck)])  # fmt: skip
    assert r.exit_code == 0, r.output
    mask = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (40, 60) and set(np.unique(mask)) <= {0, 255}
    r = runner.invoke(app, ["predict", str(tmp_path / "im.png"), "-c", "50,30,+", "--out", str(out),
                            "--predictor", "grabcut"])  # fmt: skip
    assert r.exit_code != 0 and "outside the 40x60 image" in str(r.exception)
    r = runner.invoke(app, ["predict", str(tmp_path / "im.png"), "-c", "5,5", "--out", str(out)])
    assert r.exit_code != 0 and "y,x,+" in str(r.exception)


def test_cli_evaluate_and_train(fake_grabcut, tmp_path):
    fake_grabcut(tmp_path / "gc")
    js = tmp_path / "rows.json"
    r = runner.invoke(app, ["evaluate", "-p", "grabcut", "--root", str(tmp_path / "gc"), "--max-clicks", "3",
                            "--json", str(js)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "NoC@90" in js.read_text()
    r = runner.invoke(app, ["evaluate", "-p", "grabcutt", "--root", str(tmp_path / "gc")])
    assert r.exit_code != 0 and "did you mean" in str(r.exception)
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "m.pt")])
    assert r.exit_code != 0 and ".safetensors" in str(r.exception)
    for bad in (["--workers", "-1"], ["--blocks", "0"], ["--overflow-prob", "1.5"], ["--extra-clicks", "30"]):
        r = runner.invoke(app, ["train", "--out", str(tmp_path / "m.safetensors"), *bad])
        assert r.exit_code != 0 and "--workers" in str(r.exception)
    r = runner.invoke(app, ["train", "--out", str(tmp_path / "m.safetensors"), "--single-click-prob", "-0.1"])
    assert r.exit_code != 0 and "--single-click-prob must be in [0, 1]" in str(r.exception)


def _coco_folder(tmp_path: Path) -> Path:
    """A two-image COCO/LVIS layout: COCO entries name files, LVIS entries name coco_url; polygons and RLE."""
    import json

    from pycocotools import mask as mask_utils

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "train2017").mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2):
        cv2.imwrite(str(root / "train2017" / f"{i:012d}.jpg"), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    square = [[40.0, 30.0, 100.0, 30.0, 100.0, 90.0, 40.0, 90.0]]  # 60 x 60 px
    blob = np.zeros((120, 160), np.uint8, order="F")
    blob[10:70, 60:150] = 1
    rle = mask_utils.encode(blob)
    rle["counts"] = rle["counts"].decode()
    coco = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 120, "width": 160}],
        "annotations": [
            {"id": 1, "image_id": 1, "segmentation": square, "area": 3600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "segmentation": square, "area": 3600, "iscrowd": 1},  # crowd: skipped
            {"id": 3, "image_id": 1, "segmentation": [[1, 1, 5, 1, 5, 5]], "area": 8, "iscrowd": 0},  # tiny
        ],
    }
    lvis = {
        "images": [
            {
                "id": 2,
                "coco_url": "http://images.cocodataset.org/train2017/000000000002.jpg",
                "height": 120,
                "width": 160,
            }
        ],  # fmt: skip
        "annotations": [{"id": 9, "image_id": 2, "segmentation": rle, "area": float(blob.sum())}],
    }
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    (root / "annotations" / "lvis_v1_train.json").write_text(json.dumps(lvis))
    return root


def test_coco_and_lvis_layouts(tmp_path):
    from robustvision.segmentation.interactive.data import CocoInstances

    root = _coco_folder(tmp_path)
    coco, lvis, both = (CocoInstances(root, name, size=64) for name in ("coco", "lvis", "coco_lvis"))
    assert (len(coco), len(lvis), len(both)) == (1, 1, 2)  # crowd and tiny instances dropped
    assert coco.mask(0).sum() == pytest.approx(3600, rel=0.05) and coco.mask(0)[60, 70] == 1
    assert lvis.mask(0).sum() == 60 * 90 and lvis.mask(0)[40, 100] == 1
    for ds in (coco, lvis):
        img, mask = ds[0]
        assert img.shape == (3, 64, 64) and mask.shape == (64, 64) and (mask == 1).any() and (mask == 0).any()
        assert torch.equal(ds[0][1], mask)  # deterministic per index
    with pytest.raises(FileNotFoundError, match="lvis_v1_train.json"):
        (root / "annotations" / "lvis_v1_train.json").unlink()
        CocoInstances(root, "coco_lvis")
    with pytest.raises(ValueError, match="known: coco, lvis, coco_lvis"):
        CocoInstances(root, "cocoo")


def test_cli_trains_on_a_coco_folder(tmp_path):
    root = _coco_folder(tmp_path)
    out = tmp_path / "m.safetensors"
    args = ["train", "--out", str(out), "--steps", "1", "--batch-size", "2", "--crop", "48", "--width", "4"]
    r = CliRunner().invoke(app, [*args, "--train-set", "coco_lvis", "--root", str(root)])
    assert r.exit_code == 0, r.output
    assert "--train-set coco_lvis" in __import__("json").loads(out.with_suffix(".json").read_text())["command"]
    r = CliRunner().invoke(app, [*args, "--train-set", "coco"])
    assert r.exit_code != 0 and "needs --root" in str(r.exception)


def test_sbd_layout_and_training_crops(tmp_path):
    from scipy.io import savemat

    from robustvision.segmentation.interactive.data import CropSamples, load_sbd

    root = tmp_path / "SBD" / "dataset"
    (root / "img").mkdir(parents=True)
    (root / "inst").mkdir()
    cv2.imwrite(str(root / "img" / "2008_000001.jpg"), np.full((100, 140, 3), 90, np.uint8))
    inst = np.zeros((100, 140), np.uint8)
    inst[20:70, 30:90] = 1  # kept
    inst[70 + np.arange(30), 100 + np.arange(30)] = 2  # a thin diagonal: area / box area < 0.08, dropped
    inst[19, 30:90] = 255  # boundary band: ignore
    savemat(str(root / "inst" / "2008_000001.mat"), {"GTinst": {"Segmentation": inst}})
    (root / "train.txt").write_text("2008_000001\n")
    samples = load_sbd(tmp_path / "SBD", "train")
    assert [s.name for s in samples] == ["2008_000001_1"]
    assert (samples[0].mask == 1).sum() == 50 * 60 and (samples[0].mask == 255).sum() == 60
    img, mask = CropSamples(samples, 48)[0]
    assert img.shape == (3, 48, 48) and (mask == 1).any()
    with pytest.raises(FileNotFoundError, match="val.txt"):
        load_sbd(root, "val")
