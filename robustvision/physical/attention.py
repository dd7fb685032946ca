"""Differentiable Grad-CAM (Selvaraju et al., ICCV 2017), as DAS uses it for its attention-distraction loss.

``A = sum_c alpha_c F_c`` with ``alpha_c`` the spatial mean of ``d score / d F_c`` at a chosen layer. With
``create_graph=True`` the map stays differentiable in the input (so in the texture); DAS detaches the channel
weights (``detach_weights=True``), which is cheaper and keeps the gradient only through the activations.
Transformer and MLP token maps ``(N, L, C)`` are reshaped to a square grid after dropping prefix tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["GradCAM", "grad_cam", "find_target_layer", "tokens_to_grid"]


def tokens_to_grid(act: torch.Tensor, num_prefix_tokens: int = 0) -> torch.Tensor:
    """``(N, C, H, W)`` maps unchanged; ``(N, L, C)`` tokens -> ``(N, C, s, s)``; ``(N, H, W, C)`` -> NCHW."""
    if act.ndim == 4:
        return act
    if act.ndim != 3:
        raise ValueError(f"cannot make a spatial map from activations of shape {tuple(act.shape)}")
    tokens = act[:, num_prefix_tokens:]
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} tokens (after {num_prefix_tokens} prefix tokens) are not a square grid")
    return tokens.transpose(1, 2).reshape(act.shape[0], act.shape[2], side, side)


def _prefix_tokens(model: nn.Module) -> int:
    for m in (model, getattr(model, "net", None)):
        if m is not None and hasattr(m, "num_prefix_tokens"):
            return int(m.num_prefix_tokens)
    return 0


def find_target_layer(model: nn.Module, image_size: int, in_chans: int = 3) -> str:
    """The name of the last module whose output is a spatial map (NCHW with H, W >= 2, or square tokens).

    It is found by one forward pass with hooks; the classifier head and pooling never qualify because their
    outputs are not spatial. For ResNets this is ``layer4`` (as DAS uses), for ViTs the last block.
    """
    prefix = _prefix_tokens(model)
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for name, mod in model.named_modules():
        if name:
            hooks.append(
                mod.register_forward_hook(
                    lambda m, i, o, n=name: seen.append((n, tuple(o.shape))) if isinstance(o, torch.Tensor) else None
                )
            )
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            dev = next(model.parameters()).device
            model(torch.zeros(1, in_chans, image_size, image_size, device=dev))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    best = None
    for name, shape in seen:
        spatial = (len(shape) == 4 and shape[2] >= 2 and shape[3] >= 2 and shape[1] > 3) or (
            len(shape) == 3 and shape[1] - prefix >= 4 and math.isqrt(shape[1] - prefix) ** 2 == shape[1] - prefix
        )
        if spatial:
            best = name
    if best is None:
        raise ValueError("the model has no layer with a spatial output; pass the Grad-CAM layer explicitly")
    # a parent module finishing after its last child wins; prefer the outermost module with that output
    return best


class GradCAM:
    """Grad-CAM at one layer of ``model``.

    Args:
        model: maps [0, 1] images to logits.
        layer: name of the target module (``dict(model.named_modules())`` key); default :func:`find_target_layer`.
        image_size: input side used to find the layer when ``layer`` is not given.
        num_prefix_tokens: class/register tokens to drop from token maps (default: the model's own count).

    Example:
        >>> cam = GradCAM(model, layer="net.layer4")  # doctest: +SKIP
        >>> maps, logits = cam(images, targets, create_graph=True)  # doctest: +SKIP
    """

    def __init__(
        self, model: nn.Module, layer: str | None = None, *, image_size: int = 64, num_prefix_tokens: int | None = None
    ) -> None:
        self.model = model
        modules = dict(model.named_modules())
        self.layer = layer or find_target_layer(model, image_size)
        if self.layer not in modules:
            close = [n for n in modules if self.layer.split(".")[-1] in n][:5]
            raise ValueError(
                f"model has no layer {self.layer!r}" + (f"; close names: {', '.join(close)}" if close else "")
            )
        self.module = modules[self.layer]
        self.prefix = _prefix_tokens(model) if num_prefix_tokens is None else num_prefix_tokens

    def __call__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        create_graph: bool = True,
        detach_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad-CAM maps (before ReLU) of class ``targets`` and the logits.

        Args:
            images: ``(N, C, H, W)`` in [0, 1] (may require grad).
            targets: ``(N,)`` class index whose score is explained.
            create_graph: keep the map differentiable in ``images`` (second order through the weights).
            detach_weights: use constant channel weights (DAS); the map is then linear in the activations.

        Returns:
            ``(cam, logits)``: ``(N, h, w)`` maps at the layer's resolution and ``(N, K)`` logits.
        """
        store: dict[str, torch.Tensor] = {}
        hook = self.module.register_forward_hook(lambda m, i, o: store.__setitem__("act", o))
        try:
            logits = self.model(images)
        finally:
            hook.remove()
        if "act" not in store:
            raise RuntimeError(f"layer {self.layer!r} was not run in the forward pass")
        act = store["act"]
        score = logits.gather(1, targets.view(-1, 1).to(logits.device)).sum()
        (grad,) = torch.autograd.grad(score, act, create_graph=create_graph and not detach_weights, retain_graph=True)
        fmap = tokens_to_grid(act, self.prefix)
        gmap = tokens_to_grid(grad, self.prefix)
        weights = gmap.mean((2, 3), keepdim=True)
        if detach_weights or not create_graph:
            weights = weights.detach()
        cam = (weights * fmap).sum(1)
        if not create_graph and not detach_weights:
            cam = cam.detach()
        return cam, logits


def grad_cam(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: str | None = None, **kw
) -> torch.Tensor:
    """Functional form of :class:`GradCAM`: the ``(N, h, w)`` maps only."""
    create_graph = kw.pop("create_graph", True)
    detach_weights = kw.pop("detach_weights", False)
    return GradCAM(model, layer, image_size=images.shape[-1], **kw)(
        images, targets, create_graph=create_graph, detach_weights=detach_weights
    )[0]
