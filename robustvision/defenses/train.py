"""The training recipe shared by GBN and its baselines, the training recipes, the data split, and checkpoints.

One recipe serves every method of :mod:`robustvision.defenses.multi_perturbation`, so GBN, AVG, MAX, MSD and E-AT
get exactly the same data order, epochs, optimiser, schedule, budgets and attack steps. GBN's gate parameters have
a second optimiser of their own (SGD, lr 0.1, momentum 0.8 as in the reference code) stepped on the domain loss;
the gate reads detached features and never enters the classification path, so one backward of the summed losses
is exactly the reference's two separate backward passes.

It runs through :class:`robustvision.training.Trainer` with :class:`DefenseStep` as its hooks, set so that the
published GBN and baseline figures come out bit for bit as before: one run generator draws the data order and is
the generator every training attack draws from, the last batch is kept, every non-gate parameter (biases too) gets
weight decay, the gates have their own optimiser, and the cosine is :func:`_lr_factor` (``pi * step / total``,
which rounds differently from :func:`robustvision.training.schedule.warmup_cosine` in the last bit on about a fifth
of the steps).

Two recipes (:data:`RECIPES`, :meth:`DefenseConfig.from_recipe`):

- ``fast``: short runs: few-step training attacks with a random start, SGD lr 0.05 / momentum 0.9 / weight decay
  5e-4 cosine-annealed per step, budgets ramped from 0 over the first epoch (short runs on MNIST at l-inf 0.3
  otherwise often stall at chance), LeNet-5 with a padded first convolution, AVG without the clean term.
- ``reference``: as the GBN reference code (liuaishan/GBN ``train_gbn.py``, ``train_lenet_AVG.py``,
  ``mnist_funcs.py``, ``model/lenet5_gate_conv.py``): its per-norm training attacks with the per-example early
  stop (:func:`~robustvision.defenses.multi_perturbation.reference_attack`), SGD lr 0.1 / momentum 0.8 / no weight
  decay, ReduceLROnPlateau (factor 0.1, patience 5) on the clean validation accuracy, the best-validation weights
  kept, no budget ramp, batch 64, LeNet-5 without padding in its first convolution, AVG with the clean term.
"""

from __future__ import annotations

import copy
import difflib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustvision.data import create_dataset
from robustvision.data.base import TensorClassificationDataset
from robustvision.defenses.attacks import NORMS, check_norm
from robustvision.defenses.gbn import (
    REFERENCE_GBN_LAYOUT,
    check_domains,
    convert_to_gbn,
    gate_parameters,
    gbn_layers,
    gbn_spec,
    tie_gates,
)
from robustvision.defenses.multi_perturbation import (
    GATE_ADVERSARIES,
    AttackSettings,
    StepContext,
    budgets_for,
    create_method,
    reference_attack,
)
from robustvision.models import create_model
from robustvision.models.checkpoints import CLASSIFIER_FORMAT, load_weights, model_from_card, save_checkpoint
from robustvision.models.wrappers import ImageClassifier
from robustvision.runtime import make_generator, seeded
from robustvision.training.config import TrainConfig
from robustvision.training.trainer import EVENTS, TensorPairs, Trainer

SCHEDULES: tuple[str, ...] = ("cosine", "plateau")

# Recipe name -> the DefenseConfig fields it sets (the attack settings are built by ``_recipe_attack``).
RECIPES: dict[str, dict[str, Any]] = {
    "fast": {
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "eps_ramp_epochs": 1.0,
        "schedule": "cosine",
        "conv1_padding": None,
        "avg_clean": False,
        "keep_best": False,
    },
    "reference": {
        "lr": 0.1,
        "momentum": 0.8,
        "weight_decay": 0.0,
        "gate_lr": 0.1,
        "gate_momentum": 0.8,
        "eps_ramp_epochs": 0.0,
        "schedule": "plateau",
        "conv1_padding": 0,
        "avg_clean": True,
        "keep_best": True,
        "batch_size": 64,
    },
}


def check_recipe(recipe: str) -> str:
    """Return ``recipe`` when known; otherwise one clear error with the close names."""
    if recipe not in RECIPES:
        close = difflib.get_close_matches(recipe, list(RECIPES), n=2, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown recipe {recipe!r}{hint} (recipes: {', '.join(RECIPES)})")
    return recipe


def check_gate_adversary(name: str) -> str:
    """Return ``name`` when it is a known gate adversary (``branch`` or ``mixture``); otherwise one clear error."""
    if name not in GATE_ADVERSARIES:
        close = difflib.get_close_matches(name, list(GATE_ADVERSARIES), n=2, cutoff=0.4)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown gate adversary {name!r}{hint} (expected one of {', '.join(GATE_ADVERSARIES)})")
    return name


@dataclass
class DefenseConfig:
    """Settings of one defense training run (saved in the checkpoint's model card).

    Attributes:
        method: ``gbn``, ``avg``, ``max``, ``msd``, ``eat``, ``pgd_linf``, ``pgd_l2``, ``pgd_l1`` or ``standard``.
        recipe: ``fast`` or ``reference`` (recorded; :meth:`from_recipe` fills the fields it implies).
        dataset: data set name (selects the default budgets).
        arch: zoo architecture (``lenet5`` for MNIST, ``resnet18`` for CIFAR-10 images).
        norms: the perturbation types trained against (GBN gets one branch each).
        budgets: eps per norm in [0, 1] pixel units (default: the data set's table).
        epochs, batch_size: the training budget.
        lr, momentum, weight_decay: SGD for every non-gate parameter.
        gate_lr, gate_momentum: SGD for GBN's gates (reference: 0.1, 0.8), on the same schedule.
        schedule: ``cosine`` (annealed per step) or ``plateau`` (ReduceLROnPlateau on the clean validation accuracy
            once per epoch, factor ``plateau_factor``, patience ``plateau_patience``; needs a validation set).
        eps_ramp_epochs: budgets grow linearly from 0 over this many epochs.
        conv1_padding: ``lenet5`` only: padding of the first convolution (None: the zoo's 2; the reference: 0).
        avg_clean: AVG also averages the clean loss (the reference ``train_lenet_AVG.py``).
        keep_best: restore the weights with the best clean validation accuracy at the end (the reference).
        gate_adversary: GBN only: ``branch`` (the paper: each norm's batch attacks its own branch) or ``mixture``
            (also batches crafted end to end against the gated mixture, for the gates and the branches).
        gate_once: GBN only: the deeper GBN layers reuse the first layer's gate decision.
        attack: training attack settings (steps, step size, l1 top-k range, ...).
        clean_branch: GBN only: keep a ``clean`` branch trained on clean images (the reference code has one).
        gbn_layers: GBN only: BatchNorm layers to convert (None: the reference layout for ``lenet5``, every
            BatchNorm layer otherwise).
        seed: seeds the initialisation, data order and attack randomness.
        device: ``cpu``, ``cuda`` or ``auto``.
        max_steps_per_epoch: cap on batches per epoch (quick runs and tests).
    """

    method: str = "gbn"
    recipe: str = "fast"
    dataset: str = "mnist"
    arch: str = "lenet5"
    norms: tuple[str, ...] = NORMS
    budgets: dict[str, float] = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    gate_lr: float = 0.1
    gate_momentum: float = 0.8
    eps_ramp_epochs: float = 1.0
    schedule: str = "cosine"
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    conv1_padding: int | None = None
    avg_clean: bool = False
    keep_best: bool = False
    attack: AttackSettings = field(default_factory=AttackSettings)
    clean_branch: bool = True
    gbn_layers: list[str] | None = None
    gate_adversary: str = "branch"
    gate_once: bool = False
    seed: int = 0
    device: str = "cpu"
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        self.norms = tuple(check_norm(n) for n in self.norms)
        if not self.norms:
            raise ValueError("at least one norm is needed")
        self.budgets = budgets_for(self.dataset, self.budgets)
        create_method(self.method)  # unknown method -> one clear error with close names
        check_recipe(self.recipe)
        check_gate_adversary(self.gate_adversary)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if self.method != "gbn" and (self.gate_adversary != "branch" or self.gate_once):
            raise ValueError("--gate-adversary and --gate-once apply to --method gbn only")
        if self.conv1_padding is not None and self.arch != "lenet5":
            raise ValueError(f"conv1_padding applies to lenet5 only, not {self.arch!r}")
        if isinstance(self.attack, dict):
            self.attack = AttackSettings(**self.attack)
        self.attack.l1_k_range = tuple(self.attack.l1_k_range)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.attack.steps < 1:
            raise ValueError(f"attack steps must be >= 1, got {self.attack.steps}")

    @classmethod
    def from_recipe(cls, recipe: str = "fast", *, attack_steps: int | None = None, **overrides: Any) -> DefenseConfig:
        """A config with ``recipe``'s settings; ``overrides`` set to None keep the recipe's value.

        Args:
            recipe: ``fast`` or ``reference`` (see the module docs).
            attack_steps: iterations of every training attack (``fast``: default 10; ``reference``: the reference
                code's 50/100/50 when None, else all rescaled to this many with the same total step length).
            overrides: any other :class:`DefenseConfig` field.
        """
        fields = {**RECIPES[check_recipe(recipe)], **{k: v for k, v in overrides.items() if v is not None}}
        if "attack" not in fields:
            if recipe == "reference":
                fields["attack"] = reference_attack(attack_steps)
            else:
                fields["attack"] = AttackSettings(steps=attack_steps) if attack_steps else AttackSettings()
        return cls(recipe=recipe, **fields)

    @property
    def domains(self) -> tuple[str, ...]:
        """GBN branches: ``clean`` (when kept) and one per norm."""
        return check_domains((("clean",) if self.clean_branch else ()) + tuple(self.norms))

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready fields (the model card's ``defense`` entry)."""
        out = asdict(self)
        out["norms"] = list(self.norms)
        out["attack"]["l1_k_range"] = list(self.attack.l1_k_range)
        return out


@dataclass
class EpochRecord:
    """Mean losses and batch statistics of one epoch, and the held-out clean accuracy (gated mixture)."""

    epoch: int
    loss: float
    gate_loss: float | None
    stats: dict[str, float]
    val_clean_acc: float | None
    seconds: float
    lr: float | None = None


def split_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    seed: int = 0,
    train_size: int | None = None,
    test_fraction: float = 0.2,
    source_split: str = "test",
    image_size: int | None = None,
) -> tuple[TensorClassificationDataset, TensorClassificationDataset, dict[str, Any]]:
    """Split one data set split into train and held-out test parts with a fixed seed.

    The shared data holds only MNIST's 10k test set, so GBN's MNIST protocol here splits it 8000 train / 2000 test
    (``test_fraction=0.2``) after a seeded shuffle; the reference code split the same set 8000 / 2000 with
    ``random_split`` (it trained on the 60k training set and used the parts as test / validation).

    Returns:
        ``(train, test, info)`` where ``info`` records the source, seed and sizes (for the model card).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    full = create_dataset(name, split=source_split, root=root, image_size=image_size)
    if not isinstance(full, TensorClassificationDataset):
        images, labels = full.tensors()
        full = TensorClassificationDataset(name, source_split, images, labels, full.classes)
    n = len(full)
    n_train = int(train_size) if train_size is not None else n - int(round(n * test_fraction))
    if not 0 < n_train < n:
        raise ValueError(f"cannot take {n_train} training images out of {n}")
    order = torch.randperm(n, generator=make_generator(seed, "defense-split", name))
    info = {"dataset": name, "source_split": source_split, "seed": seed, "n_train": n_train, "n_test": n - n_train}
    return full.subset(order[:n_train]), full.subset(order[n_train:]), info


def validation_part(held_out: TensorClassificationDataset, size: int = 1000) -> TensorClassificationDataset:
    """The last ``size`` images of the held-out part (at most half of it).

    They are the validation set of the plateau schedule and of ``keep_best``. Evaluations read the held-out part
    from its start, so up to ``len(held_out) - size`` evaluation images never took part in model selection (MNIST:
    the first 1000 of 2000).
    """
    n = len(held_out)
    size = max(1, min(int(size), n // 2))
    return held_out.subset(range(n - size, n))


def build_model(config: DefenseConfig, *, num_classes: int, in_chans: int, image_size: int) -> ImageClassifier:
    """The zoo model of ``config``, converted to GBN when the method is ``gbn``; initialised from ``config.seed``."""
    with seeded(config.seed):
        model = create_model(config.arch, num_classes=num_classes, in_chans=in_chans, image_size=image_size)
        if config.conv1_padding is not None:
            set_lenet_padding(model, config.conv1_padding)
        if config.method == "gbn":
            layout = REFERENCE_GBN_LAYOUT.get(config.arch)
            layers = config.gbn_layers or (list(layout) if layout else None)
            gates = {k: v for k, v in (layout or {}).items() if k in (layers or [])} or None
            convert_to_gbn(model, layers, domains=config.domains, gates=gates)
            if config.gate_once:
                tie_gates(model)
    return model


def set_lenet_padding(model: ImageClassifier, padding: int) -> ImageClassifier:
    """Give a zoo ``lenet5`` a first convolution with ``padding`` (the reference LeNet-5 has none), in place.

    The first convolution and the first linear layer (whose input size changes) are rebuilt with fresh weights,
    so call it before training. Features are 6 x 24 x 24 and 16 x 8 x 8 at padding 0 on 28 x 28 inputs.
    """
    net = getattr(model, "net", model)
    if not all(hasattr(net, a) for a in ("conv1", "conv2", "fc1")) or net.conv1.kernel_size != (5, 5):
        raise ValueError("conv1 padding can only be set on the zoo's lenet5")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    size = int(getattr(model, "image_size", 28))
    side = ((size + 2 * padding - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"a lenet5 with conv1 padding {padding} cannot read {size} x {size} images")
    device = net.conv1.weight.device
    net.conv1 = nn.Conv2d(net.conv1.in_channels, net.conv1.out_channels, 5, padding=padding).to(device)
    net.fc1 = nn.Linear(net.conv2.out_channels * side * side, net.fc1.out_features).to(device)
    return model


def _lr_factor(step: int, total: int) -> float:
    # Not training.schedule.warmup_cosine: it computes pi * (step / total), this pi * step / total; the last bit
    # differs on some steps and the published figures were trained with this one.
    return 0.5 * (1 + math.cos(math.pi * step / max(1, total)))


@torch.no_grad()
def clean_accuracy(model: nn.Module, dataset, batch_size: int = 256, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy of ``model`` in eval mode (GBN: the gated mixture)."""
    images, labels = dataset.tensors()
    was = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, len(labels), batch_size):
            out = model(images[i : i + batch_size].to(device))
            correct += int((out.argmax(1).cpu() == labels[i : i + batch_size]).sum())
    finally:
        model.train(was)
    return correct / max(1, len(labels))


def train_defense(
    model: nn.Module,
    train_set,
    config: DefenseConfig,
    val_set=None,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
) -> list[EpochRecord]:
    """Train ``model`` with ``config.method``; returns one record per epoch.

    Args:
        model: a zoo model (converted to GBN for ``gbn``; see :func:`build_model`).
        train_set: a data set with ``tensors()``.
        config: the run's settings.
        val_set: optional held-out set for the per-epoch clean accuracy.
        callback: called after every step with ``(step, total_steps, stats)`` (progress bars).

    Raises:
        ValueError: a GBN method on a model without GBN layers (or the reverse), mismatched domains.
        FloatingPointError: the loss became NaN or infinite.
    """
    method = create_method(config.method)
    has_gbn = bool(gbn_layers(model))
    if method.uses_gate and not has_gbn:
        raise ValueError("method 'gbn' needs a model converted with convert_to_gbn (see build_model)")
    if has_gbn and not method.uses_gate:
        raise ValueError(f"method {config.method!r} cannot train a GBN model (it has no domain routing)")
    if (config.schedule == "plateau" or config.keep_best) and val_set is None:
        raise ValueError("the plateau schedule and keep_best need a validation set (val_set)")
    step = DefenseStep(config, callback)
    images, labels = train_set.tensors()
    sgd = {"lr": config.lr, "momentum": config.momentum, "nesterov": False, "weight_decay": config.weight_decay}
    recipe = TrainConfig.for_hooks(
        epochs=config.epochs, batch_size=config.batch_size, seed=config.seed, device=config.device, **sgd
    )
    with seeded(config.seed):  # initial state of every global draw, restored for the caller afterwards
        trainer = Trainer(
            model,
            TensorPairs(images, labels),
            None,
            recipe,
            technique=config.method,
            loss_fn=step.loss,
            generator=make_generator(config.seed, "defense-train", config.method),
            drop_last=False,
            max_steps_per_epoch=config.max_steps_per_epoch,
            optimizers=step.optimizers,
            schedulers=step.schedulers,
            epoch_metric=None if val_set is None else lambda t: clean_accuracy(t.raw_model, val_set, device=t.device),
        )
        for event in EVENTS:
            trainer.add_callback(event, getattr(step, event))
        trainer.fit()
    if step.best_state is not None:
        model.load_state_dict(step.best_state)
    model.eval()
    return step.history


class DefenseStep:
    """The defence recipe as :class:`~robustvision.training.Trainer` hooks: optimisers, schedule, loss and records.

    The main parameters get SGD with weight decay on every one of them; GBN's gates a second SGD of their own,
    stepped on the same backward. The budgets ramp from 0 over ``eps_ramp_epochs``; the schedule is the cosine
    :func:`_lr_factor` per step or ``ReduceLROnPlateau`` on the clean validation accuracy per epoch.
    """

    def __init__(self, config: DefenseConfig, callback: Callable[[int, int, dict[str, float]], None] | None) -> None:
        self.config = config
        self.method = create_method(config.method)
        self.norms = self.method.norms(config.norms)
        self.callback = callback
        self.history: list[EpochRecord] = []
        self.best_acc, self.best_state = float("-inf"), None
        self._out = None
        self._lr: float | None = None

    def optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        """SGD on every non-gate parameter (weight decay on all), and SGD on the gates when there are any."""
        c = self.config
        gates = gate_parameters(model)
        gate_ids = {id(p) for p in gates}
        main = [p for p in model.parameters() if id(p) not in gate_ids]
        opts = [torch.optim.SGD(main, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)]
        if gates:
            opts.append(torch.optim.SGD(gates, lr=c.gate_lr, momentum=c.gate_momentum))
        return opts

    def schedulers(self, trainer: Trainer) -> list[Any]:
        """Plateau on the validation accuracy (per epoch), or the cosine :func:`_lr_factor` (per step)."""
        c = self.config
        if c.schedule == "plateau":
            return [
                torch.optim.lr_scheduler.ReduceLROnPlateau(
                    o, "max", factor=c.plateau_factor, patience=c.plateau_patience, eps=1e-6
                )
                for o in trainer.optimizers
            ]
        total = trainer.total_steps
        return [torch.optim.lr_scheduler.LambdaLR(o, lambda s: _lr_factor(s, total)) for o in trainer.optimizers]

    def loss(self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        """The method's classification (+ gate) loss at the ramped budgets; attacks draw from ``generator``."""
        c = self.config
        ramp_steps = max(1, int(round(c.eps_ramp_epochs * trainer.steps_per_epoch)))
        factor = min(1.0, (trainer.step + 1) / ramp_steps) if c.eps_ramp_epochs > 0 else 1.0
        ctx = StepContext(
            budgets={k: v * factor for k, v in c.budgets.items()},
            attack=c.attack,
            generator=generator,
            norms=self.norms,
            step=trainer.step,
            avg_clean=c.avg_clean,
            gate_adversary=c.gate_adversary,
        )
        self._lr = trainer.optimizer.param_groups[0]["lr"]
        trainer.model.train()
        out = self._out = self.method.losses(trainer.model, x, y, ctx)
        return out.classification + (out.gate if out.gate is not None else 0.0), None

    def on_epoch_start(self, trainer: Trainer) -> None:
        """Start the epoch's sums and clock."""
        self._start = time.time()
        self._sums: dict[str, float] = {}
        self._loss_sum, self._gate_sum, self._count = 0.0, 0.0, 0

    def on_batch_end(self, trainer: Trainer) -> None:
        """Add the step's losses and statistics; report them to the callback."""
        out = self._out
        self._loss_sum += float(out.classification.detach())
        self._gate_sum += float(out.gate.detach()) if out.gate is not None else 0.0
        self._count += 1
        for k, v in out.stats.items():
            self._sums[k] = self._sums.get(k, 0.0) + v
        if self.callback is not None:
            self.callback(trainer.step, trainer.total_steps, {"loss": float(out.classification.detach()), **out.stats})

    def on_epoch_end(self, trainer: Trainer) -> None:
        """Keep the best weights (``keep_best``) and record the epoch."""
        val = trainer.history[-1].get("val_metric")
        if self.config.keep_best and val > self.best_acc:
            self.best_acc, self.best_state = val, copy.deepcopy(trainer.raw_model.state_dict())
        plateau = self.config.schedule == "plateau"
        count = self._count
        self.history.append(
            EpochRecord(
                epoch=trainer.epoch,
                loss=self._loss_sum / count,
                gate_loss=self._gate_sum / count if len(trainer.optimizers) > 1 else None,
                stats={k: v / count for k, v in self._sums.items()},
                val_clean_acc=val,
                seconds=time.time() - self._start,
                lr=trainer.optimizer.param_groups[0]["lr"] if plateau else self._lr,
            )
        )


def save_defense(
    model: ImageClassifier,
    path: str | Path,
    config: DefenseConfig,
    history: Sequence[EpochRecord] = (),
    data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a defended model (safetensors + model card with method, budgets, GBN layout, history, data split).

    Written atomically through :func:`~robustvision.models.checkpoints.save_checkpoint` (the classifier format of
    :func:`~robustvision.models.checkpoints.save_weights`), so :func:`load_defense` and ``load_checkpoint`` read it.
    """
    card = {
        "technique": config.method,
        "defense": config.to_dict(),
        "gbn": gbn_spec(model) if gbn_layers(model) else None,
        "history": [asdict(r) for r in history],
        "data": data or {},
        **(extra or {}),
    }
    return save_checkpoint(model, path, card)


def load_defense(
    path: str | Path, *, domains: Sequence[str] | None = None, device: str | torch.device = "cpu"
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Rebuild a defended model from its checkpoint (re-converting GBN layers from the card) in eval mode.

    Args:
        path: the ``.safetensors`` file written by :func:`save_defense`.
        domains: when given, must equal the checkpoint's GBN domain list (in order).
        device: where to put the model.

    Raises:
        ValueError: a domain list that does not match the checkpoint, a card without GBN for ``domains``, or
            weights that do not fit the architecture.
        FileNotFoundError: missing checkpoint or card.
    """
    state, card = load_weights(path, fmt=CLASSIFIER_FORMAT)
    model = model_from_card(card, path)
    padding = (card.get("defense") or {}).get("conv1_padding")
    if padding is not None:
        set_lenet_padding(model, padding)
    spec = card.get("gbn")
    if spec:
        trained = tuple(spec["domains"])
        if domains is not None and tuple(domains) != trained:
            raise ValueError(
                f"domain list {tuple(domains)} does not match the checkpoint's GBN branches {trained} "
                f"({str(path)!r}); a GBN model can only be used with the domains it was trained with"
            )
        convert_to_gbn(
            model, spec["layers"], domains=trained, gates=spec.get("gates"), gate_hidden=spec.get("gate_hidden", 512)
        )
        if spec.get("gate_once"):
            tie_gates(model)
    elif domains is not None:
        raise ValueError(f"checkpoint {str(path)!r} has no GBN layers, so it takes no domain list")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {str(path)!r} does not match its card ({card['arch']}, gbn={bool(spec)}): "
            f"{len(missing)} missing and {len(unexpected)} unexpected tensors (e.g. {(missing + unexpected)[:3]})"
        )
    return model.to(device).eval(), card
