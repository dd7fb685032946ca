"""GatedBatchNorm layers and convert_to_gbn: gate weights, branch routing, exactness, conversion, bad input."""

from __future__ import annotations

import pytest
import torch

from robustvision.defenses.gbn import (
    REFERENCE_GBN_LAYOUT,
    GatedBatchNorm1d,
    GatedBatchNorm2d,
    check_domains,
    collect_gate_logits,
    convert_to_gbn,
    force_gate,
    gate_parameters,
    gbn_layers,
    gbn_spec,
    route_domain,
)
from robustvision.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _scramble_branches(layer) -> None:
    """Give every branch different affine parameters and running statistics."""
    g = torch.Generator().manual_seed(1)
    for bn in layer.bns:
        with torch.no_grad():
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g))
            bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g))
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.1)


@pytest.mark.parametrize("gate", ["conv", "fc"])
def test_gate_weights_sum_to_one_2d(gate):
    layer = GatedBatchNorm2d(6, feature_shape=(6, 12, 12), gate=gate).eval()
    x = torch.randn(5, 6, 12, 12) * 3
    w = layer.gate_weights(x)
    assert w.shape == (5, 4)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(5), rtol=0, atol=1e-6)


def test_gate_weights_sum_to_one_1d():
    layer = GatedBatchNorm1d(16, domains=("l1", "l2", "linf"), gate_hidden=32).eval()
    w = layer.gate_weights(torch.randn(7, 16))
    assert w.shape == (7, 3)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(7), rtol=0, atol=1e-6)
    assert layer(torch.randn(7, 16)).shape == (7, 16)


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_one_hot_gate_equals_the_chosen_branch_exactly(k):
    layer = GatedBatchNorm2d(6, feature_shape=(6, 10, 10), gate="conv").eval()
    _scramble_branches(layer)
    x = torch.randn(4, 6, 10, 10)
    with torch.no_grad():
        expected = layer.bns[k](x)
        with force_gate(layer, torch.nn.functional.one_hot(torch.tensor(k), 4).float()):
            got = layer(x)
        with route_domain(layer, k):
            routed = layer(x)
    assert torch.equal(got, expected)
    assert torch.equal(routed, expected)
    # The other branches really differ, so the equality above is not vacuous.
    assert not torch.allclose(layer.bns[(k + 1) % 4](x), expected)


def test_mixture_is_the_softmax_weighted_sum_of_branches():
    layer = GatedBatchNorm2d(6, feature_shape=(6, 10, 10), gate="fc", gate_hidden=16).eval()
    _scramble_branches(layer)
    x = torch.randn(3, 6, 10, 10)
    with torch.no_grad():
        w = torch.softmax(layer.gate(x), dim=1)
        expected = sum(w[:, k].view(-1, 1, 1, 1) * layer.bns[k](x) for k in range(4))
        torch.testing.assert_close(layer(x), expected)


def test_training_routes_through_one_branch_and_keeps_gate_logits_detached():
    layer = GatedBatchNorm2d(6, feature_shape=(6, 8, 8)).train()
    x = torch.randn(8, 6, 8, 8, requires_grad=True)
    before = [bn.running_mean.clone() for bn in layer.bns]
    with route_domain(layer, "l2"):
        out = layer(x)
        (logits,) = collect_gate_logits(layer)
    # Only branch "l2" (index 2) updated its statistics.
    for k, bn in enumerate(layer.bns):
        assert torch.equal(bn.running_mean, before[k]) == (k != 2)
    assert logits.shape == (8, 4)
    logits.sum().backward()
    assert x.grad is None  # the gate reads detached features
    assert all(p.grad is not None for p in layer.gate.parameters())
    out.sum().backward()
    assert x.grad is not None


def test_route_is_restored_after_the_context():
    layer = GatedBatchNorm2d(6, feature_shape=(6, 8, 8))
    with route_domain(layer, "linf"):
        assert layer.route == 3
    assert layer.route is None


def test_training_mode_without_a_domain_is_an_error():
    layer = GatedBatchNorm2d(6, feature_shape=(6, 8, 8)).train()
    with pytest.raises(RuntimeError, match="route_domain"):
        layer(torch.randn(2, 6, 8, 8))


def _lenet_with_stats():
    torch.manual_seed(0)
    model = create_model("lenet5", in_chans=1, image_size=28)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 28, 28))  # non-trivial running statistics
    return model.eval()


def test_conversion_keeps_outputs_unchanged_before_training():
    model = _lenet_with_stats()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        convert_to_gbn(model, ["net.bn1", "net.bn2"], gates=REFERENCE_GBN_LAYOUT["lenet5"])
        after = model(x)
    assert [n for n, _ in gbn_layers(model)] == ["net.bn1", "net.bn2"]
    assert model.net.bn1.gate_kind == "conv" and model.net.bn2.gate_kind == "fc"
    assert model.net.bn1.feature_shape == (6, 28, 28) and model.net.bn2.feature_shape == (16, 10, 10)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_conversion_of_a_resnet_keeps_outputs_and_records_its_spec():
    torch.manual_seed(0)
    model = create_model("resnet18", image_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    layers = ["net.bn1", "net.layer1.0.bn1", "net.layer2.0.downsample.1"]
    with torch.no_grad():
        before = model(x)
        convert_to_gbn(model, layers, domains=("l1", "l2", "linf"))
        after = model(x)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    spec = gbn_spec(model)
    assert spec["layers"] == layers and spec["domains"] == ["l1", "l2", "linf"]
    assert set(spec["gates"].values()) == {"conv"}
    assert len(gate_parameters(model)) == 3 * 4  # conv1, conv2, fc weight and fc bias per gate


def test_unknown_layer_name_is_one_clear_error():
    model = create_model("lenet5", in_chans=1, image_size=28)
    with pytest.raises(ValueError, match=r"'net\.bn3' does not exist.*did you mean 'net\.bn[12]'"):
        convert_to_gbn(model, ["net.bn3"])


def test_non_batchnorm_layer_is_rejected():
    model = create_model("lenet5", in_chans=1, image_size=28)
    with pytest.raises(ValueError, match="not a BatchNorm"):
        convert_to_gbn(model, ["net.conv1"])


def test_unknown_domain_and_gate_are_rejected():
    with pytest.raises(ValueError, match="unknown GBN domain 'l3'"):
        check_domains(("clean", "l3"))
    with pytest.raises(ValueError, match="distinct"):
        check_domains(("l1", "l1"))
    with pytest.raises(ValueError, match="unknown gate kind"):
        GatedBatchNorm2d(6, feature_shape=(6, 8, 8), gate="attention")
    layer = GatedBatchNorm2d(6, feature_shape=(6, 8, 8), domains=("l2", "linf"))
    with pytest.raises(ValueError, match="not one of this model's branches"):
        with route_domain(layer, "l1"):
            pass


def test_wrong_feature_shape_is_a_clear_error():
    layer = GatedBatchNorm2d(6, feature_shape=(6, 8, 8)).eval()
    with pytest.raises(ValueError, match=r"built for features of shape \(6, 8, 8\)"):
        layer(torch.randn(2, 6, 9, 9))
