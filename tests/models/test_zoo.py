import pytest
import torch

from robustvision.models import count_flops, create_model, list_models
from robustvision.models.checkpoints import load_checkpoint, save_checkpoint
from robustvision.registry import UnknownNameError


def input_for(name):
    return (1, 28) if name == "lenet5" else (3, 32)


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_forward_backward(name):
    chans, size = input_for(name)
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_size=size, in_chans=chans)
    assert model.family in {"cnn", "transformer", "mlp"}
    x = torch.rand(2, chans, size, size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_zoo_has_three_families():
    assert len(list_models(family="cnn")) >= 8
    assert len(list_models(family="transformer")) >= 2
    assert len(list_models(family="mlp")) >= 1


def test_normalisation_lives_inside_and_rejects_wrong_shapes():
    model = create_model("resnet10t", image_size=32).eval()
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_model("resnet81")


def test_flops_counted():
    model = create_model("lenet5", image_size=28, in_chans=1)
    assert 0.5e6 < count_flops(model, 28, 1) < 2e6


def test_checkpoint_round_trip_and_corrupt_file(tmp_path):
    model = create_model("vit_tiny", num_classes=5, image_size=32, depth=2).eval()
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"model_kwargs": {"depth": 2}, "technique": "standard"})
    loaded, card = load_checkpoint(path)
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(model(x), loaded(x)) and card["technique"] == "standard" and card["family"] == "transformer"
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    (tmp_path / "bad.json").write_text((tmp_path / "m.json").read_text())
    with pytest.raises(ValueError, match="unreadable or corrupt"):
        load_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError, match="model card"):
        load_checkpoint(tmp_path / "missing.safetensors")
    torch.save(model.state_dict(), tmp_path / "m.pt")
    (tmp_path / "m.pt.json")
    (tmp_path / "m.json").rename(tmp_path / "m2.json")
    (tmp_path / "m.pt").rename(tmp_path / "m2.pt")
    loaded2, _ = load_checkpoint(tmp_path / "m2.pt")
    assert torch.allclose(model(x), loaded2(x))
