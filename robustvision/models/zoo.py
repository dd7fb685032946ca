"""The model zoo: timm (and torchvision) architectures configured for the image size, plus a few small nets.

Every entry is data: the library, the architecture name, the constructor arguments it gets at small sizes, and
the stem changes that keep a 28-64 px input from being downsampled to nothing (stride 1 in the first convolution,
no stem max-pool). ``create_model`` turns an entry into an :class:`ImageClassifier` taking [0, 1] images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robustvision.models.pretrained import PACKAGED_WEIGHTS, load_packaged_weights
from robustvision.models.small import LeNet5, WideResNet
from robustvision.models.wrappers import ImageClassifier
from robustvision.registry import Registry

SMALL_INPUT_MAX = 64  # images at most this side get the small-input configuration


@dataclass(frozen=True)
class ZooEntry:
    """One architecture of the zoo.

    Attributes:
        name: zoo name.
        family: ``cnn``, ``transformer`` or ``mlp``.
        source: ``timm``, ``torchvision`` or ``local``.
        arch: the library's name of the architecture.
        kwargs: constructor arguments at every size.
        small_kwargs: constructor arguments at small sizes (``{patch}`` is replaced by the patch size).
        stride1: dotted paths of stem convolutions set to stride 1 at small sizes.
        drop_modules: dotted paths of stem pools replaced by identity at small sizes.
        takes_img_size: pass ``img_size`` to the constructor (Transformers, MLP-Mixers).
        small_class: at small sizes build timm's class ``module:Class`` directly with ``small_kwargs`` (for timm
            factories that fix their arguments); string values of ``*_layer`` arguments name classes in that module.
        note: what the entry is, for ``zoo list``.
    """

    name: str
    family: str
    source: str
    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    small_kwargs: dict[str, Any] = field(default_factory=dict)
    stride1: tuple[str, ...] = ()
    drop_modules: tuple[str, ...] = ()
    takes_img_size: bool = False
    small_class: str = ""
    note: str = ""


ZOO_ENTRIES: tuple[ZooEntry, ...] = (
    # CNNs
    ZooEntry("resnet18", "cnn", "timm", "resnet18", stride1=("conv1",), drop_modules=("maxpool",), note="ResNet-18"),
    ZooEntry(
        "resnet10t",
        "cnn",
        "timm",
        "resnet10t",
        stride1=("conv1.0",),
        drop_modules=("maxpool",),
        note="ResNet-10-T (tiered stem), a light ResNet",
    ),
    ZooEntry(
        "preact_resnet18",
        "cnn",
        "timm",
        "resnetv2_18",
        stride1=("stem.conv",),
        drop_modules=("stem.pool",),
        note="PreAct-ResNet-18 (ResNetV2)",
    ),
    ZooEntry(
        "wide_resnet16_4",
        "cnn",
        "local",
        "WideResNet",
        kwargs={"depth": 16, "widen_factor": 4},
        note="WRN-16-4 (RobustBench's CIFAR family; timm has no CIFAR WRN)",
    ),
    ZooEntry("mobilenetv2", "cnn", "timm", "mobilenetv2_100", stride1=("conv_stem",), note="MobileNetV2 x1.0"),
    ZooEntry(
        "mobilenetv3_small",
        "cnn",
        "timm",
        "mobilenetv3_small_100",
        stride1=("conv_stem",),
        note="MobileNetV3-Small x1.0",
    ),
    ZooEntry(
        "mobilenetv3_large",
        "cnn",
        "timm",
        "mobilenetv3_large_100",
        stride1=("conv_stem",),
        note="MobileNetV3-Large x1.0",
    ),
    ZooEntry("efficientnet_b0", "cnn", "timm", "efficientnet_b0", stride1=("conv_stem",), note="EfficientNet-B0"),
    *(
        ZooEntry(
            f"tf_efficientnet_lite{i}",
            "cnn",
            "timm",
            f"tf_efficientnet_lite{i}",
            stride1=("conv_stem",),
            note=f"EfficientNet-Lite{i} (TF padding; ImageNet weights ship in a package)",
        )
        for i in range(3)
    ),
    ZooEntry("regnetx_002", "cnn", "timm", "regnetx_002", stride1=("stem.conv",), note="RegNetX-200MF"),
    ZooEntry(
        "shufflenet_v2",
        "cnn",
        "torchvision",
        "shufflenet_v2_x0_5",
        stride1=("conv1.0",),
        drop_modules=("maxpool",),
        note="ShuffleNetV2 x0.5 (torchvision; timm has none)",
    ),
    ZooEntry(
        "densenet121",
        "cnn",
        "timm",
        "densenet121",
        stride1=("features.conv0",),
        drop_modules=("features.pool0",),
        note="DenseNet-121",
    ),
    ZooEntry("convnext_atto", "cnn", "timm", "convnext_atto", small_kwargs={"patch_size": 2}, note="ConvNeXt-Atto"),
    ZooEntry("lenet5", "cnn", "local", "LeNet5", note="LeNet-5 with BatchNorm (GBN's MNIST model)"),
    # Transformers: small patches at small sizes, fewer blocks to keep CPU training practical.
    ZooEntry(
        "vit_tiny",
        "transformer",
        "timm",
        "vit_tiny_patch16_224",
        small_kwargs={"patch_size": 4, "depth": 6},
        takes_img_size=True,
        note="ViT-Ti (6 blocks, patch 4 at small sizes)",
    ),
    ZooEntry(
        "vit_small",
        "transformer",
        "timm",
        "vit_small_patch16_224",
        small_kwargs={"patch_size": 4, "depth": 6},
        takes_img_size=True,
        note="ViT-S (6 blocks, patch 4 at small sizes)",
    ),
    ZooEntry(
        "deit_tiny",
        "transformer",
        "timm",
        "deit_tiny_distilled_patch16_224",
        small_kwargs={"patch_size": 4, "depth": 6},
        takes_img_size=True,
        note="DeiT-Ti with distillation token (6 blocks, patch 4 at small sizes)",
    ),
    # MLPs: timm's factories fix patch size and depth, so small sizes build timm's MlpMixer class with their recipe.
    ZooEntry(
        "mixer_tiny",
        "mlp",
        "timm",
        "mixer_s16_224",
        small_kwargs={"patch_size": 4, "num_blocks": 6, "embed_dim": 192},
        takes_img_size=True,
        small_class="timm.models.mlp_mixer:MlpMixer",
        note="MLP-Mixer (6 blocks, width 192, patch 4 at small sizes)",
    ),
    ZooEntry(
        "resmlp_tiny",
        "mlp",
        "timm",
        "resmlp_12_224",
        small_kwargs={
            "patch_size": 4,
            "num_blocks": 6,
            "embed_dim": 192,
            "mlp_ratio": 4,
            "block_layer": "ResBlock",
            "norm_layer": "Affine",
        },
        takes_img_size=True,
        small_class="timm.models.mlp_mixer:MlpMixer",
        note="ResMLP (6 blocks, width 192, patch 4 at small sizes)",
    ),
    ZooEntry(
        "gmlp_tiny",
        "mlp",
        "timm",
        "gmlp_ti16_224",
        small_kwargs={
            "patch_size": 4,
            "num_blocks": 6,
            "embed_dim": 128,
            "mlp_ratio": 6,
            "block_layer": "SpatialGatingBlock",
            "mlp_layer": "GatedMlp",
        },
        takes_img_size=True,
        small_class="timm.models.mlp_mixer:MlpMixer",
        note="gMLP-Ti (6 blocks, patch 4 at small sizes)",
    ),
)

MODELS: Registry[ImageClassifier] = Registry("model")
LOCAL_NETS = {"LeNet5": LeNet5, "WideResNet": WideResNet}


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
    return module


def _set(module: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, last = path.rpartition(".")
    parent = _get(module, parent_path) if parent_path else module
    if last.isdigit():
        parent[int(last)] = value
    else:
        setattr(parent, last, value)


def build_network(
    entry: ZooEntry, num_classes: int, image_size: int, in_chans: int, pretrained: bool, **overrides: Any
) -> nn.Module:
    """Build the raw network of ``entry`` for ``image_size`` (without normalisation)."""
    small = image_size <= SMALL_INPUT_MAX and not pretrained
    kwargs = {**entry.kwargs, **(entry.small_kwargs if small else {}), **overrides}
    if entry.source == "local":
        cls = LOCAL_NETS[entry.arch]
        extra = {"image_size": image_size} if cls is LeNet5 else {}
        return cls(num_classes=num_classes, in_chans=in_chans, **kwargs, **extra)
    if entry.source == "torchvision":
        import torchvision

        if in_chans != 3:
            raise ValueError(f"{entry.name} (torchvision) takes 3-channel images; got in_chans={in_chans}")
        weights = "DEFAULT" if pretrained else None
        net = torchvision.models.get_model(entry.arch, weights=weights, **kwargs)
        if num_classes != net.fc.out_features:
            net.fc = nn.Linear(net.fc.in_features, num_classes)
    else:
        import timm

        if entry.takes_img_size:
            kwargs["img_size"] = image_size
        if small and entry.small_class:
            import importlib

            module_name, cls_name = entry.small_class.split(":")
            module = importlib.import_module(module_name)
            kwargs = {k: getattr(module, v) if k.endswith("_layer") else v for k, v in kwargs.items()}
            return getattr(module, cls_name)(num_classes=num_classes, in_chans=in_chans, **kwargs)
        if pretrained and entry.arch in PACKAGED_WEIGHTS:
            # Weights that ship in a package: nothing downloads. Build the 1000-class ImageNet head they carry, then
            # replace it when another class count is asked for.
            if in_chans != 3:
                raise ValueError(f"{entry.name}'s packaged weights take 3-channel images; got in_chans={in_chans}")
            net = load_packaged_weights(entry.arch, timm.create_model(entry.arch, num_classes=1000, **kwargs))
            if num_classes != 1000:
                net.reset_classifier(num_classes)
            return net
        net = timm.create_model(entry.arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if small:
        for path in entry.stride1:
            conv = _get(net, path)
            conv.stride = (1, 1)
        for path in entry.drop_modules:
            _set(net, path, nn.Identity())
    return net


def _make_builder(entry: ZooEntry):
    def builder(
        num_classes: int = 10,
        image_size: int = 32,
        in_chans: int = 3,
        pretrained: bool = False,
        mean=None,
        std=None,
        **overrides: Any,
    ) -> ImageClassifier:
        net = build_network(entry, num_classes, image_size, in_chans, pretrained, **overrides)
        packaged = PACKAGED_WEIGHTS.get(entry.arch) if pretrained else None
        if packaged is not None:
            mean = packaged.mean if mean is None else mean
            std = packaged.std if std is None else std
        elif pretrained and in_chans == 3:  # the library's weights come with their own normalisation
            cfg = getattr(net, "pretrained_cfg", None) or {}
            mean = tuple(cfg["mean"]) if mean is None and len(cfg.get("mean", ())) == 3 else mean
            std = tuple(cfg["std"]) if std is None and len(cfg.get("std", ())) == 3 else std
        return ImageClassifier(
            net,
            arch=entry.name,
            family=entry.family,
            num_classes=num_classes,
            image_size=image_size,
            in_chans=in_chans,
            mean=mean,
            std=std,
        )

    builder.__doc__ = f"{entry.note} ({entry.source}: {entry.arch}), family {entry.family}."
    return builder


for _entry in ZOO_ENTRIES:
    MODELS.add(_entry.name, _make_builder(_entry), family=_entry.family, entry=_entry)


def create_model(
    name: str,
    num_classes: int = 10,
    image_size: int = 32,
    in_chans: int = 3,
    pretrained: bool = False,
    **kwargs: Any,
) -> ImageClassifier:
    """Build a zoo model taking ``N x in_chans x image_size x image_size`` images in [0, 1].

    ``timm:<name>`` builds any timm architecture by its timm name (family guessed from its name).

    Args:
        name: zoo name (see :func:`list_models`) or ``timm:<timm name>``.
        num_classes: size of the classification head.
        image_size: side of the input images; at most 64 px selects the small-input configuration.
        in_chans: input channels (1 for MNIST).
        pretrained: load ImageNet weights: from an installed package for ``tf_efficientnet_lite0/1/2`` (no
            download, see :mod:`robustvision.models.pretrained`), else the library's (downloads; needs internet).
        **kwargs: constructor overrides passed to the library (``drop_path_rate=0.1``, ...).

    Example:
        >>> model = create_model("resnet18", num_classes=10, image_size=32)
        >>> model(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    if num_classes < 1 or image_size < 8 or in_chans < 1:
        raise ValueError(f"bad model size: num_classes={num_classes}, image_size={image_size}, in_chans={in_chans}")
    if name.startswith("timm:"):
        arch = name.split(":", 1)[1]
        family = (
            "transformer"
            if any(k in arch for k in ("vit", "deit", "swin", "beit", "cait"))
            else ("mlp" if any(k in arch for k in ("mixer", "mlp")) else "cnn")
        )
        entry = ZooEntry(name, family, "timm", arch, takes_img_size=family != "cnn")
        return _make_builder(entry)(num_classes, image_size, in_chans, pretrained, **kwargs)
    return MODELS.create(
        name, num_classes=num_classes, image_size=image_size, in_chans=in_chans, pretrained=pretrained, **kwargs
    )


def list_models(pattern: str = "*", family: str | None = None) -> list[str]:
    """Zoo names matching ``pattern`` (and ``family`` when given)."""
    return MODELS.list(pattern) if family is None else MODELS.list(pattern, family=family)


def count_flops(model: nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Forward FLOPs of one image (multiply-adds counted as 2), measured with torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.rand(1, in_chans, image_size, image_size))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
