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

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

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
        maps_scale_init: initial value of the interaction encoder's learnable scale. EdgeFlow/RITM use 0.05 so
            the clicks do not disturb an ImageNet-pretrained stem; trained from scratch (no weight downloads
            here) 0.05 starves the backbone of the click signal, so the default is 1.0.
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
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).expand(b, -1, -1, -1)
    scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], device=x.device, dtype=x.dtype)
    grid = grid + flow.permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


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
        self.ocr = OCRHead(agg, cfg.head_channels)
        self.cls_head = nn.Conv2d(cfg.head_channels, 1, 1)
        if cfg.edge_flow:
            c = cfg.head_channels
            self.squeeze_body_edge = SqueezeBodyEdge(c)
            self.edge_fusion = nn.Sequential(
                nn.Conv2d(c + agg, c, 1, bias=False), conv_bn_relu(c, c // 2), nn.Conv2d(c // 2, 1, 1)
            )
            self.finenet = FineNet(8, cfg.fine_channels)

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
        feats2, aux = self.ocr(feats)
        coarse = self.cls_head(feats2)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=size, mode="bilinear", align_corners=True)

        out = {"coarse": up(coarse), "aux": up(aux)}
        if not self.uses_edge:
            out["instances"] = out["coarse"]
            return out
        _, edge_feat = self.squeeze_body_edge(feats2)
        edges = up(self.edge_fusion(torch.cat([edge_feat, feats], dim=1)))
        fine_in = torch.cat([image, coord_features, torch.sigmoid(out["coarse"]), torch.sigmoid(edges)], dim=1)
        out["edges"] = edges
        if self.config.fine_stride > 1:
            small = [max(1, n // self.config.fine_stride) for n in size]
            fine = up(self.finenet(F.interpolate(fine_in, size=small, mode="bilinear", align_corners=True)))
        else:
            fine = self.finenet(fine_in)
        out["instances"] = fine
        return out

    def forward(self, image: torch.Tensor, coord_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """``image`` ``B x 3 x H x W`` in [0, 1]; ``coord_features`` ``B x 3 x H x W``; returns logits."""
        return self.decode(self.encode_image(image), coord_features)


# ------------------------------------------------------------------------------------------ checkpoints


def save_edgeflow(net: EdgeFlowNet, path: str | Path, card: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors weights) and its JSON model card beside it (``.json``).

    The card always records the architecture under ``"model"``; add the recipe, seed and figures.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint path must end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path))
    full = dict(card)
    full["model"] = asdict(net.config)
    full["format"] = "robustvision.iseg.edgeflow/1"
    path.with_suffix(".json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    return path


def load_edgeflow(path: str | Path, device: str | torch.device = "cpu") -> tuple[EdgeFlowNet, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_edgeflow`; returns ``(net in eval mode, model card)``.

    Raises:
        FileNotFoundError: the weights or the card is missing.
        ValueError: the card is not an EdgeFlow card or the weights do not match its architecture.
    """
    from safetensors.torch import load_file

    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not card_path.is_file():
        raise FileNotFoundError(f"model card {card_path} (written beside the checkpoint) does not exist")
    try:
        card = json.loads(card_path.read_text())
        config = EdgeFlowConfig(**card["model"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{card_path} is not an EdgeFlow model card: {err}") from err
    net = EdgeFlowNet(config)
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error type on a corrupt file
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match the architecture in {card_path.name}: {err}") from err
    return net.to(device).eval(), card
