"""An inference-only copy of an EdgeFlow network that gives the same probabilities with less work per click.

:func:`optimize_for_inference` returns a copy of a trained :class:`~.model.EdgeFlowNet` or
:class:`~.model.EdgeFlowLiteNet` in eval mode with

- every batch norm folded into the convolution before it (``torch.nn.utils.fuse_conv_bn_eval``): the conv+BN pairs
  of the backbone (timm's ``BatchNormAct2d`` keeps only its activation), of ``conv_bn_relu`` and of the heads;
- FineNet's batch norms that follow a PReLU folded into the 1x1 convolution after them (exact: a 1x1 conv has no
  zero padding that an affine map would change); the one before FineNet's padded 3x3 output conv stays;
- the training-only ``aux`` output no longer upsampled to input resolution (the OCR head still computes the soft
  object region it needs).

The result differs from the plain network by float rounding only (about 1e-6 in the probabilities, tested at
1e-4). The interaction protocol, the checkpoint and the training code are untouched: the predictor builds this copy
when it is created (``InferenceConfig.optimize``, on by default) and keeps the plain network for ``optimize=False``.

Example:
    >>> import torch
    >>> from robustvision.segmentation.interactive.model import EdgeFlowConfig, EdgeFlowNet
    >>> net = EdgeFlowNet(EdgeFlowConfig(width=8)).eval()
    >>> fast = optimize_for_inference(net)
    >>> x, c = torch.rand(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    >>> with torch.inference_mode():
    ...     a, b = net(x, c)["instances"].sigmoid(), fast(x, c)["instances"].sigmoid()
    >>> bool((a - b).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils import fuse_conv_bn_eval

#: The ``(conv, norm)`` attribute pairs of timm's EfficientNet blocks, each conv directly followed by its norm.
_TIMM_PAIRS = {
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}
#: The stem of a timm EfficientNet (and of :class:`~.model.EdgeFlowLiteNet`, which keeps timm's names).
_STEM_PAIR = (("conv_stem", "bn1"),)


def _is_bn(m: nn.Module) -> bool:
    # timm's BatchNormAct2d derives from nn.BatchNorm2d and adds ``drop`` and ``act``
    return isinstance(m, nn.BatchNorm2d) and m.track_running_stats and m.running_mean is not None


def _after_norm(bn: nn.Module) -> nn.Module:
    """What is left of a batch norm once its affine map moved into the conv: timm's drop + activation, or nothing."""
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    parts = [m for m in (drop, act) if m is not None and not isinstance(m, nn.Identity)]
    if not parts:
        return nn.Identity()
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def _fold_timm_pairs(module: nn.Module) -> int:
    pairs = _TIMM_PAIRS.get(type(module).__name__, _STEM_PAIR if hasattr(module, "conv_stem") else ())
    n = 0
    for conv_name, bn_name in pairs:
        conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
        if isinstance(conv, nn.Conv2d) and _is_bn(bn) and conv.out_channels == bn.num_features:
            # fuse_conv_bn_eval deep-copies the conv, so timm's Conv2dSame keeps its "same" padding
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, _after_norm(bn))
            n += 1
    return n


def _fold_sequential(seq: nn.Sequential) -> int:
    n = 0
    for i in range(len(seq) - 1):
        conv, bn = seq[i], seq[i + 1]
        if isinstance(conv, nn.Conv2d) and _is_bn(bn) and conv.out_channels == bn.num_features:
            seq[i] = fuse_conv_bn_eval(conv, bn)
            seq[i + 1] = _after_norm(bn)
            n += 1
    return n


def _fold_norm_into_next(bn: nn.BatchNorm2d, conv: nn.Conv2d, offset: int = 0) -> None:
    """Fold ``bn`` (on input channels ``offset..offset+C`` of a 1x1 ``conv``) into that conv's weights and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    sl = slice(offset, offset + bn.num_features)
    w = conv.weight  # out x in x 1 x 1
    bias = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    new_bias = bias + (w[:, sl, 0, 0] * shift).sum(dim=1)
    new_w = w.clone()
    new_w[:, sl] = w[:, sl] * scale.view(1, -1, 1, 1)
    conv.weight = nn.Parameter(new_w, requires_grad=False)
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


def _fold_finenet(fine: nn.Module) -> int:
    """FineNet: branches ``Conv3x3 PReLU BN Conv1x1 PReLU BN``, then a 1x1 bottleneck over the concatenated branches."""
    n, offset = 0, 0
    bottleneck = fine.bottleneck[0]
    for branch in fine.branches:
        width = branch[3].out_channels
        if _is_bn(branch[2]) and branch[3].kernel_size == (1, 1):
            _fold_norm_into_next(branch[2], branch[3])
            branch[2] = nn.Identity()
            n += 1
        if _is_bn(branch[5]) and bottleneck.kernel_size == (1, 1):
            _fold_norm_into_next(branch[5], bottleneck, offset)
            branch[5] = nn.Identity()
            n += 1
        offset += width
    return n


@torch.no_grad()
def optimize_for_inference(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` with the batch norms folded away (see the module docstring).

    Args:
        net: an EdgeFlow network (:class:`~.model.EdgeFlowNet` or :class:`~.model.EdgeFlowLiteNet`); it is not
            modified.

    Returns:
        The copy, with ``folded_norms`` (how many batch norms were folded) and ``inference_only = True`` set.
    """
    fast = copy.deepcopy(net).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    n = 0
    from robustvision.segmentation.interactive.model import EdgeFlowLiteNet, FineNet

    for m in list(fast.modules()):
        if isinstance(m, FineNet):
            n += _fold_finenet(m)
    for m in list(fast.modules()):
        n += _fold_timm_pairs(m)
        if isinstance(m, nn.Sequential):
            n += _fold_sequential(m)
    fast.folded_norms = n
    fast.inference_only = True
    if isinstance(net, EdgeFlowLiteNet):  # its weights live channels_last; the folded ones must too
        fast.to(memory_format=torch.channels_last)
    return fast
