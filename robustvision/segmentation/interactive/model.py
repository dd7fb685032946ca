"""EdgeFlow: click-based interactive segmentation with edge-guided flow (and its RITM-style ablation).

Hao et al., "EdgeFlow: Achieving Practical Interactive Segmentation with Edge-Guided Flow", ICCVW 2021,
arXiv:2109.09406. Rebuilt from the network definition in PaddleCV-SIG/EISeg ``b6c4501``
(``hrnet_ocr_edge.py``, ``is_model.py``, ``finenet.py``); no training code was ever published.

What is kept, at a width that trains on a CPU:

- an HRNet-style backbone (stem to 1/4, a residual stage, then 2/3/4 parallel branches at 1/4..1/32 with
  repeated multi-resolution fusion; ``width=18`` gives HRNet-W18's branch widths 18/36/72/144, the default
  the default ``width=8`` a light variant for CPUs), the branches upsampled and concatenated at 1/4;
- **early fusion**: the 3 click channels ``[prev_edge, pos_disks, neg_disks]`` go through the interaction
  encoder (1x1 conv, LeakyReLU, 3x3 stride-2 conv, learnable scale 0.05) and are *added* after the stem's
  first convolution;
- **late fusion** through learned flow: after the residual stage and after the branch aggregation, an
  SFNet flow-alignment module predicts a 2-D flow from (backbone features, interaction features) and warps
  the backbone features, which are added back;
- an OCR head (soft object region -> object context -> coarse logits) with the aux output;
- the **edge branch** (DecoupleSegNets' SqueezeBodyEdge): a flow warps the OCR features into a "body",
  ``edge = features - body`` is fused with the backbone features into edge logits;
- **FineNet**: three dilated (1/2/3) conv branches at input resolution over
  ``[image, clicks, sigmoid(coarse), sigmoid(edge)]`` give the final logits.

``edge_flow=False`` is the RITM-style ablation with the same backbone: early fusion only, the previous
*mask* as the third click channel, no flow modules, no edge branch and no FineNet (RITM HRNet-OCR).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from robustvision.models.wrappers import PixelNormalizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class EdgeFlowConfig:
    """Architecture of :class:`EdgeFlowNet` (stored in the checkpoint's model card).

    Attributes:
        width: width of the highest-resolution branch; branch widths are ``width * 2**i`` (18 = HRNet-W18).
        num_branches: parallel branches in the last stage (2..4).
        blocks: residual blocks per branch in each HR module.
        stem_channels: channels of the stem (and of the interaction encoder's output).
        head_channels: channels of the OCR head.
        fine_channels: channels of each FineNet branch.
        fine_stride: FineNet runs at ``1 / fine_stride`` of the input resolution (EdgeFlow: 1; 2 quarters its
            cost, which dominates a small model's per-click time on a CPU).
        edge_flow: EdgeFlow (True) or the RITM-style ablation (False).
        maps_scale_init: initial value of the interaction encoder's learnable scale (HRNet backbone). EdgeFlow/RITM
            use 0.05 so the clicks do not disturb an ImageNet-pretrained stem; trained from scratch 0.05 starves
            the backbone of the click signal, so the default is 1.0. The EfficientNet-Lite backbones zero-initialise
            the encoder's last convolution instead (the pretrained stem's output is unchanged at step 0).
        backbone: ``hrnet18`` (the HRNet-style backbone above, trained from scratch; ``width`` etc. apply) or
            ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2`` (timm's ``tf_efficientnet_lite*``
            with the packaged ImageNet weights; see :class:`EdgeFlowLiteNet`).
        fpn_channels: channels of the EfficientNet-Lite feature pyramid that aggregates strides 4-32 at 1/4.
    """

    width: int = 8
    num_branches: int = 4
    blocks: int = 1
    stem_channels: int = 24
    head_channels: int = 32
    fine_channels: int = 8
    fine_stride: int = 2
    edge_flow: bool = True
    maps_scale_init: float = 1.0
    backbone: str = "hrnet18"
    fpn_channels: int = 64


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Warp ``x`` by a per-pixel flow (SFNet ``flow_warp``).

    Args:
        x: ``B x C x H x W`` features.
        flow: ``B x 2 x H x W`` offsets in pixels, channel 0 along x (width), channel 1 along y (height).

    Returns:
        ``x`` sampled bilinearly at ``(y + flow_y, x + flow_x)``; a zero flow returns ``x`` exactly.
    """
    b, _, h, w = x.shape
    base, scale = _identity_grid(h, w, x.dtype, x.device, torch.is_inference_mode_enabled())
    grid = base.expand(b, -1, -1, -1) + flow.permute(0, 2, 3, 1) * scale
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if x.shape[1] > 1 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # grid_sample answers NCHW; the convolutions that read ``out`` would each convert it back
        out = out.contiguous(memory_format=torch.channels_last)
    return out


@functools.lru_cache(maxsize=32)
def _identity_grid(
    h: int, w: int, dtype: torch.dtype, device: torch.device, inference: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``flow_warp``'s identity sampling grid and its pixel-to-[-1, 1] scale, cached per size.

    A tensor made under ``torch.inference_mode`` is kept apart from one that autograd may see.
    """
    ys = torch.linspace(-1.0, 1.0, h, device=device, dtype=dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=device, dtype=dtype)
    return grid, scale


class FlowAlign(nn.Module):
    """SFNet flow-alignment module: predict a flow from (features, guide) and warp the features by it.

    The flow convolution starts at zero, so an untrained module is the identity warp.
    """

    def __init__(self, feat_channels: int, guide_channels: int, mid: int = 16) -> None:
        super().__init__()
        self.down_feat = nn.Conv2d(feat_channels, mid, 1, bias=False)
        self.down_guide = nn.Conv2d(guide_channels, mid, 1, bias=False)
        self.flow = nn.Conv2d(2 * mid, 2, 3, padding=1, bias=False)
        nn.init.zeros_(self.flow.weight)

    def forward(self, feat: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if guide.shape[-2:] != feat.shape[-2:]:
            guide = F.interpolate(guide, size=feat.shape[-2:], mode="bilinear", align_corners=True)
        flow = self.flow(torch.cat([self.down_feat(feat), self.down_guide(guide)], dim=1))
        return flow_warp(feat, flow)


class BasicBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(c, c)
        self.conv2 = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(self.conv1(x)))


class HRModule(nn.Module):
    """Parallel branches with residual blocks, then every branch receives the sum of all (HRNet fusion)."""

    def __init__(self, widths: list[int], blocks: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(w) for _ in range(blocks)]) for w in widths)
        self.fuse = nn.ModuleList()
        for i, wi in enumerate(widths):
            row = nn.ModuleList()
            for j, wj in enumerate(widths):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(nn.Sequential(nn.Conv2d(wj, wi, 1, bias=False), nn.BatchNorm2d(wi)))
                else:
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        steps.append(
                            conv_bn_relu(wj, wj, stride=2)
                            if not last
                            else nn.Sequential(nn.Conv2d(wj, wi, 3, 2, 1, bias=False), nn.BatchNorm2d(wi))
                        )
                    row.append(nn.Sequential(*steps))
            self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [b(x) for b, x in zip(self.branches, xs, strict=True)]
        out = []
        for i, row in enumerate(self.fuse):
            acc = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                if y.shape[-2:] != acc.shape[-2:]:
                    y = F.interpolate(y, size=acc.shape[-2:], mode="bilinear", align_corners=True)
                acc = acc + y
            out.append(F.relu(acc))
        return out


class OCRHead(nn.Module):
    """Object-contextual representations (Yuan et al., ECCV 2020) with one object class, as in RITM/EdgeFlow."""

    def __init__(self, cin: int, c: int) -> None:
        super().__init__()
        self.aux = nn.Sequential(conv_bn_relu(cin, c, 1), nn.Conv2d(c, 1, 1))
        self.pre = conv_bn_relu(cin, c)
        self.query = conv_bn_relu(c, c // 2, 1)
        self.key = conv_bn_relu(c, c // 2, 1)
        self.value = conv_bn_relu(c, c, 1)
        self.out = nn.Sequential(conv_bn_relu(2 * c, c, 1), nn.Dropout2d(0.05))

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        aux = self.aux(feats)
        x = self.pre(feats)
        b, c, h, w = x.shape
        # Soft object region (foreground and background, from the aux logit) -> 2 context vectors.
        regions = torch.cat([aux, -aux], dim=1).flatten(2).softmax(dim=-1)  # B x 2 x HW
        context = torch.einsum("bkn,bcn->bck", regions, x.flatten(2)).unsqueeze(-1)  # B x C x 2 x 1
        q = self.query(x).flatten(2)  # B x C/2 x HW
        k = self.key(context).flatten(2)  # B x C/2 x 2
        attn = torch.einsum("bcn,bck->bnk", q, k).mul(q.shape[1] ** -0.5).softmax(dim=-1)
        ctx = torch.einsum("bnk,bck->bcn", attn, self.value(context).flatten(2)).view(b, c, h, w)
        return self.out(torch.cat([ctx, x], dim=1)), aux


class SqueezeBodyEdge(nn.Module):
    """DecoupleSegNets' body/edge split: a flow warps features to their body; ``edge = features - body``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.down = nn.Sequential(conv_bn_relu(c, c, stride=2, groups=c), conv_bn_relu(c, c, stride=2, groups=c))
        self.flow = nn.Conv2d(2 * c, 2, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg_down = F.interpolate(self.down(x), size=x.shape[-2:], mode="bilinear", align_corners=True)
        body = flow_warp(x, self.flow(torch.cat([x, seg_down], dim=1)))
        return body, x - body


class FineNet(nn.Module):
    """EdgeFlow's refiner at input resolution: dilated (1/2/3) branches, a bottleneck, one output logit."""

    def __init__(self, cin: int = 8, c: int = 8) -> None:
        super().__init__()

        def branch(d: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, c, 3, padding=d, dilation=d),
                nn.PReLU(c),
                nn.BatchNorm2d(c),
                nn.Conv2d(c, c, 1),
                nn.PReLU(c),
                nn.BatchNorm2d(c),
            )

        self.branches = nn.ModuleList(branch(d) for d in (1, 2, 3))
        self.bottleneck = nn.Sequential(nn.Conv2d(3 * c, 2 * c, 1), nn.PReLU(2 * c), nn.BatchNorm2d(2 * c))
        self.out = nn.Conv2d(2 * c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.bottleneck(torch.cat([b(x) for b in self.branches], dim=1)))


def _edgeflow_heads(
    net: nn.Module, image: torch.Tensor, coord_features: torch.Tensor, feats: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The heads every backbone shares: OCR (coarse + aux), and for EdgeFlow the edge branch and FineNet."""
    size = image.shape[-2:]
    feats2, aux = net.ocr(feats)
    coarse = net.cls_head(feats2)

    def up(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=size, mode="bilinear", align_corners=True)

    out = {"coarse": up(coarse)}
    if not getattr(net, "inference_only", False):  # the aux logits only feed a training loss
        out["aux"] = up(aux)
    if not net.uses_edge:
        out["instances"] = out["coarse"]
        return out
    _, edge_feat = net.squeeze_body_edge(feats2)
    edges = up(net.edge_fusion(torch.cat([edge_feat, feats], dim=1)))
    fine_in = torch.cat([image, coord_features, torch.sigmoid(out["coarse"]), torch.sigmoid(edges)], dim=1)
    out["edges"] = edges
    if net.config.fine_stride > 1:
        small = [max(1, n // net.config.fine_stride) for n in size]
        fine_in = F.interpolate(fine_in, size=small, mode="bilinear", align_corners=True)
        if feats.is_contiguous(memory_format=torch.channels_last) and not feats.is_contiguous():
            fine_in = fine_in.contiguous(memory_format=torch.channels_last)  # once, not once per FineNet branch
        fine = up(net.finenet(fine_in))
    else:
        fine = net.finenet(fine_in)
    out["instances"] = fine
    return out


def _build_heads(net: nn.Module, cfg: EdgeFlowConfig, agg: int) -> None:
    net.ocr = OCRHead(agg, cfg.head_channels)
    net.cls_head = nn.Conv2d(cfg.head_channels, 1, 1)
    if cfg.edge_flow:
        c = cfg.head_channels
        net.squeeze_body_edge = SqueezeBodyEdge(c)
        net.edge_fusion = nn.Sequential(
            nn.Conv2d(c + agg, c, 1, bias=False), conv_bn_relu(c, c // 2), nn.Conv2d(c // 2, 1, 1)
        )
        net.finenet = FineNet(8, cfg.fine_channels)


class EdgeFlowNet(nn.Module):
    """The EdgeFlow network (or, with ``edge_flow=False``, the RITM-style ablation).

    Inputs are an image in [0, 1] (normalised inside) and 3 click channels
    ``[prev_edge or prev_mask, positive disks, negative disks]`` at the image's resolution (a multiple of 8
    keeps the branches aligned; others work too).

    Outputs (a dict of ``B x 1 x H x W`` logits at input resolution): ``instances`` (final mask),
    ``coarse`` (OCR head), ``aux`` (soft object region) and, for EdgeFlow, ``edges``.

    Example:
        >>> net = EdgeFlowNet(EdgeFlowConfig(width=8)).eval()
        >>> out = net(torch.rand(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))
        >>> sorted(out), tuple(out["instances"].shape)
        (['aux', 'coarse', 'edges', 'instances'], (1, 1, 64, 64))
    """

    def __init__(self, config: EdgeFlowConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or EdgeFlowConfig()
        if not 2 <= cfg.num_branches <= 4:
            raise ValueError(f"num_branches must be 2, 3 or 4, got {cfg.num_branches}")
        self.uses_edge = cfg.edge_flow
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        s = cfg.stem_channels
        self.conv1 = conv_bn_relu(3, s, stride=2)
        self.maps_transform = nn.Sequential(
            nn.Conv2d(3, 16, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, s, 3, stride=2, padding=1)
        )
        self.maps_scale = nn.Parameter(torch.tensor(float(cfg.maps_scale_init)))
        self.conv2 = conv_bn_relu(s, s, stride=2)
        self.layer1 = nn.Sequential(BasicBlock(s), BasicBlock(s))
        widths = [cfg.width * 2**i for i in range(cfg.num_branches)]
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        prev = [s]
        for n in range(2, cfg.num_branches + 1):
            cur = widths[:n]
            trans = nn.ModuleList()
            for i, w in enumerate(cur):
                if i < len(prev):
                    trans.append(conv_bn_relu(prev[i], w) if prev[i] != w else nn.Identity())
                else:
                    trans.append(conv_bn_relu(prev[-1], w, stride=2))
            self.transitions.append(trans)
            self.stages.append(HRModule(cur, cfg.blocks))
            prev = cur
        agg = sum(widths)
        self.agg_channels = agg
        if cfg.edge_flow:
            self.warp1_conv = conv_bn_relu(s, s, stride=2)
            self.warp1_align = FlowAlign(s, s)
            self.warp2_conv = conv_bn_relu(s, agg, 1)
            self.warp2_align = FlowAlign(agg, agg)
        _build_heads(self, cfg, agg)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters that start from pretrained weights (none: this backbone trains from scratch)."""
        return []

    def encode_image(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The click-independent part: normalisation and the stem's first convolution (cached per view)."""
        x = (image - self.mean) / self.std
        return {"image": image, "stem": self.conv1(x)}

    def decode(self, cache: dict[str, torch.Tensor], coord_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything that depends on the clicks, from an :meth:`encode_image` cache."""
        image, x = cache["image"], cache["stem"]
        size = image.shape[-2:]
        if coord_features.shape[0] != image.shape[0] or coord_features.shape[-2:] != size:
            raise ValueError(
                f"coord_features {tuple(coord_features.shape)} must match the image batch {tuple(image.shape)}"
            )
        maps = self.maps_transform(coord_features) * self.maps_scale
        x = self.conv2(x + maps)  # early fusion
        x = self.layer1(x)
        if self.uses_edge:
            guide = self.warp1_conv(maps)
            x = x + self.warp1_align(x, guide)  # late fusion 1
        stage1 = x
        xs = [x]
        for trans, stage in zip(self.transitions, self.stages, strict=True):
            xs = [t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(trans)]
            xs = stage(xs)
        h, w = xs[0].shape[-2:]
        feats = torch.cat(
            [xs[0]] + [F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True) for y in xs[1:]], dim=1
        )
        if self.uses_edge:
            feats = feats + self.warp2_align(feats, self.warp2_conv(stage1))  # late fusion 2
        return _edgeflow_heads(self, image, coord_features, feats)

    def forward(self, image: torch.Tensor, coord_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``image`` ``B x 3 x H x W`` in [0, 1]; ``coord_features`` ``B x 3 x H x W``; returns logits."""
        return self.decode(self.encode_image(image), coord_features)


#: ``--backbone`` names of the ImageNet-pretrained backbones and the timm architectures they build.
LITE_BACKBONES = {f"efficientnet_lite{i}": f"tf_efficientnet_lite{i}" for i in (0, 1, 2)}
#: Every ``--backbone`` name.
BACKBONES = ("hrnet18", *LITE_BACKBONES)


class FlowFusion(nn.Module):
    """Late fusion into a pretrained backbone: the features warped by a learned flow plus the projected guide.

    ``out = warp(x, flow(x, guide)) + inject(guide)``. The flow and the injection start at zero, so an untrained
    module returns ``x`` unchanged (the pretrained features pass through at step 0) while both receive gradients.
    """

    def __init__(self, channels: int, guide_channels: int) -> None:
        super().__init__()
        self.align = FlowAlign(channels, guide_channels)
        self.inject = nn.Conv2d(guide_channels, channels, 1)
        nn.init.zeros_(self.inject.weight)
        nn.init.zeros_(self.inject.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        if guide.shape[-2:] != x.shape[-2:]:
            guide = F.interpolate(guide, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return self.align(x, guide) + self.inject(guide)


class EdgeFlowLiteNet(PixelNormalizer):
    """EdgeFlow on an ImageNet-pretrained EfficientNet-Lite (timm ``tf_efficientnet_lite*``).

    Every part of EdgeFlow is kept; only the backbone and the multi-scale aggregation change:

    - **early fusion**: the click maps go through the interaction encoder (1x1 conv, LeakyReLU, 3x3 stride-2
      conv) and are added to the stem's output (stride 2). The encoder's last conv starts at zero (RITM's
      ``conv1s`` idea), so at step 0 the pretrained stem's output, and the whole backbone, is unchanged;
    - **late fusion 1**: after the stride-4 stage, a :class:`FlowFusion` (learned flow warping of the backbone
      features, guided by the interaction features) feeds the clicks in again;
    - the stride 4/8/16/32 features are aggregated at 1/4 by a feature pyramid (``fpn_channels``), the role of
      HRNet's branch concatenation;
    - **late fusion 2**: a flow-alignment module warps the aggregated features, guided by the fused stride-4
      features, and adds them back (as in EdgeFlow);
    - the OCR head, the **edge branch** and **FineNet** as in :class:`EdgeFlowNet`.

    ``edge_flow=False`` is the RITM-style ablation on the same backbone: early fusion only, previous mask as the
    third click channel, no flow modules, no edge branch, no FineNet.

    The image is normalised with the packaged weights' own mean/std (``(255 x - 127) / 128``) by the
    :class:`~robustvision.models.wrappers.PixelNormalizer` it derives from. Weights are kept ``channels_last``
    (on a CPU the depthwise convolutions run many times faster so).

    Args:
        config: the architecture (``config.backbone`` names the EfficientNet-Lite).
        pretrained: load the packaged ImageNet weights into the backbone (training); a checkpoint being loaded
            needs none.

    Example:
        >>> net = EdgeFlowLiteNet(EdgeFlowConfig(backbone="efficientnet_lite0")).eval()
        >>> tuple(net(torch.rand(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))["instances"].shape)
        (1, 1, 64, 64)
    """

    def __init__(self, config: EdgeFlowConfig, pretrained: bool = False) -> None:
        import timm

        from robustvision.models.pretrained import LITE_MEAN, LITE_STD, load_packaged_weights

        super().__init__(LITE_MEAN, LITE_STD, persistent=False)
        if config.backbone not in LITE_BACKBONES:
            raise ValueError(f"{config.backbone!r} is not an EfficientNet-Lite backbone ({', '.join(LITE_BACKBONES)})")
        cfg = self.config = config
        self.uses_edge = cfg.edge_flow
        arch = LITE_BACKBONES[cfg.backbone]
        enc = timm.create_model(arch, num_classes=1000)
        if pretrained:
            load_packaged_weights(arch, enc)
        self.conv_stem, self.bn1, self.blocks = enc.conv_stem, enc.bn1, enc.blocks
        info = {f["module"]: f["num_chs"] for f in enc.feature_info}
        stem_c = enc.conv_stem.out_channels
        n = len(self.blocks)
        # the last block of each reduction: 1/4 = blocks.1, 1/8 = blocks.2, 1/16 = blocks.4, 1/32 = blocks.6
        self.levels = [i for i in range(n) if f"blocks.{i}" in info][1:]
        chs = [info[f"blocks.{i}"] for i in self.levels]
        self.maps_transform = nn.Sequential(
            nn.Conv2d(3, 16, 1), nn.LeakyReLU(0.2), nn.Conv2d(16, stem_c, 3, stride=2, padding=1)
        )
        nn.init.zeros_(self.maps_transform[2].weight)
        nn.init.zeros_(self.maps_transform[2].bias)
        c4 = chs[0]
        if cfg.edge_flow:
            self.warp1_conv = conv_bn_relu(stem_c, c4, stride=2)
            self.warp1_align = FlowFusion(c4, c4)
        f = cfg.fpn_channels
        self.lateral = nn.ModuleList(nn.Conv2d(c, f, 1) for c in chs)
        self.smooth = conv_bn_relu(f, f)
        if cfg.edge_flow:
            self.warp2_conv = conv_bn_relu(c4, f, 1)
            self.warp2_align = FlowAlign(f, f)
        _build_heads(self, cfg, f)
        self.to(memory_format=torch.channels_last)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The pretrained parameters (stem and blocks), for a lower learning rate."""
        return [*self.conv_stem.parameters(), *self.bn1.parameters(), *self.blocks.parameters()]

    def encode_image(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The click-independent part: normalisation and the pretrained stem (cached per view)."""
        x = self.normalize(image).contiguous(memory_format=torch.channels_last)
        return {"image": image, "stem": self.bn1(self.conv_stem(x))}

    def decode(self, cache: dict[str, torch.Tensor], coord_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything that depends on the clicks, from an :meth:`encode_image` cache."""
        image, x = cache["image"], cache["stem"]
        if coord_features.shape[0] != image.shape[0] or coord_features.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"coord_features {tuple(coord_features.shape)} must match the image batch {tuple(image.shape)}"
            )
        maps = self.maps_transform(coord_features.contiguous(memory_format=torch.channels_last))
        if maps.shape[-2:] != x.shape[-2:]:
            maps = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=True)
        x = x + maps  # early fusion
        feats: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.levels[0] and self.uses_edge:
                x = self.warp1_align(x, self.warp1_conv(maps))  # late fusion 1
            if i in self.levels:
                feats.append(x)
        top = self.lateral[-1](feats[-1])
        for lat, f in zip(self.lateral[-2::-1], feats[-2::-1], strict=True):
            top = lat(f) + F.interpolate(top, size=f.shape[-2:], mode="bilinear", align_corners=True)
        agg = self.smooth(top)
        if self.uses_edge:
            agg = agg + self.warp2_align(agg, self.warp2_conv(feats[0]))  # late fusion 2
        return _edgeflow_heads(self, image, coord_features, agg)

    def forward(self, image: torch.Tensor, coord_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``image`` ``B x 3 x H x W`` in [0, 1]; ``coord_features`` ``B x 3 x H x W``; returns logits."""
        return self.decode(self.encode_image(image), coord_features)


def build_edgeflow(config: EdgeFlowConfig, pretrained: bool = False) -> nn.Module:
    """The network ``config`` describes: :class:`EdgeFlowNet` (``hrnet18``) or :class:`EdgeFlowLiteNet`.

    Args:
        config: the architecture.
        pretrained: load the packaged ImageNet weights (EfficientNet-Lite backbones only; ``hrnet18`` has none).

    Raises:
        ValueError: an unknown backbone (the message lists the known ones).
    """
    if config.backbone == "hrnet18":
        return EdgeFlowNet(config)
    if config.backbone in LITE_BACKBONES:
        return EdgeFlowLiteNet(config, pretrained=pretrained)
    import difflib

    close = difflib.get_close_matches(config.backbone, BACKBONES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown backbone {config.backbone!r}{hint}; known: {', '.join(BACKBONES)}")


# ------------------------------------------------------------------------------------------ checkpoints


EDGEFLOW_FORMAT = "robustvision.iseg.edgeflow/1"


def save_edgeflow(net: nn.Module, path: str | Path, card: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors weights) and its JSON model card beside it (``.json``), atomically.

    Goes through :func:`robustvision.models.checkpoints.save_weights`; the card always records the architecture
    under ``"model"``; add the recipe, seed and figures.
    """
    from robustvision.models.checkpoints import save_weights

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    full = {**card, "model": asdict(net.config)}
    return save_weights(net, path, full, fmt=EDGEFLOW_FORMAT)


def load_edgeflow(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_edgeflow`; returns ``(net in eval mode, model card)``.

    Weights stored in float16 (to keep a shipped file small) are loaded into the float32 network.

    Raises:
        FileNotFoundError: the weights or the card is missing.
        ValueError: the card is not an EdgeFlow card or the weights do not match its architecture.
    """
    from robustvision.models.checkpoints import load_weights

    path = Path(path)
    card_file = path.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not card_file.is_file():
        raise FileNotFoundError(f"model card {card_file} (written beside the checkpoint) does not exist")
    try:
        state, card = load_weights(path, fmt=EDGEFLOW_FORMAT)
    except ValueError as err:
        raise ValueError(f"{path} is not a readable EdgeFlow checkpoint: {err}") from err
    try:
        config = EdgeFlowConfig(**card["model"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{card_file} is not an EdgeFlow model card: {err}") from err
    net = build_edgeflow(config, pretrained=False)
    ref = net.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match the architecture in {card_file.name}: {err}") from err
    return net.to(device).eval(), card
