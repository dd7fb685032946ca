"""Inference precision as system noise: the same model run in fp16, bf16 or with int8 Linear layers.

SysNoise (arXiv:2307.00280) counts FP16 and INT8 inference among the system noises a deployed model meets.
Precision changes the model, not the image, so these noises leave images unchanged and instead carry
``wraps_model = True`` and a ``wrap(model)`` method: a runner evaluates the cell with ``noise.wrap(model)``
in place of ``model`` (and passes the images through ``noise(...)`` as for any noise).

* ``fp16`` / ``bf16``: the forward pass runs under ``torch.autocast`` with that dtype on the input's device
  type (CPU autocast supports both); logits come back as float32.
* ``int8``: ``torch.ao.quantization.quantize_dynamic`` on a copy of the model: every ``nn.Linear`` gets int8
  weights and dynamically quantised int8 activations. Convolutions stay float (dynamic quantisation covers
  Linear/RNN layers only), so a CNN changes only in its classifier head. This backend is CPU-only: inputs on
  another device are moved to the CPU and the logits moved back.

Example:
    >>> import torch
    >>> from robustvision.noises.precision import precision_variant
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    >>> precision_variant(net, "int8")(torch.rand(2, 3, 2, 2)).dtype
    torch.float32
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Literal

import torch
from torch import nn

from robustvision.noises.base import NOISES, Noise, NoiseKind

Precision = Literal["fp16", "bf16", "int8"]
PRECISIONS = ("fp16", "bf16", "int8")
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class PrecisionVariant(nn.Module):
    """``model`` evaluated at a lower precision; maps the same inputs to float32 logits.

    Args:
        model: the float model (left untouched; int8 quantises a deep copy).
        precision: ``fp16``, ``bf16`` or ``int8``.
    """

    def __init__(self, model: nn.Module, precision: Precision) -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        if precision == "int8":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
                from torch.ao.quantization import quantize_dynamic

                cpu_copy = copy.deepcopy(model).cpu()
                self.model = quantize_dynamic(cpu_copy, {nn.Linear}, dtype=torch.qint8)
        else:
            self.model = model
        self.model.train(model.training)
        for name in ("family", "arch", "num_classes", "image_size"):  # keep the ImageClassifier tags visible
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.precision == "int8":
            return self.model(x.cpu()).float().to(x.device)
        with torch.autocast(device_type=x.device.type, dtype=_AUTOCAST_DTYPES[self.precision]):
            out = self.model(x)
        return out.float()


def precision_variant(model: nn.Module, precision: Precision) -> PrecisionVariant:
    """Wrap ``model`` to run at ``precision`` (``fp16``, ``bf16`` or ``int8``); see the module docstring."""
    return PrecisionVariant(model, precision)


class PrecisionNoise(Noise):
    """A system-noise cell that changes the model's numeric precision and leaves the images as they are.

    A runner checks ``getattr(noise, "wraps_model", False)`` and then evaluates ``noise.wrap(model)``.
    Calling the noise returns a copy of the images.
    """

    kind = NoiseKind.SYSTEM
    group = "precision"
    wraps_model = True

    def __init__(self, severity: int = 1, *, precision: Precision = "fp16") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.name = f"precision_{precision}"
        if isinstance(severity, bool) or severity != 1:
            raise ValueError(f"system noise {self.name!r} has a single setting: severity must be 1, got {severity!r}")
        super().__init__(1)
        self.precision = precision

    @property
    def params(self) -> dict[str, Any]:
        return {"severity": 1, "precision": self.precision}

    def wrap(self, model: nn.Module) -> PrecisionVariant:
        """The model to evaluate this cell with."""
        return precision_variant(model, self.precision)

    def apply(self, images, params, labels=None, model=None):
        return images.clone()


def _builder(precision: str):
    def build(severity: int = 1) -> PrecisionNoise:
        return PrecisionNoise(severity, precision=precision)

    build.__doc__ = PrecisionNoise.__doc__
    return build


for _p in PRECISIONS:
    NOISES.add(f"precision_{_p}", _builder(_p), kind=NoiseKind.SYSTEM, family="system", group="precision")
