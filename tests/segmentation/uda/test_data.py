"""Data formats for UDA: GTA5 and Cityscapes layouts written here, the shared Cityscapes sample, photo folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustvision.segmentation.uda import BENCHMARK_CLASSES, GTA5, Cityscapes, PhotoFolder, generate_streets
from robustvision.segmentation.uda.specs import open_domain


def _write_rgb(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _write_ids(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(path)


def _ids(h: int, w: int) -> np.ndarray:
    ids = np.full((h, w), 7, dtype=np.uint8)  # road
    ids[: h // 2] = 23  # sky
    ids[:2, :2] = 0  # unlabelled
    ids[-1, -1] = 26  # car
    return ids


def test_gta5_layout_maps_ids_and_resizes(tmp_path):
    for i in range(2):
        _write_rgb(tmp_path / "images" / f"{i:05d}.png", 20, 40, seed=i)
        _write_ids(tmp_path / "labels" / f"{i:05d}.png", _ids(20, 40))
    data = GTA5(tmp_path, image_size=(10, 20))
    assert len(data) == 2 and data.labelled
    x, y = data[0]
    assert x.shape == (3, 10, 20) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (10, 20) and y.dtype == torch.int64
    assert set(y.unique().tolist()) <= {0, 10, 13, 255}
    assert int(y[0, 0]) == 255 and int(y[-1, 0]) == 0 and int(y[0, -1]) == 10


def test_gta5_label_size_mismatch_warns_and_resizes_nearest(tmp_path):
    _write_rgb(tmp_path / "images" / "00001.png", 20, 40)
    _write_ids(tmp_path / "labels" / "00001.png", _ids(10, 20))
    data = GTA5(tmp_path)
    with pytest.warns(UserWarning, match="resizing the label with nearest"):
        x, y = data[0]
    assert y.shape == (20, 40) == tuple(x.shape[-2:])
    assert set(y.unique().tolist()) <= {0, 10, 13, 255}  # nearest: no interpolated ids


def test_gta5_ids_outside_table_is_one_clear_error(tmp_path):
    _write_rgb(tmp_path / "images" / "00001.png", 8, 8)
    bad = _ids(8, 8)
    bad[3, 3] = 77
    _write_ids(tmp_path / "labels" / "00001.png", bad)
    with pytest.raises(ValueError, match=r"00001.png: label ids \[77\] are outside"):
        GTA5(tmp_path)[0]


def test_gta5_missing_parts(tmp_path):
    with pytest.raises(FileNotFoundError, match="GTA5 images"):
        GTA5(tmp_path)
    _write_rgb(tmp_path / "images" / "00001.png", 8, 8)
    (tmp_path / "labels").mkdir()
    with pytest.raises(FileNotFoundError, match="no label file"):
        GTA5(tmp_path)


def test_cityscapes_layout_written_here(tmp_path):
    name = "aachen_000000_000019"
    _write_rgb(tmp_path / "leftImg8bit" / "val" / "aachen" / f"{name}_leftImg8bit.png", 16, 32)
    _write_ids(tmp_path / "gtFine" / "val" / "aachen" / f"{name}_gtFine_labelIds.png", _ids(16, 32))
    _write_rgb(tmp_path / "leftImg8bit" / "train" / "aachen" / f"{name}_leftImg8bit.png", 16, 32)
    val = Cityscapes(tmp_path, split="val")
    assert len(val) == 1
    assert val[0][1][-1, 0] == 0
    target = open_domain(f"cityscapes:{tmp_path}", "target", (8, 16))
    assert len(target) == 2 and not target.labelled and (target[1][1] == 255).all()
    with pytest.raises(FileNotFoundError, match="no label"):
        Cityscapes(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="no split 'test'"):
        Cityscapes(tmp_path, split="test")


@pytest.mark.shared_data
def test_shared_cityscapes_frame_matches_its_train_ids(shared_data):
    root = shared_data / "cityscapes_samples" / "mmseg_pseudo"
    data = Cityscapes(root, split="val")
    assert len(data) == 1
    x, y = data[0]
    assert x.shape == (3, 128, 256)
    train_ids = root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png"
    expected = np.asarray(Image.open(train_ids)).astype(np.int64)
    # Our id table reproduces cityscapesscripts' train ids. The fixture's two label files were downscaled
    # separately, so 77 of 32768 boundary pixels disagree; a wrong table entry would flip whole regions.
    agree = (y.numpy() == expected).mean()
    assert agree > 0.995
    assert set(np.unique(y.numpy())) >= {0, 1, 2, 5, 7, 8, 10, 11, 13, 255}
    ev = open_domain(f"cityscapes:{root}", "eval", (64, 128))
    assert ev[0][0].shape == (3, 64, 128)


@pytest.mark.shared_data
def test_shared_backgrounds_as_photo_target(shared_data):
    photos = PhotoFolder(shared_data / "backgrounds", image_size=(32, 64))
    assert len(photos) >= 10 and not photos.labelled
    x, y = photos[len(photos) - 2]  # includes a palette PNG, converted to RGB
    assert x.shape == (3, 32, 64) and (y == 255).all()


def test_empty_photo_folder_is_one_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images found in"):
        PhotoFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PhotoFolder(tmp_path / "missing")


def test_domain_specs_errors():
    with pytest.raises(ValueError, match="unknown domain"):
        open_domain("gta6:/x", "source", (8, 8))
    with pytest.raises(ValueError, match="needs a folder"):
        open_domain("gta5", "source", (8, 8))
    with pytest.raises(ValueError, match="only be a training target"):
        open_domain("photos:/tmp", "eval", (8, 8))


def test_generated_benchmark_is_seeded_and_domains_differ():
    a = generate_streets("source", 4, (32, 64), seed=3)
    b = generate_streets("source", 4, (32, 64), seed=3)
    t = generate_streets("target", 4, (32, 64), seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.masks, t.masks)  # each domain draws its own scenes from the same layout model
    assert set(torch.cat([a.masks, t.masks]).unique().tolist()) <= set(BENCHMARK_CLASSES)
    many = generate_streets("source", 24, (32, 64), seed=0)
    assert len(set(many.masks.unique().tolist())) >= 8
    # The target is unlabelled for training: its labels are dropped.
    tgt = open_domain("synthetic", "target", (32, 64), n=2)
    assert (tgt.masks == 255).all() and not tgt.labelled
    val = open_domain("synthetic", "eval", (32, 64), n=2)
    assert val.labelled and not torch.equal(val.images, open_domain("synthetic", "target", (32, 64), n=2).images)
