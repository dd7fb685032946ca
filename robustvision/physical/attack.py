"""The Dual Attention Suppression attack (Wang et al., CVPR 2021, arXiv:2103.01050) and its naive baseline.

Each step renders a batch of cached views with the current texture over their backgrounds (expectation over
transformation: random background crops and brightness/contrast), then minimises
``w_att * L_d + w_cls * L_cls + lambda * L_s + t * L_smo`` (see :mod:`robustvision.physical.losses`) with Adam
on the texture's pre-tanh parameter. ``mode="naive"`` keeps only ``L_cls`` (the classification-only attack
DAS is compared with).

Ensemble attack: given several models, one texture is optimised against all of them at once; the model terms
(``w_att * L_d + w_cls * L_cls``, each with the model's own Grad-CAM layer) are summed over the models on the
same rendered batch, and the texture terms (content, smoothness) are counted once. This is the usual way to
make a perturbation transfer to unseen architectures; it is not part of DAS itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from robustvision.physical.attention import GradCAM
from robustvision.physical.data import CarAssets, ViewSet, random_background
from robustvision.physical.losses import (
    DASWeights,
    attention_distraction_loss,
    content_loss,
    margin_loss,
    not_target_loss,
    smooth_loss,
)
from robustvision.physical.renderer import render
from robustvision.physical.texture import CubeTexture, UVTexture, create_texture, cube_from_image

__all__ = ["AttackConfig", "AttackResult", "optimize_texture", "edge_mask_for"]


@dataclass
class AttackConfig:
    """Settings of one texture optimisation.

    Attributes:
        mode: ``das`` (attention + classification + content + smooth) or ``naive`` (classification only).
        steps: optimisation steps.
        batch_size: views per step.
        lr: Adam learning rate on the pre-tanh texture (DAS: 0.01 over 1 epoch of ~12k views; fewer steps
            here need a larger one).
        texture: ``cube`` (NMR colour cubes, DAS) or ``uv`` (a UV atlas).
        cube_size: cube side T (DAS: 6).
        atlas_size: UV atlas side (32: coarse paint that transfers across model families; see the docs).
        weights: the loss weights (DAS defaults).
        car_classes: the classes counted as "car" (Grad-CAM explains the first).
        cam_layer: Grad-CAM layer (default: the model's ``cam_layer`` or the last spatial layer; ensembles always
            use each model's own).
        detach_cam_weights: DAS detaches the Grad-CAM channel weights; False keeps them differentiable.
        eot_background: probability of replacing a view's background by a fresh random crop.
        eot_photometric: brightness/contrast jitter amplitude.
        eot_shift: random translation of each rendered view by up to this many pixels (reflect-padded; 0: off),
            a camera-jitter EOT that also makes the texture less specific to the target's patch grid.
        cls_loss: ``margin`` (C&W margin, keeps pushing after a view flips; see :func:`margin_loss`) or ``ce``
            (``-log(1 - p(car))``, the first version's term).
        margin: ``kappa`` of the margin loss (logit units).
        lr_schedule: ``cosine`` (linear warm-up over ``warmup_steps``, cosine decay to 5% of ``lr``) or
            ``constant``.
        warmup_steps: warm-up steps of the cosine schedule.
        seed: seeds view order and EOT (DAS: 2333).
        device: where to run.
    """

    mode: Literal["das", "naive"] = "das"
    steps: int = 100
    batch_size: int = 8
    lr: float = 0.05
    texture: Literal["cube", "uv"] = "cube"
    cube_size: int = 6
    atlas_size: int = 32
    weights: DASWeights = field(default_factory=DASWeights)
    car_classes: tuple[int, ...] = (1,)
    cam_layer: str | None = None
    detach_cam_weights: bool = False
    eot_background: float = 0.5
    eot_photometric: float = 0.15
    eot_shift: int = 0
    cls_loss: Literal["margin", "ce"] = "margin"
    margin: float = 5.0
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 10
    seed: int = 2333
    device: str = "cpu"


@dataclass
class AttackResult:
    """The optimised texture and the loss history (one dict per step, with its ``seconds`` and ``lr``) with the
    mean seconds per step."""

    texture: nn.Module
    history: list[dict[str, float]]
    seconds_per_step: float


def edge_mask_for(texture: nn.Module, edge: torch.Tensor, paint_uv: torch.Tensor) -> torch.Tensor:
    """The seed's edge mask in the texture's own space (cube texels or atlas pixels), broadcast to RGB."""
    if isinstance(texture, CubeTexture):
        e = cube_from_image(edge, paint_uv, texture.size)  # P,T,T,T,1
        return (e >= 0.5).float().expand(-1, -1, -1, -1, 3)
    if isinstance(texture, UVTexture):
        h, w = texture.param.shape[-2:]
        e = F.interpolate(edge[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
        return (e >= 0.5).float().expand(3, -1, -1)[None]
    raise TypeError(f"unknown texture type {type(texture).__name__}")


def _shift_batch(x: torch.Tensor, pixels: int, g: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``pixels`` in x and y (reflect padding; differentiable in ``x``)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="reflect")
    d = torch.randint(2 * pixels + 1, (n, 2), generator=g).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(d)])


def _lr_factor(step: int, config: AttackConfig) -> float:
    """Multiplier of ``config.lr`` at ``step`` (linear warm-up then cosine decay to 5%, or constant)."""
    if config.lr_schedule == "constant":
        return 1.0
    warm = max(0, min(config.warmup_steps, config.steps - 1))
    if step < warm:
        return (step + 1) / (warm + 1)
    t = (step - warm) / max(1, config.steps - warm)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))


def optimize_texture(
    model: nn.Module | Sequence[nn.Module],
    assets: CarAssets,
    views: ViewSet,
    config: AttackConfig,
    *,
    backgrounds: list[torch.Tensor] | None = None,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> AttackResult:
    """Optimise a camouflage texture for ``assets.mesh`` against ``model`` over ``views``.

    Args:
        model: [0, 1]-input classifier (in eval mode during the attack; its mode is restored), or a sequence of
            them for the ensemble attack (per-model losses summed; see the module docstring).
        assets: the car, seed image and edge mask (the texture starts from the seed).
        views: cached training views with their backgrounds.
        config: :class:`AttackConfig`.
        backgrounds: photos for EOT background crops (default: only the views' own backgrounds).
        progress: called as ``progress(step, losses)``.

    Returns:
        :class:`AttackResult`.
    """
    if len(views) == 0:
        raise ValueError("the attack needs at least one view")
    if config.steps < 1 or config.batch_size < 1:
        raise ValueError("steps and batch_size must be >= 1")
    dev = torch.device(config.device)
    size = views.views[0].size
    g = torch.Generator().manual_seed(config.seed)
    mesh = assets.mesh
    init = (
        F.interpolate(assets.seed[None], size=(config.atlas_size,) * 2, mode="bilinear", align_corners=False)[0]
        if config.texture == "uv"
        else assets.seed
    )
    texture = create_texture(config.texture, mesh, init, cube_size=config.cube_size).to(dev)
    seed_param = texture.param.detach().clone()
    edge = edge_mask_for(texture, assets.edge, mesh.paint_uv()).to(dev)
    w = config.weights
    models = [model] if isinstance(model, nn.Module) else list(model)
    if not models:
        raise ValueError("the attack needs at least one model")
    if config.mode not in ("das", "naive"):
        raise ValueError(f"unknown attack mode {config.mode!r}; choose 'das' or 'naive'")
    if config.cls_loss not in ("margin", "ce"):
        raise ValueError(f"unknown classification loss {config.cls_loss!r}; choose 'margin' or 'ce'")
    if config.eot_shift < 0 or config.eot_shift >= size:
        raise ValueError(f"eot_shift must be in [0, {size}), got {config.eot_shift}")
    if config.lr_schedule not in ("cosine", "constant"):
        raise ValueError(f"unknown lr schedule {config.lr_schedule!r}; choose 'cosine' or 'constant'")
    cams: list[GradCAM | None] = []
    for m in models:
        if config.mode == "das" and w.attention > 0:
            layer = config.cam_layer if len(models) == 1 and config.cam_layer else getattr(m, "cam_layer", None)
            cams.append(GradCAM(m, layer, image_size=size))
        else:
            cams.append(None)
    cached = [v.to(dev) for v in views.views]
    opt = torch.optim.Adam(texture.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
    was = [m.training for m in models]
    for m in models:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    target = torch.tensor([config.car_classes[0]], device=dev)
    target_all = torch.tensor(list(config.car_classes), device=dev)[None]
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    try:
        for step in range(config.steps):
            t_step = time.perf_counter()
            # Without replacement within a batch (when the pool allows): more distinct poses per step.
            if config.batch_size <= len(views):
                idx = torch.randperm(len(views), generator=g)[: config.batch_size].tolist()
            else:
                idx = torch.randint(len(views), (config.batch_size,), generator=g).tolist()
            imgs, masks = [], []
            for i in idx:
                bg = views.backgrounds[i]
                if backgrounds and float(torch.rand(1, generator=g)) < config.eot_background:
                    bg = random_background(backgrounds, size, generator=g)
                img = render(cached[i], texture, bg.to(dev))
                a = config.eot_photometric
                b = 1 + a * (2 * float(torch.rand(1, generator=g)) - 1)
                c = 1 + a * (2 * float(torch.rand(1, generator=g)) - 1)
                mean = img.mean()
                imgs.append(((img - mean) * c + mean * b).clamp(0, 1))
                masks.append(cached[i].paint_mask)
            rendered = torch.stack(imgs)
            # the smoothness term is measured on the unshifted renders, where the paint masks line up
            x = _shift_batch(rendered, config.eot_shift, g) if config.eot_shift > 0 else rendered
            losses: dict[str, torch.Tensor] = {}
            all_logits = []
            for m, cam in zip(models, cams, strict=True):
                if cam is not None:
                    cmap, logits = cam(
                        x, target.expand(len(idx)), create_graph=True, detach_weights=config.detach_cam_weights
                    )
                    att = attention_distraction_loss(cmap)
                    losses["attention"] = losses["attention"] + att if "attention" in losses else att
                else:
                    logits = m(x)
                if config.cls_loss == "margin":
                    cls = margin_loss(logits, list(config.car_classes), config.margin)
                else:
                    cls = not_target_loss(logits, list(config.car_classes))
                losses["classification"] = losses["classification"] + cls if "classification" in losses else cls
                all_logits.append(logits)
            total = losses["classification"] * (w.classification if config.mode == "das" else 1.0)
            if config.mode == "das":
                losses["content"] = content_loss(texture.param, seed_param, edge, w.edge, w.non_edge)
                losses["smooth"] = smooth_loss(rendered, torch.stack(masks))
                total = total + w.content * losses["content"] + w.smooth * losses["smooth"]
                if "attention" in losses:
                    total = total + w.attention * losses["attention"]
            opt.zero_grad(set_to_none=True)
            total.backward()
            lr_now = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            with torch.no_grad():
                lg = torch.stack(all_logits)  # models x batch x classes
                probs = F.softmax(lg, -1)[..., list(config.car_classes)].sum(-1)
                car_rate = (lg.argmax(-1)[..., None] == target_all).any(-1).float().mean()
            row = {k: float(v.detach()) for k, v in losses.items()} | {
                "total": float(total.detach()),
                "p_car": float(probs.mean()),
                "car_rate": float(car_rate),
                "lr": lr_now,
                "seconds": time.perf_counter() - t_step,
            }
            history.append(row)
            if progress is not None:
                progress(step, row)
    finally:
        for m, mode in zip(models, was, strict=True):
            m.train(mode)
            for p in m.parameters():
                p.requires_grad_(True)
    elapsed = time.perf_counter() - start
    return AttackResult(texture.cpu().eval(), history, elapsed / config.steps)
