"""Grad-CAM, DAS losses, attack, evaluation and CLI tests (generated car, tiny models)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustvision.physical.attack import AttackConfig, _lr_factor, optimize_texture
from robustvision.physical.attention import GradCAM, find_target_layer, tokens_to_grid
from robustvision.physical.data import CarAssets, make_views, original_texture
from robustvision.physical.evaluate import average_precision, evaluate_texture, spectral_residual_saliency
from robustvision.physical.losses import (
    attention_distraction_loss,
    connected_regions,
    content_loss,
    margin_loss,
    not_target_loss,
    smooth_loss,
)
from robustvision.physical.mesh import make_procedural_car
from robustvision.physical.targets import build_classifier


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.SiLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def assets() -> CarAssets:
    from skimage.feature import canny

    mesh = make_procedural_car(subdiv=1)
    g = torch.Generator().manual_seed(0)
    seed = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(32, 32), mode="bilinear")[0]
    edge = torch.from_numpy(canny(seed.mean(0).numpy(), sigma=1).astype("float32"))[None]
    return CarAssets(mesh, seed, edge, "procedural")


@pytest.fixture(scope="module")
def views(assets):
    bgs = [torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    return make_views(assets.mesh, 6, 32, bgs, generator=torch.Generator().manual_seed(0)), bgs


def test_grad_cam_matches_the_grad_cam_package():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = TinyCNN().eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 1])
    ref = pgc.GradCAM(model=model, target_layers=[model.features[3]])(
        input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets]
    )
    cam, _ = GradCAM(model, "features.3")(x, targets, create_graph=False)
    # the package min-max scales per layer (then resizes) and once more after aggregating layers
    ours = scale_cam_image(scale_cam_image(torch.relu(cam).numpy(), (32, 32)))
    assert torch.allclose(torch.from_numpy(ours), torch.from_numpy(ref), atol=1e-4)


def test_grad_cam_is_differentiable_in_the_input():
    model = TinyCNN().eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2), requires_grad=True)
    # SiLU after features.1 makes the score non-linear in its activations (ReLU nets have zero 2nd derivative)
    cam, _ = GradCAM(model, "features.1")(x, torch.tensor([1, 1]), create_graph=True)
    (grad,) = torch.autograd.grad(cam.sum(), x)
    assert grad.abs().sum() > 0
    # with create_graph the channel weights carry gradient too: the result differs from the detached one
    cam_d, _ = GradCAM(model, "features.1")(x, torch.tensor([1, 1]), detach_weights=True)
    (grad_d,) = torch.autograd.grad(cam_d.sum(), x)
    assert torch.allclose(cam, cam_d) and not torch.allclose(grad, grad_d)


def test_target_layer_and_token_maps():
    # the outermost module producing the last spatial map (here the Sequential holding features.3)
    assert find_target_layer(TinyCNN(), 32) == "features"
    vit = build_classifier("das_vit", 2, 32)
    cam, _ = GradCAM(vit, vit.cam_layer)(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert cam.shape == (2, 4, 4)
    tok = torch.arange(2 * 5 * 3.0).view(2, 5, 3)
    grid = tokens_to_grid(tok, 1)
    assert grid.shape == (2, 3, 2, 2) and torch.equal(grid[0, :, 0, 1], tok[0, 2])
    with pytest.raises(ValueError, match="square"):
        tokens_to_grid(torch.zeros(1, 6, 3))


def test_attention_loss_regions_follow_the_paper_formula():
    a = torch.tensor([[0.5, 0.5, -1.0], [-1.0, -1.0, -1.0], [-1.0, -1.0, 2.0]])
    labels, k = connected_regions((a > 0).numpy())
    assert k == 2
    t = torch.tanh(a)
    want = ((t[0, 0] + t[0, 1]) / (9 + 1 - 2) + t[2, 2] / (9 + 1 - 1)) / 2
    assert torch.isclose(attention_distraction_loss(a[None]), want)
    assert attention_distraction_loss(-torch.ones(1, 3, 3)) == 0
    # diagonal neighbours are separate regions (4-connectivity)
    assert connected_regions(torch.eye(3).bool().numpy())[1] == 3


def test_classification_content_and_smooth_losses():
    logits = torch.tensor([[0.0, 5.0], [3.0, 0.0]])
    assert torch.isclose(not_target_loss(logits, [1]), -torch.log_softmax(logits, 1)[:, 0].mean())
    with pytest.raises(ValueError, match="out of range"):
        not_target_loss(logits, [2])
    p0 = torch.zeros(2, 3)
    e = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    assert torch.isclose(content_loss(torch.ones(2, 3), p0, e), torch.tensor(0.9 * 1 + 0.1 * 5))
    flat = torch.ones(1, 3, 8, 8)
    assert smooth_loss(flat, torch.ones(1, 1, 8, 8)) == 0
    noisy = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert smooth_loss(noisy, torch.ones(1, 1, 8, 8)) > 0 and smooth_loss(noisy, torch.zeros(1, 1, 8, 8)) == 0


def test_margin_loss_keeps_pushing_after_the_flip():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    # car = class 1: row 0 car leads by 4 -> 4 + 2; row 1 is already "not car" by 3 -> relu(-3 + 2) = 0
    assert torch.isclose(margin_loss(logits, [1], kappa=2.0), torch.tensor((6.0 + 0.0) / 2))
    assert torch.isclose(margin_loss(logits, [1, 2], kappa=0.0), torch.tensor((5.0 + 0.0) / 2))
    # a view that just flipped (car 0.5 below the best other logit) still gets a full-size gradient
    z = torch.tensor([[1.0, 0.5]], requires_grad=True)
    margin_loss(z, [1], kappa=5.0).backward()
    assert torch.allclose(z.grad, torch.tensor([[-1.0, 1.0]]))
    with pytest.raises(ValueError, match="out of range"):
        margin_loss(logits, [3])
    with pytest.raises(ValueError, match="kappa"):
        margin_loss(logits, [1], kappa=-1.0)


def test_lr_schedule_warms_up_then_decays():
    cfg = AttackConfig(steps=100, lr_schedule="cosine", warmup_steps=10)
    f = [_lr_factor(s, cfg) for s in range(100)]
    assert f[0] < f[5] < f[9] < f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] == pytest.approx(0.05, abs=0.01)
    assert _lr_factor(50, AttackConfig(steps=100, lr_schedule="constant")) == 1.0


def test_attack_rejects_unknown_options(assets, views):
    vs, _ = views
    with pytest.raises(ValueError, match="classification loss"):
        optimize_texture(TinyCNN().eval(), assets, vs, AttackConfig(mode="naive", steps=1, cls_loss="hinge"))
    with pytest.raises(ValueError, match="lr schedule"):
        optimize_texture(TinyCNN().eval(), assets, vs, AttackConfig(mode="naive", steps=1, lr_schedule="step"))


@pytest.mark.parametrize("mode,texture,cls_loss", [("das", "cube", "margin"), ("naive", "uv", "ce")])
def test_attack_lowers_its_loss_on_a_tiny_run(assets, views, mode, texture, cls_loss):
    vs, bgs = views
    model = TinyCNN().eval()
    cfg = AttackConfig(
        mode=mode,
        steps=12,
        batch_size=6,
        lr=0.2,
        texture=texture,
        atlas_size=16,
        eot_background=0.0,
        eot_photometric=0.0,
        cam_layer="features.3",
        cls_loss=cls_loss,
        margin=50.0,
        warmup_steps=2,
    )
    res = optimize_texture(model, assets, vs, cfg, backgrounds=bgs)
    first = sum(r["classification"] for r in res.history[:3]) / 3
    last = sum(r["classification"] for r in res.history[-3:]) / 3
    assert last < first
    assert all(torch.isfinite(torch.tensor(r["total"])) for r in res.history)
    assert all(r["seconds"] > 0 and 0 <= r["car_rate"] <= 1 for r in res.history)
    assert res.history[0]["lr"] < res.history[2]["lr"]  # warm-up
    if mode == "das":
        assert {"attention", "content", "smooth"} <= set(res.history[0])
    assert model.training is False and all(p.requires_grad for p in model.parameters())


def test_evaluation_metrics(assets, views):
    vs, _ = views
    model = TinyCNN().eval()
    seed_tex = original_texture(assets.mesh)
    out = evaluate_texture(seed_tex, vs, {"tiny": model}, seed_texture=seed_tex)
    assert 0 <= out["acc/tiny"] <= 1
    assert out["seed_ssim"] == pytest.approx(1.0) and out["saliency_ratio"] == pytest.approx(1.0)
    assert out["naturalness"] == pytest.approx(1.0)
    assert average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([True, True, False]), 2) == 1.0
    assert average_precision(torch.tensor([0.9, 0.8]), torch.tensor([False, True]), 2) == pytest.approx(0.25)
    sal = spectral_residual_saliency(torch.rand(3, 16, 16))
    assert sal.shape == (16, 16) and torch.isclose(sal.sum(), torch.tensor(1.0))


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from robustvision.commands.das import app

    r = CliRunner()
    res = r.invoke(
        app,
        [
            "dataset",
            "--out",
            str(tmp_path),
            "--train-size",
            "24",
            "--test-size",
            "12",
            "--image-size",
            "32",
            "--procedural",
        ],
    )
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["train", "--data", str(tmp_path), "--models", "das_resnet", "--epochs", "1"])
    assert res.exit_code == 0, res.output
    ckpt = tmp_path / "models" / "das_resnet.safetensors"
    res = r.invoke(
        app,
        [
            "optimize",
            "--model",
            str(ckpt),
            "--out",
            str(tmp_path / "atk"),
            "--procedural",
            "--views",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--eval-views",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "atk" / "metrics.json").read_text())
    assert "acc/das_resnet" in metrics["attacked"] and (tmp_path / "atk" / "index.html").is_file()
    res = r.invoke(
        app,
        [
            "evaluate",
            "--texture",
            str(tmp_path / "atk" / "texture.pt"),
            "--procedural",
            "--models",
            f"{ckpt},{tmp_path / 'models' / 'detector.safetensors'}",
            "--views",
            "4",
        ],
    )
    assert res.exit_code == 0, res.output and "det_ap50" in res.output


def test_car_dataset_and_target_checkpoints(assets, tmp_path):
    from robustvision.physical.data import render_car_dataset
    from robustvision.physical.targets import build_detector, load_model, save_model

    bgs = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    a = render_car_dataset(assets, 12, 24, seed=3, backgrounds=bgs)
    b = render_car_dataset(assets, 12, 24, seed=3, backgrounds=bgs)
    assert torch.equal(a["images"], b["images"]) and a["images"].dtype == torch.uint8
    cars = a["labels"] == 1
    assert 0 < int(cars.sum()) < 12
    box = a["boxes"][cars]
    assert (box[:, 2] > box[:, 0]).all() and (box >= 0).all() and (box <= 24).all()
    assert (a["boxes"][~cars] == 0).all() and not a["painted"][~cars].any()
    model = build_classifier("das_mixer", 2, 32)
    save_model(
        model,
        tmp_path / "m.safetensors",
        {"kind": "classifier", "arch": "das_mixer", "num_classes": 2, "image_size": 32},
    )
    loaded, card = load_model(tmp_path / "m.safetensors")
    x = torch.rand(2, 3, 32, 32)
    assert card["arch"] == "das_mixer" and torch.allclose(loaded(x), model.eval()(x))
    det = build_detector(32)
    save_model(det, tmp_path / "d.safetensors", {"kind": "detector", "image_size": 32})
    out = load_model(tmp_path / "d.safetensors")[0](x)
    assert out.shape == (2, 5) and (out[:, 1:] >= 0).all() and (out[:, 1:] <= 1).all()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_model(tmp_path / "missing.safetensors")


def test_the_imagenet_car_classes_are_still_importable_from_the_command_module():
    from robustvision.commands.das import DAS_IMAGENET_CAR_CLASSES as from_cli
    from robustvision.physical.targets import DAS_IMAGENET_CAR_CLASSES

    assert from_cli is DAS_IMAGENET_CAR_CLASSES and len(DAS_IMAGENET_CAR_CLASSES) == 7
    with pytest.raises(AttributeError):
        from robustvision.commands import das

        das.NO_SUCH_NAME  # noqa: B018


def test_seeded_targets_are_reproducible_and_leave_the_global_generator_alone():
    from robustvision.physical.targets import build_detector

    state = torch.get_rng_state()
    a = build_classifier("das_vit", 2, 32, seed=3).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    b = build_classifier("das_vit", 2, 32, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the same weights the global seed gave before the seed became an argument
    torch.manual_seed(3)
    c = build_classifier("das_vit", 2, 32).state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)
    d1, d2 = build_detector(32, seed=1).state_dict(), build_detector(32, seed=2).state_dict()
    assert not torch.equal(d1["head.weight"], d2["head.weight"])


def test_target_checkpoints_share_the_package_format_and_old_files_still_load(tmp_path):
    from safetensors.torch import save_file

    from robustvision.models.checkpoints import save_weights
    from robustvision.physical.targets import TARGET_FORMAT, load_model, save_model

    model = build_classifier("das_mixer", 2, 32).eval()
    card = {"kind": "classifier", "arch": "das_mixer", "num_classes": 2, "image_size": 32}
    path = save_model(model, tmp_path / "new.safetensors", card)
    written = json.loads(path.with_suffix(".json").read_text())
    assert written["format"] == TARGET_FORMAT and "robustvision_version" in written
    assert not list(tmp_path.glob("*.tmp"))
    # the layout written before the shared format: plain safetensors plus a card without a format tag
    old = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(old))
    old.with_suffix(".json").write_text(json.dumps(card))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(load_model(old)[0](x), model(x))
    save_weights(model, tmp_path / "other.safetensors", card, fmt="robustvision.classifier/1")
    with pytest.raises(ValueError, match="not 'robustvision.das.target/1'"):
        load_model(tmp_path / "other.safetensors")


def _tiny(seed: int) -> TinyCNN:
    torch.manual_seed(seed)
    m = TinyCNN()
    for p in m.parameters():
        p.data.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + len(p.shape)))
    m.cam_layer = "features.3"
    return m.eval()


@pytest.mark.parametrize("mode", ["das", "naive"])
def test_ensemble_attack_sums_the_model_losses(assets, views, mode):
    vs, bgs = views
    a, b = _tiny(1), _tiny(2)
    cfg = AttackConfig(mode=mode, steps=1, batch_size=4, texture="uv", atlas_size=16, seed=5)
    ra = optimize_texture(a, assets, vs, cfg, backgrounds=bgs).history[0]
    rb = optimize_texture(b, assets, vs, cfg, backgrounds=bgs).history[0]
    rab = optimize_texture([a, b], assets, vs, cfg, backgrounds=bgs).history[0]
    # same seed -> same batch, backgrounds and jitter: the ensemble's model terms are the sums of the single ones
    assert rab["classification"] == pytest.approx(ra["classification"] + rb["classification"], rel=1e-5)
    assert rab["p_car"] == pytest.approx((ra["p_car"] + rb["p_car"]) / 2, rel=1e-5)
    if mode == "das":
        assert rab["attention"] == pytest.approx(ra["attention"] + rb["attention"], rel=1e-5, abs=1e-7)
        assert rab["content"] == pytest.approx(ra["content"])  # texture terms counted once
    for m in (a, b):
        assert m.training is False and all(p.requires_grad for p in m.parameters())


def test_ensemble_gradient_reaches_the_texture_through_every_model(assets, views):
    vs, bgs = views
    a, b = _tiny(1), _tiny(2)
    cfg = AttackConfig(mode="naive", steps=1, batch_size=4, texture="uv", atlas_size=16, seed=5, lr=0.1)
    init = optimize_texture(a, assets, vs, AttackConfig(mode="naive", steps=1, lr=0.0, texture="uv", atlas_size=16))
    moved = {}
    for name, models in {"a": [a], "b": [b], "ab": [a, b]}.items():
        tex = optimize_texture(models, assets, vs, cfg, backgrounds=bgs).texture
        moved[name] = tex.param.detach() - init.texture.param.detach()
    assert moved["ab"].abs().sum() > 0
    # a model that contributes nothing would leave the ensemble's step equal to the other model's
    assert not torch.allclose(moved["ab"], moved["a"]) and not torch.allclose(moved["ab"], moved["b"])
    with pytest.raises(ValueError, match="at least one model"):
        optimize_texture([], assets, vs, cfg)


def test_cli_optimize_accepts_an_ensemble(tmp_path):
    from typer.testing import CliRunner

    from robustvision.commands.das import app
    from robustvision.physical.targets import save_model

    paths = []
    for name in ("das_resnet", "das_mixer"):
        torch.manual_seed(0)
        p = tmp_path / f"{name}.safetensors"
        card = {"kind": "classifier", "arch": name, "num_classes": 2, "image_size": 32}
        save_model(build_classifier(name, 2, 32), p, card)
        paths.append(str(p))
    args = ["optimize", "--procedural", "--views", "3", "--steps", "2", "--batch-size", "2", "--eval-views", "2"]
    r = CliRunner()
    res = r.invoke(app, [*args, "--model", ",".join(paths), "--out", str(tmp_path / "atk")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "atk" / "metrics.json").read_text())
    assert metrics["model"] == "das_resnet+das_mixer"
    assert {"acc/das_resnet", "acc/das_mixer"} <= set(metrics["attacked"])
    res = r.invoke(app, [*args, "--model", f"{paths[0]},{paths[0]}", "--out", str(tmp_path / "dup")])
    assert res.exit_code != 0 and "twice" in str(res.exception)


def test_shift_eot_and_training_shift_translate_without_changing_shape(assets, views):
    from robustvision.physical.attack import _shift_batch
    from robustvision.physical.train import _shift

    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    for fn in (_shift_batch, _shift):
        y = fn(x, 2, torch.Generator().manual_seed(1))
        assert y.shape == x.shape
        # each output is a window of the reflect-padded input
        padded = torch.nn.functional.pad(x.detach(), (2,) * 4, mode="reflect")
        for i in range(3):
            assert any(
                torch.equal(y[i].detach(), padded[i, :, dy : dy + 16, dx : dx + 16])
                for dy in range(5)
                for dx in range(5)
            )
    assert torch.equal(_shift(x, 0, torch.Generator()), x)
    (grad,) = torch.autograd.grad(_shift_batch(x, 2, torch.Generator().manual_seed(1)).sum(), x)
    assert grad.abs().sum() > 0
    vs, bgs = views
    with pytest.raises(ValueError, match="eot_shift"):
        optimize_texture(TinyCNN().eval(), assets, vs, AttackConfig(mode="naive", steps=1, eot_shift=32))
    res = optimize_texture(
        TinyCNN().eval(), assets, vs, AttackConfig(mode="naive", steps=2, texture="uv", atlas_size=16, eot_shift=3)
    )
    assert len(res.history) == 2


def test_cli_train_split_only_and_extra_data_recipe(tmp_path):
    from typer.testing import CliRunner

    from robustvision.commands.das import app

    r = CliRunner()
    common = ["--train-size", "6", "--image-size", "16", "--procedural"]
    res = r.invoke(app, ["dataset", "--out", str(tmp_path / "d"), *common, "--test-size", "4"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["dataset", "--out", str(tmp_path / "e"), *common, "--test-size", "0", "--seed", "9"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "train.pt").is_file() and not (tmp_path / "e" / "test.pt").exists()
    args = ["train", "--data", str(tmp_path / "d"), "--models", "das_mixer", "--no-detector", "--epochs", "1"]
    res = r.invoke(app, [*args, "--shift", "2", "--extra-data", str(tmp_path / "e" / "train.pt")])
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "d" / "models" / "das_mixer.json").read_text())
    assert card["recipe"]["train_images"] == 12 and card["recipe"]["shift"] == 2
    res = r.invoke(app, [*args, "--extra-data", str(tmp_path / "e" / "missing.pt")])
    assert res.exit_code != 0 and "not found" in str(res.exception)


def test_car_class_accuracy_top1_and_top5():
    from robustvision.physical.evaluate import car_class_accuracy

    logits = -torch.arange(10.0).repeat(4, 1)  # no ties: classes 0, 1, 2, ... in that order
    logits[0, 3] = 9  # top-1 is a car class
    logits[1, 0], logits[1, 7] = 9, 8  # a car class second: top-5 only
    logits[2, 0], logits[2, 3] = 9, -20  # top 5 = 0, 1, 2, 4, 5: no car class
    logits[3, 5], logits[3, 3], logits[3, 7] = 9, -20, -20  # no car class anywhere near the top
    top1, top5 = car_class_accuracy(logits, (3, 7))
    assert top1 == 0.25 and top5 == 0.5
    # a 2-class model has both classes in its top 5: no top-5 figure rather than a trivial 100 %
    two = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]])
    assert car_class_accuracy(two, (1,)) == (pytest.approx(2 / 3), None)


def test_transfer_table_shows_every_model_the_same_poses_at_its_own_size(assets):
    from robustvision.physical.evaluate import TransferModel, transfer_table
    from robustvision.physical.texture import CubeTexture, random_cube_colors

    bgs = [torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    paints = {
        "original": original_texture(assets.mesh),
        "random": CubeTexture(random_cube_colors(assets.mesh.paint_uv(), generator=torch.Generator().manual_seed(1))),
    }
    models = {
        "a32": TransferModel(build_classifier("das_resnet", 2, 32, seed=0), 32, (1,)),
        "b48": TransferModel(build_classifier("das_resnet", 2, 48, seed=0), 48, (1,)),
        "c32": TransferModel(build_classifier("das_mixer", 2, 32, seed=1), 32, (0, 1)),  # every class is "car"
    }
    seen = []
    rows = transfer_table(assets.mesh, paints, models, views=5, seed=3, backgrounds=bgs, on_row=seen.append)
    assert [(r["model"], r["image_size"], r["paint"]) for r in rows] == [
        (m, s, p) for m, s in (("a32", 32), ("b48", 48), ("c32", 32)) for p in ("original", "random")
    ]
    assert seen == rows
    assert all(r["topk"] is None for r in rows)  # 2 classes: top-1 only
    assert all(r["top1"] == 1.0 for r in rows if r["model"] == "c32")
    # the figures are those of the models on the views of that seed, rendered at the model's size
    vs48 = make_views(assets.mesh, 5, 48, bgs, generator=torch.Generator().manual_seed(3))
    vs32 = make_views(assets.mesh, 5, 32, bgs, generator=torch.Generator().manual_seed(3))
    assert vs48.cameras == vs32.cameras  # the same poses at both sizes
    from robustvision.physical.data import render_views

    for r in rows[2:4]:
        with torch.no_grad():
            expected = car_accuracy_of(models["b48"].model, render_views(vs48, paints[r["paint"]]))
        assert r["top1"] == expected


def car_accuracy_of(model, images):
    from robustvision.physical.evaluate import car_accuracy

    return car_accuracy(model, images)
