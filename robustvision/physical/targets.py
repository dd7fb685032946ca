"""The models DAS attacks here: small car classifiers of three families and a one-box car detector.

There are no ImageNet weights offline, so ``robustvision das train`` trains its own targets on rendered data.
Three compact timm architectures (a narrow ResNet, a ViT and an MLP-Mixer, patch 8) keep CPU training to
minutes; any zoo name (``robustvision.models.create_model``) or ``timm:<name>`` works as well. Every model
takes [0, 1] images and normalises inside (the package's model contract).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustvision.models.checkpoints import load_weights, save_weights
from robustvision.models.wrappers import IMAGENET_MEAN, IMAGENET_STD, PixelNormalizer

__all__ = [
    "DAS_IMAGENET_CAR_CLASSES",
    "TARGET_ARCHS",
    "Normalized",
    "CarDetector",
    "build_classifier",
    "build_detector",
    "save_model",
    "load_model",
    "TARGET_FORMAT",
]

TARGET_FORMAT = "robustvision.das.target/1"

# DAS test.py: ImageNet cab, convertible, jeep, sports car, grille, racer, limousine
DAS_IMAGENET_CAR_CLASSES = (468, 511, 609, 817, 581, 751, 627)


class Normalized(PixelNormalizer):
    """``net`` behind ImageNet mean/std normalisation held in buffers: [0, 1] images in, logits out."""

    def __init__(self, net: nn.Module, *, arch: str, family: str, num_classes: int, image_size: int) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        self.net = net
        self.arch, self.family, self.num_classes, self.image_size = arch, family, num_classes, image_size
        if hasattr(net, "num_prefix_tokens"):
            self.num_prefix_tokens = int(net.num_prefix_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``[0, 1]`` images ``x`` ``(N, 3, H, W)``."""
        return self.net(self.normalize(x))


def _resnet_small(num_classes: int, image_size: int) -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    # output stride 16 keeps a 4x4 layer4 map at 64 px for Grad-CAM at a third of the cost of dropping the max-pool
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, channels=(32, 64, 96, 128), output_stride=16)


def _vit_small(num_classes: int, image_size: int) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=image_size, patch_size=8, num_classes=num_classes, embed_dim=64, depth=3, num_heads=2
    )


def _mixer_small(num_classes: int, image_size: int) -> nn.Module:
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(num_classes=num_classes, img_size=image_size, patch_size=8, num_blocks=3, embed_dim=96)


# name -> (family, builder, Grad-CAM layer)
TARGET_ARCHS: dict[str, tuple[str, Any, str]] = {
    "das_resnet": ("cnn", _resnet_small, "net.layer4"),
    "das_vit": ("transformer", _vit_small, "net.blocks.2"),
    "das_mixer": ("mlp", _mixer_small, "net.blocks.2"),
}


@contextmanager
def _init_seed(seed: int | None) -> Iterator[None]:
    """Draw the weight initialisation from the CPU generator seeded with ``seed``, leaving the global state as it was.

    ``nn.Module`` constructors (ours and timm's) take no generator: they draw from torch's default CPU generator,
    so a seed is applied to it inside ``fork_rng`` and the caller's random state is restored afterwards.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def build_classifier(name: str, num_classes: int = 2, image_size: int = 64, *, seed: int | None = None) -> nn.Module:
    """A [0, 1]-input classifier: one of :data:`TARGET_ARCHS` or any name ``robustvision.models`` knows.

    Args:
        name: the architecture.
        num_classes: output classes.
        image_size: input side in pixels.
        seed: seeds the weight initialisation (None: torch's current global state).
    """
    with _init_seed(seed):
        if name in TARGET_ARCHS:
            family, builder, layer = TARGET_ARCHS[name]
            model = Normalized(
                builder(num_classes, image_size),
                arch=name,
                family=family,
                num_classes=num_classes,
                image_size=image_size,
            )
            model.cam_layer = layer
            return model
        try:
            from robustvision.models import create_model
        except ImportError as err:
            raise ValueError(
                f"unknown target model {name!r}: choose from {', '.join(TARGET_ARCHS)} (the zoo is not installed)"
            ) from err
        return create_model(name, num_classes=num_classes, image_size=image_size)


class CarDetector(nn.Module):
    """A one-box detector: a small ResNet predicting (objectness logit, cx, cy, w, h) for the car.

    Each image holds at most one car here, so one box with a confidence per image is a complete detection
    output; AP@0.5 ranks those confidences over the whole evaluation set.
    """

    def __init__(self, image_size: int = 64) -> None:
        super().__init__()
        self.arch, self.family, self.image_size = "das_detector", "cnn", image_size
        self.body = Normalized(
            _resnet_small(0, image_size), arch="das_resnet", family="cnn", num_classes=0, image_size=image_size
        )
        self.head = nn.Linear(128, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 5)``: objectness logit and a box ``(cx, cy, w, h)`` in [0, 1] image units."""
        out = self.head(self.body(x))
        return torch.cat([out[:, :1], torch.sigmoid(out[:, 1:])], 1)

    @staticmethod
    def boxes(out: torch.Tensor, size: int) -> torch.Tensor:
        """``(N, 4)`` boxes ``x0, y0, x1, y1`` in pixels from the forward output."""
        cx, cy, w, h = out[:, 1], out[:, 2], out[:, 3], out[:, 4]
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1) * size


def build_detector(image_size: int = 64, *, seed: int | None = None) -> CarDetector:
    """The car detector (:class:`CarDetector`); ``seed`` seeds its weight initialisation."""
    with _init_seed(seed):
        return CarDetector(image_size)


def save_model(model: nn.Module, path: str | Path, card: dict[str, Any]) -> Path:
    """Weights as safetensors plus a JSON card (``kind``, ``arch``, ``image_size``, ...) beside them.

    Written atomically by :func:`~robustvision.models.checkpoints.save_weights` (format :data:`TARGET_FORMAT`;
    the card also gets the package version and git commit).
    """
    return save_weights(model, path, card, fmt=TARGET_FORMAT)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model` (safetensors, no pickle).

    Files written before the format tag existed (the same safetensors + JSON card layout, no ``format`` field)
    load as well.

    Raises:
        FileNotFoundError: the weights or the card is missing.
        ValueError: the card names another format, or the weights are unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint not found: {path}")
    state, card = load_weights(path, fmt=TARGET_FORMAT)
    if card.get("kind") == "detector":
        model: nn.Module = build_detector(card["image_size"])
    else:
        model = build_classifier(card["arch"], card["num_classes"], card["image_size"])
    model.load_state_dict(state)
    return model.to(device).eval(), card
