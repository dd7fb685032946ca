"""Bad input on the command line: one clear line (never a traceback, never a silent wrong result)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robustvision.cli import app, main
from robustvision.errors import UserError

runner = CliRunner()


def user_error(args: list[str], *, match: str) -> str:
    """Run the CLI in-process and return the UserError's message (asserting it is one and mentions ``match``)."""
    result = runner.invoke(app, args)
    assert isinstance(result.exception, UserError), (args, result.exception, result.output[-2000:])
    message = str(result.exception)
    assert match in message and "\n" not in message, message
    return message


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def evil_pt(path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil()}, path)
    return path


def lenet_checkpoint(path, *, nan: bool = False, arch: str = "lenet5"):
    from robustvision.models import create_model
    from robustvision.models.checkpoints import save_checkpoint

    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, image_size=32)
    if nan:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = float("nan")
    save_checkpoint(model, path, {"technique": "standard"})
    if arch != "lenet5":
        card = json.loads(path.with_suffix(".json").read_text())
        card["arch"] = arch
        path.with_suffix(".json").write_text(json.dumps(card))
    return path


# ---------------------------------------------------------------- item 6: silent wrong results
@pytest.mark.parametrize("n", ["0", "-5"])
def test_defend_evaluate_n_must_be_positive(tmp_path, n):
    user_error(["defend", "evaluate", str(tmp_path / "m.safetensors"), "--n", n], match="--n must be at least 1")


def test_iseg_evaluate_limit_and_threads(tmp_path):
    user_error(["iseg", "evaluate", "--limit", "-1"], match="--limit must be at least 1")
    user_error(["iseg", "evaluate", "--threads", "0"], match="--threads must be at least 1")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_image_size_must_be_positive(size):
    user_error(["data", "show", "digits", "--image-size", size], match="--image-size must be at least 1")
    user_error(["train", "--model", "lenet5", "--image-size", size], match="--image-size must be at least 1")


def test_bench_refuses_nan_weights_and_mismatched_cards(tmp_path):
    store = str(tmp_path / "s.db")
    nan = lenet_checkpoint(tmp_path / "nan.safetensors", nan=True)
    user_error(["bench", "--checkpoints", str(nan), "--noises", "fgsm", "--out", "", "--store", store], match="NaN")
    bad = lenet_checkpoint(tmp_path / "bad.safetensors", arch="mixer_tiny")
    message = user_error(
        ["bench", "--checkpoints", str(bad), "--noises", "fgsm", "--out", "", "--store", store],
        match="does not match",
    )
    assert "mixer_tiny" in message


def test_bench_checkpoint_with_pickled_objects_is_not_trusted(tmp_path):
    ckpt = lenet_checkpoint(tmp_path / "m.safetensors")
    evil = evil_pt(tmp_path / "m.pt")
    evil.with_suffix(".json").write_text(ckpt.with_suffix(".json").read_text())
    args = ["bench", "--checkpoints", str(evil), "--noises", "fgsm", "--out", "", "--store", str(tmp_path / "s.db")]
    user_error(args, match="not a trusted checkpoint")


def test_torch_files_with_pickled_objects_are_refused_everywhere(tmp_path):
    from robustvision.models.checkpoints import torch_load_trusted
    from robustvision.training import TrainConfig
    from robustvision.training.trainer import Trainer

    evil = evil_pt(tmp_path / "last.pt")
    with pytest.raises(ValueError, match="not a trusted checkpoint"):
        torch_load_trusted(evil)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        torch_load_trusted(tmp_path / "empty.pt")
    trainer = Trainer.__new__(Trainer)  # load() reads the file before it looks at the trainer
    trainer.config = TrainConfig()
    with pytest.raises(ValueError, match="not a trusted checkpoint"):
        trainer.load(evil)
    evil.with_suffix(".json").write_text(json.dumps({"arch": "lenet5", "num_classes": 10, "image_size": 32}))
    user_error(["defend", "evaluate", str(evil), "--n", "4"], match="not a trusted checkpoint")


def test_bench_baseline_must_exist(tmp_path):
    ckpt = lenet_checkpoint(tmp_path / "m.safetensors")
    args = ["bench", "--checkpoints", str(ckpt), "--noises", "fgsm", "--n-examples", "8", "--n-adversarial", "4"]
    args += ["--out", "", "--store", str(tmp_path / "s.db"), "--baseline", "nosuch"]
    user_error(args, match="--baseline 'nosuch' is not a model here")


def test_results_and_report_with_unknown_run(synthetic_store, tmp_path):
    path = str(tmp_path / "s.db")
    synthetic_store(path).close()
    user_error(["results", "show", "--store", path, "--run", "nosuch"], match="no run 'nosuch'")
    user_error(["report", "--store", path, "--run", "nosuch", "--out", str(tmp_path / "r.html")], match="no run")
    user_error(["report", "--store", path, "--out", str(tmp_path)], match="is a folder")
    assert not (tmp_path / "r.html").exists()


def test_results_show_on_an_unrelated_sqlite_file_writes_nothing(foreign_sqlite):
    path = foreign_sqlite
    before = path.read_bytes()
    user_error(["results", "show", "--store", str(path)], match="not a robustvision results store")
    assert path.read_bytes() == before


def test_four_channel_images_are_refused_by_grey_or_rgb_noises():
    from robustvision.noises import create_noise

    x = torch.rand(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    for name in ("color_ycbcr_pil", "color_yuv_opencv", "jpeg_compression"):
        with pytest.raises(ValueError, match="1- or 3-channel"):
            create_noise(name)(x)
        assert create_noise(name)(x[:, :3]).shape == (2, 3, 16, 16)


def test_iseg_predict_refuses_truncated_images_and_bad_outputs(tmp_path):
    import cv2

    img = np.zeros((64, 64, 3), np.uint8)
    cv2.circle(img, (32, 32), 12, (255, 255, 255), -1)
    ok, buf = cv2.imencode(".jpg", img)
    (tmp_path / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    (tmp_path / "whole.jpg").write_bytes(buf.tobytes())
    base = ["iseg", "predict", "--click", "32,32,+", "--predictor", "grabcut"]
    user_error([*base, str(tmp_path / "cut.jpg"), "--out", str(tmp_path / "m.png")], match="cannot be read completely")
    assert not (tmp_path / "m.png").exists()
    user_error([*base, str(tmp_path / "whole.jpg"), "--out", str(tmp_path)], match="is a folder")
    user_error([*base, str(tmp_path / "whole.jpg"), "--out", str(tmp_path / "mask")], match="must end in .png")


# ---------------------------------------------------------------- item 7: das
@pytest.fixture
def car_classifier(tmp_path):
    from robustvision.physical.targets import build_classifier, save_model

    torch.manual_seed(0)
    card = {"arch": "das_mixer", "num_classes": 2, "image_size": 32, "classes": ["not_car", "car"]}
    return save_model(build_classifier("das_mixer", 2, 32), tmp_path / "car.safetensors", card)


def test_das_evaluate_refuses_a_classifier_that_is_not_car_vs_not_car(tmp_path):
    from robustvision.physical.targets import build_classifier, save_model

    card = {"arch": "das_mixer", "num_classes": 10, "image_size": 32}
    path = save_model(build_classifier("das_mixer", 10, 32), tmp_path / "digits.safetensors", card)
    args = ["das", "evaluate", "--texture", "original", "--procedural", "--models", str(path), "--views", "2"]
    user_error(args, match="not a car-vs-not-car classifier")


@pytest.mark.parametrize("kind", ["evil", "empty", "truncated", "wrong"])
def test_das_evaluate_bad_textures(tmp_path, car_classifier, kind):
    tex = tmp_path / "texture.pt"
    if kind == "evil":
        evil_pt(tex)
    elif kind == "empty":
        tex.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"kind": "cube", "config": {}, "state": {"param": torch.zeros(10)}}, tex)
        tex.write_bytes(tex.read_bytes()[:40])
    else:
        torch.save({"weights": torch.zeros(3)}, tex)
    expected = {
        "evil": "not a trusted checkpoint",
        "empty": "unreadable or corrupt",
        "truncated": "unreadable or corrupt",
        "wrong": "not a texture saved by",
    }[kind]
    args = ["das", "evaluate", "--texture", str(tex), "--procedural", "--models", str(car_classifier), "--views", "2"]
    user_error(args, match=expected)


def test_das_mesh_and_views(tmp_path, car_classifier):
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8")
    base = ["das", "evaluate", "--texture", "original", "--models", str(car_classifier)]
    user_error([*base, "--mesh", str(tmp_path / "x.jpg")], match="is not a mesh file")
    user_error([*base, "--procedural", "--views", "0"], match="--views must be at least 1")


# ---------------------------------------------------------------- item 7: adapt
def test_adapt_bad_checkpoints_and_out(tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "m.safetensors"
    save_file({"model.w": torch.zeros(4)}, str(weights))
    card = tmp_path / "m.safetensors.json"
    card.write_text(json.dumps({"kind": "uda-segmenter", "num_classes": 3, "dilations": [1], "config": {}}))
    user_error(["adapt", "evaluate", str(weights)], match="lacks arch")
    card.write_text(
        json.dumps(
            {"kind": "uda-segmenter", "arch": "deeplabv2_tiny", "num_classes": 3, "dilations": [6, 12], "config": {}}
        )
    )
    weights.write_bytes(weights.read_bytes()[:20])
    user_error(["adapt", "evaluate", str(weights)], match="unreadable or corrupt")
    (tmp_path / "file").write_text("x")
    user_error(["adapt", "evaluate", str(weights), "--out", str(tmp_path / "file")], match="is a file")


# ---------------------------------------------------------------- item 7: bench
def test_bench_store_out_and_config_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    base = ["bench", "--noises", "fgsm"]
    user_error([*base, "--out", "", "--store", str(tmp_path / "file" / "r.db")], match="a parent of it is a file")
    user_error([*base, "--out", str(tmp_path), "--store", str(tmp_path / "r.db")], match="is a folder")
    (tmp_path / "c.yaml").write_text("noises: [fgsm\n  bad: : :\n")
    user_error([*base, "--out", "", "--config", str(tmp_path / "c.yaml")], match="invalid YAML")


def test_decompression_bomb_in_an_imagefolder_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (40, 40)).save(folder / "x.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40 x 40 is then over twice the limit: a "bomb"
    message = user_error(["data", "show", "imagefolder", "--root", str(tmp_path)], match="")
    assert "too large" in message or "decompression" in message.lower() or "exceeds" in message


# ---------------------------------------------------------------- the CLI-wide guard
def test_unexpected_errors_print_one_line(run_main, monkeypatch):
    import robustvision.data as data

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(data, "create_dataset", boom)
    monkeypatch.delenv("ROBUSTVISION_DEBUG", raising=False)
    code, out = run_main(["data", "show", "digits"])
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert code == 1 and "Traceback" not in out
    assert len(lines) == 1 and "RuntimeError: kaboom second line" in lines[0] and "ROBUSTVISION_DEBUG" in lines[0]
    monkeypatch.setenv("ROBUSTVISION_DEBUG", "1")
    sys.argv, old = ["robustvision", "data", "show", "digits"], sys.argv
    try:
        with pytest.raises(RuntimeError, match="kaboom"):
            main()
    finally:
        sys.argv = old


def test_describe_error_names_files():
    import pickle

    from robustvision.errors import describe_error

    assert describe_error(IsADirectoryError(21, "Is a directory", "/tmp/x")) == "Is a directory: /tmp/x"
    assert "not a trusted checkpoint" in describe_error(pickle.UnpicklingError("Weights only load failed\nmore"))
