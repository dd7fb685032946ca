"""Transfer (black-box) attacks: craft on a source model, evaluate on the target.

RobustART's ``transfer_benchmark_eval_adv`` attacks ``model_src`` and scores ``model_tgt``; white-box evaluation is
the special case where both are the same model. :class:`TransferAttack` holds the source (a model object, or a
checkpoint path loaded through :func:`robustvision.models.checkpoints.load_checkpoint`) and any registered white-box
attack; the model passed at call time, the target, is never queried while crafting.

Example:
    >>> noise = create_noise("transfer", source="src.safetensors", attack="pgd_linf", eps=8 / 255)  # doctest: +SKIP
    >>> adv = noise(images, labels, target_model, generator=torch.Generator().manual_seed(0))  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustvision.noises.adversarial import Attack
from robustvision.noises.base import NOISES, Noise, NoiseKind
from robustvision.validation import check_labels


class TransferAttack(Noise):
    """A white-box attack crafted on ``source`` and applied to whatever model is evaluated.

    Args:
        source: the source model (an ``nn.Module`` taking [0, 1] images) or a checkpoint path (``.safetensors`` with
            its JSON model card beside it), loaded on the CPU and moved to the images' device when used.
        attack: name of a registered adversarial noise (``pgd_linf``, ``mim_linf``, ``apgd_ce``, ...).
        eps: the attack's budget; every other keyword goes to the attack (``steps=10``, ...).

    Shape: ``N x C x H x W`` in [0, 1] -> same, within the attack's budget. The ``model`` given at call time (the
    target) is accepted and ignored: transfer perturbations never query it.
    """

    kind = NoiseKind.ADVERSARIAL
    needs_model = False

    def __init__(self, source: nn.Module | str | Path, *, attack: str = "pgd_linf", eps: float, **attack_kwargs: Any):
        if attack == "transfer":
            raise ValueError("transfer: the inner attack cannot itself be 'transfer'")
        inner = NOISES.create(attack, eps=eps, **attack_kwargs)
        if not isinstance(inner, Attack):
            raise ValueError(f"transfer: {attack!r} is not a white-box attack (kind {inner.kind.value})")
        if isinstance(source, (str, Path)):
            from robustvision.models.checkpoints import load_checkpoint

            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"transfer: source checkpoint {str(path)!r} does not exist")
            self.source, card = load_checkpoint(path, device="cpu")
            self.source_name = str(path)
            self._owns_source = True
        elif isinstance(source, nn.Module):
            self.source = source
            self.source_name = getattr(source, "arch", type(source).__name__)
            self._owns_source = False
        else:
            raise TypeError(f"transfer: source must be an nn.Module or a checkpoint path, got {type(source).__name__}")
        super().__init__(severity=eps)
        self.name = f"transfer_{attack}"
        self.attack = inner
        self.eps = float(eps)
        self.norm = inner.norm

    @property
    def params(self) -> dict[str, Any]:
        return {"source": self.source_name, "attack": self.attack.name, **self.attack.params}

    def sample_params(self, shape, generator=None):
        return self.attack.sample_params(shape, generator)

    def _source_on(self, device: torch.device) -> nn.Module:
        first = next(iter(self.source.parameters()), None)
        if first is None or first.device == device:
            return self.source
        if self._owns_source:
            self.source = self.source.to(device)
            return self.source
        raise ValueError(
            f"transfer: the source model is on {first.device} but the images are on {device}; move one of them"
        )

    def apply(self, images, params, labels=None, model=None) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"noise {self.name!r} needs the true labels")
        check_labels(labels, images.shape[0])
        return self.attack.apply(images, params, labels=labels, model=self._source_on(images.device))


NOISES.add("transfer", TransferAttack, kind=NoiseKind.ADVERSARIAL, family="transfer", norm="(inner attack's)")
