"""Carlini-Wagner l2 attack (Carlini & Wagner, IEEE S&P 2017, arXiv:1608.04644).

C&W minimises ``||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)`` over ``x' = (tanh(w) + 1) / 2`` (the
change of variables keeps ``x'`` in the box) with Adam, and binary-searches the trade-off ``c`` per sample: after a
search step ``c`` halves towards the last success or grows tenfold while no success was found. It returns the
smallest misclassified point seen. As a bounded noise with budget ``eps`` it keeps that point when its l2 norm is
within ``eps`` and otherwise scales the perturbation onto the ``eps`` sphere, so ``||adv - x||_2 <= eps`` always
holds and robust accuracy at ``eps`` is read directly from the output.

Example:
    >>> adv = CarliniWagnerL2(model, eps=0.5, steps=100, binary_search_steps=5)(images, labels)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustvision.noises.adversarial import Attack, bview, lp_norm, margin_loss
from robustvision.noises.base import NOISES, NoiseKind


class CarliniWagnerL2(Attack):
    """C&W l2 with a per-sample binary search over the constant ``c``.

    Args:
        model: the model (or pass it per call).
        eps: the l2 budget the output is held to (see the module docstring).
        steps: Adam steps per binary-search step (100).
        binary_search_steps: searches over ``c`` (5).
        initial_const: the first ``c`` (1e-2 as Carlini & Wagner; foolbox uses 1e-3).
        lr: Adam's learning rate (0.01).
        kappa: confidence margin (0).

    Shape: ``N x C x H x W`` in [0, 1] -> same, ``||adv - x||_2 <= eps``. Deterministic (no random start).
    """

    name = "cw_l2"
    norm = "l2"

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        steps: int = 100,
        binary_search_steps: int = 5,
        initial_const: float = 1e-2,
        lr: float = 0.01,
        kappa: float = 0.0,
    ) -> None:
        super().__init__(model, eps=eps)
        if steps < 1 or binary_search_steps < 1:
            raise ValueError(f"{self.name}: steps and binary_search_steps must be >= 1")
        if not initial_const > 0 or not lr > 0 or kappa < 0:
            raise ValueError(f"{self.name}: initial_const and lr must be > 0 and kappa >= 0")
        self.steps, self.binary_search_steps = int(steps), int(binary_search_steps)
        self.initial_const, self.lr, self.kappa = float(initial_const), float(lr), float(kappa)

    @property
    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": "l2",
            "steps": self.steps,
            "binary_search_steps": self.binary_search_steps,
            "initial_const": self.initial_const,
            "lr": self.lr,
            "kappa": self.kappa,
        }

    def perturb(self, model, images, labels, params):
        n = images.shape[0]
        dev = images.device
        w0 = torch.atanh((images * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        const = torch.full((n,), self.initial_const, device=dev)
        lower = torch.zeros(n, device=dev)
        upper = torch.full((n,), float("inf"), device=dev)
        best_norm = torch.full((n,), float("inf"), device=dev)
        best = images.clone()
        last = images.clone()
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=dev)
            for _ in range(self.steps):
                with torch.enable_grad():
                    adv = (torch.tanh(w) + 1) / 2
                    logits = model(adv)
                    dist = (adv - images).flatten(1).pow(2).sum(1)
                    margin = -margin_loss(logits, labels)  # z_y - max other
                    loss = (dist + const * margin.clamp_min(-self.kappa)).sum()
                    opt.zero_grad()
                    loss.backward()
                opt.step()
                with torch.no_grad():
                    adv = adv.detach()
                    success = logits.argmax(1) != labels
                    l2 = dist.detach().sqrt()
                    better = success & (l2 < best_norm)
                    best[better] = adv[better]
                    best_norm = torch.where(better, l2, best_norm)
                    found |= success
            last = ((torch.tanh(w) + 1) / 2).detach()
            # Binary search on c: shrink towards a success, grow tenfold until the first one.
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10, (lower + upper) / 2)
        out = torch.where(bview(torch.isinf(best_norm), images), last, best)
        delta = out - images
        scale = (self.eps / lp_norm(delta, "l2").clamp_min(1e-12)).clamp(max=1.0)
        return (images + delta * bview(scale, delta)).clamp(0, 1)


NOISES.add("cw_l2", CarliniWagnerL2, kind=NoiseKind.ADVERSARIAL, family="cw", norm="l2", paper="Carlini & Wagner 2017")
