"""AutoAttack, standard version (Croce & Hein, ICML 2020, arXiv:2003.01690), as fra31/auto-attack's ``standard``.

Four attacks run in sequence, each only on the points every earlier one failed to break:

=========  ======================================================================
APGD-CE    cross-entropy, 1 run of 100 iterations (:class:`~robustvision.noises.apgd.APGD`)
APGD-T     targeted DLR, the 9 most likely wrong classes, 100 iterations each
FAB-T      targeted FAB, the same 9 targets, 100 iterations each (:mod:`~robustvision.noises.fab`)
Square     score-based black box, 5000 queries (:mod:`~robustvision.noises.square`, l-inf only)
=========  ======================================================================

Robust accuracy is the share of points that survive all four. torchattacks' ``AutoAttack`` runs APGD with 10
iterations and is weaker; this one matches the reference protocol (iterations, targets, queries, order). Each
component is seeded from the one generator passed in, so a run replays exactly. The reference's sanity checks
(randomised or softmax-output models) are not run.

The orchestration follows fra31/auto-attack (MIT licence, Copyright (c) 2020 Francesco Croce),
``autoattack/autoattack.py``.

Example:
    >>> aa = AutoAttack(model, eps=8 / 255)                                       # doctest: +SKIP
    >>> result = aa.run(images, labels, generator=torch.Generator().manual_seed(0))   # doctest: +SKIP
    >>> result.robust_accuracy        # {'clean': ..., 'apgd_ce': ..., 'apgd_t': ..., 'fab_t': ..., 'square': ...}
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustvision.noises.adversarial import Attack, Norm, attack_mode, draw_seed
from robustvision.noises.apgd import APGD
from robustvision.noises.base import NOISES, NoiseKind
from robustvision.noises.fab import FABTargeted
from robustvision.noises.square import SquareAttack
from robustvision.validation import check_images, check_labels

COMPONENTS: tuple[str, ...] = ("apgd_ce", "apgd_t", "fab_t", "square")


@dataclass
class AutoAttackResult:
    """What :meth:`AutoAttack.run` returns.

    Attributes:
        adv: adversarial images ``N x C x H x W``.
        robust: bool ``N``: survived every component (a clean error counts as not robust).
        robust_accuracy: share of robust points after ``clean`` and after each component, in order.
    """

    adv: torch.Tensor
    robust: torch.Tensor
    robust_accuracy: dict[str, float] = field(default_factory=dict)


class AutoAttack(Attack):
    """Standard AutoAttack under l-inf (or l2, without Square's l2 variant: see ``components``).

    Args:
        model: the model (or pass it per call).
        eps: budget.
        norm: ``linf`` (the registered ``autoattack_linf``) or ``l2``.
        apgd_steps: APGD-CE and APGD-T iterations (100).
        n_target_classes: targets of APGD-T and FAB-T (9).
        fab_steps: FAB-T iterations per target (100).
        square_queries: Square's queries (5000).
        components: a subset of ``("apgd_ce", "apgd_t", "fab_t", "square")`` to run, in that order (all of them by
            default under l-inf; Square is l-inf only).

    Shape: ``N x C x H x W`` in [0, 1] -> same, ``||adv - x||_p <= eps``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        *,
        eps: float,
        norm: Norm = "linf",
        apgd_steps: int = 100,
        n_target_classes: int = 9,
        fab_steps: int = 100,
        square_queries: int = 5000,
        components: tuple[str, ...] | list[str] | None = None,
    ) -> None:
        if norm not in ("linf", "l2"):
            raise ValueError(f"AutoAttack here supports norm 'linf' or 'l2', got {norm!r}")
        self.norm = norm
        self.name = f"autoattack_{norm}"
        super().__init__(model, eps=eps)
        default = COMPONENTS if norm == "linf" else COMPONENTS[:3]
        chosen = tuple(components) if components is not None else default
        unknown = [c for c in chosen if c not in COMPONENTS]
        if unknown or not chosen:
            raise ValueError(f"{self.name}: components must be a non-empty subset of {COMPONENTS}, got {chosen}")
        if "square" in chosen and norm != "linf":
            raise ValueError(f"{self.name}: the Square component is implemented for l-inf only")
        self.components = tuple(c for c in COMPONENTS if c in chosen)
        self.apgd_steps, self.n_target_classes = int(apgd_steps), int(n_target_classes)
        self.fab_steps, self.square_queries = int(fab_steps), int(square_queries)
        builders = {
            "apgd_ce": lambda: APGD(eps=eps, norm=norm, loss="ce", steps=apgd_steps, restarts=1),
            "apgd_t": lambda: APGD(
                eps=eps, norm=norm, loss="dlr_targeted", steps=apgd_steps, n_target_classes=n_target_classes
            ),
            "fab_t": lambda: FABTargeted(eps=eps, norm=norm, steps=fab_steps, n_target_classes=n_target_classes),
            "square": lambda: SquareAttack(eps=eps, n_queries=square_queries),
        }
        self.attacks: dict[str, Attack] = {c: builders[c]() for c in self.components}

    @property
    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "norm": self.norm,
            "version": "standard" if self.components == COMPONENTS else "custom",
            "components": list(self.components),
            "apgd_steps": self.apgd_steps,
            "n_target_classes": self.n_target_classes,
            "fab_steps": self.fab_steps,
            "square_queries": self.square_queries,
        }

    def sample_params(self, shape, generator=None):
        return {"seed": draw_seed(generator)}

    def perturb(self, model, images, labels, params):
        return self._run(model, images, labels, params).adv

    def _run(self, model, images, labels, params) -> AutoAttackResult:
        gen = torch.Generator().manual_seed(int(params["seed"]))
        n = images.shape[0]
        with torch.no_grad():
            robust = model(images).argmax(1) == labels
        report = {"clean": float(robust.float().mean()) if n else 0.0}
        adv = images.clone()
        for name, attack in self.attacks.items():
            sub_seed = draw_seed(gen)  # drawn even when skipped, so later components keep their seeds
            idx = robust.nonzero().squeeze(1)
            if idx.numel():
                found = attack.perturb(model, images[idx], labels[idx], {"seed": sub_seed})
                with torch.no_grad():
                    fooled = model(found).argmax(1) != labels[idx]
                # Points no component breaks keep APGD-CE's highest-loss point (inside the ball, still correct).
                take = fooled if name != self.components[0] else torch.ones_like(fooled)
                adv[idx[take]] = found[take]
                robust[idx[fooled]] = False
            report[name] = float(robust.float().mean()) if n else 0.0
        return AutoAttackResult(adv=adv, robust=robust, robust_accuracy=report)

    def run(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        model: nn.Module | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> AutoAttackResult:
        """Run the attack and report robust accuracy after each component (see :class:`AutoAttackResult`)."""
        model = model if model is not None else self.model
        if model is None:
            raise ValueError(f"noise {self.name!r} is adversarial and needs a model; none was given")
        check_images(images)
        check_labels(labels, images.shape[0])
        params = self.sample_params(images.shape, generator)
        with attack_mode(model):
            result = self._run(model, images.detach(), labels.to(images.device), params)
        result.adv = result.adv.detach()
        return result


for _norm in ("linf", "l2"):
    NOISES.add(
        f"autoattack_{_norm}",
        functools.partial(AutoAttack, norm=_norm),
        kind=NoiseKind.ADVERSARIAL,
        family="autoattack",
        norm=_norm,
        paper="Croce & Hein 2020",
        protocol="standard: APGD-CE 100 it, APGD-T 9x100, FAB-T 9x100" + (", Square 5000 q" if _norm == "linf" else ""),
    )
