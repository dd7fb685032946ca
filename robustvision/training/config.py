"""The training recipe as one typed dataclass, loadable from YAML and saved with every checkpoint.

The defaults are the *base recipe* every training technique switches one thing of (RobustART's "aligned
baseline", arXiv:2109.05211 §1.5, scaled to small inputs): SGD with Nesterov momentum 0.9, linear warm-up then a
cosine schedule, weight decay, random-translation augmentation, no label smoothing, no EMA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

Optimizer = Literal["sgd", "adamw"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
Schedule = Literal["cosine", "constant"]
SCHEDULES: tuple[str, ...] = ("cosine", "constant")
AdvTraining = Literal["none", "pgd", "trades"]
ADV_TRAININGS: tuple[str, ...] = ("none", "pgd", "trades")


@dataclass
class TrainConfig:
    """Every number of a training run.

    Attributes:
        optimizer: ``sgd`` (with ``momentum`` and ``nesterov``) or ``adamw``.
        lr: peak learning rate, reached at the end of the warm-up.
        momentum: SGD momentum (AdamW uses it as beta1).
        nesterov: Nesterov momentum for SGD.
        weight_decay: decoupled for AdamW, L2 for SGD; never applied to biases and norm weights.
        epochs: passes over the training set.
        batch_size: images per step *per process* (under torchrun the global batch is this times the world size).
        eval_batch_size: images per evaluation step.
        warmup_epochs: linear warm-up length, from ``warmup_start`` x lr to lr (may be fractional).
        warmup_start: learning-rate factor at the first step.
        schedule: ``cosine`` (decay to ``min_lr`` x lr at the last step) or ``constant``.
        min_lr: final learning-rate factor of the cosine schedule.
        label_smoothing: cross-entropy label smoothing (0 = off).
        ema_decay: exponential moving average of the weights (0 = off); evaluation and the saved model use it.
        translate: random translation augmentation in pixels (0 = off); no flips, which would change digits.
        mixup_alpha: Beta(alpha, alpha) mixup (0 = off).
        cutmix_alpha: Beta(alpha, alpha) CutMix (0 = off).
        augmix: AugMix augmentation with the Jensen-Shannon consistency loss.
        augmix_severity: AugMix operation severity (1-10).
        jsd_weight: weight of the AugMix Jensen-Shannon term (12 in the paper).
        drop_path_rate: stochastic depth rate the model is built with (recorded; the model must be built with it).
        adv_training: ``none``, ``pgd`` (PGD-AT: train on PGD-linf examples) or ``trades``.
        adv_eps: l-inf budget of adversarial training (PGD-AT and TRADES), in [0, 1] pixel units.
        adv_steps: attack steps during training.
        adv_step_size: attack step size (pixel units).
        trades_beta: weight of the TRADES KL term.
        grad_clip: clip the gradient norm to this value (0 = off).
        seed: seed of everything random in the run (weights, data order, augmentation, attacks).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision (float16 autocast + gradient scaling) when on CUDA; ignored on CPU.
        deterministic: ask torch for deterministic kernels (cuDNN) so a seed gives the same weights.
        checkpoint_dir: where the per-epoch checkpoint ``last.pt`` goes (empty = no per-epoch checkpoints).
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        progress: show a rich progress bar (rank 0 only).
        threads: torch CPU threads (0 = leave torch's setting).
        eval_every: evaluate on the test set every N epochs (0 = only after the last epoch).
        workers: DataLoader worker processes for data sets not held in memory.
    """

    optimizer: Optimizer = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    warmup_epochs: float = 1.0
    warmup_start: float = 0.1
    schedule: Schedule = "cosine"
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    translate: int = 2
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    augmix: bool = False
    augmix_severity: int = 3
    jsd_weight: float = 12.0
    drop_path_rate: float = 0.0
    adv_training: AdvTraining = "none"
    adv_eps: float = 8 / 255
    adv_steps: int = 5
    adv_step_size: float = 2.5 / 255
    trades_beta: float = 6.0
    grad_clip: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    deterministic: bool = True
    checkpoint_dir: str = ""
    resume: bool = False
    progress: bool = True
    threads: int = 0
    eval_every: int = 1
    workers: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.adv_training not in ADV_TRAININGS:
            raise ValueError(f"adv_training must be one of {ADV_TRAININGS}, got {self.adv_training!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        positive = {"lr": self.lr, "epochs": self.epochs, "batch_size": self.batch_size}
        positive["eval_batch_size"] = self.eval_batch_size
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        for name in (
            "weight_decay",
            "warmup_epochs",
            "label_smoothing",
            "mixup_alpha",
            "cutmix_alpha",
            "drop_path_rate",
            "adv_eps",
            "trades_beta",
            "grad_clip",
            "translate",
            "threads",
            "eval_every",
            "workers",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.adv_eps > 1:
            raise ValueError(f"adv_eps is an l-inf budget in [0, 1] pixel units, got {self.adv_eps!r}")
        if self.adv_steps < 1:
            raise ValueError(f"adv_steps must be >= 1, got {self.adv_steps!r}")
        if not 1 <= self.augmix_severity <= 10:
            raise ValueError(f"augmix_severity must be in 1..10, got {self.augmix_severity!r}")

    @classmethod
    def for_hooks(cls, **fields: Any) -> TrainConfig:
        """A config without the base recipe's own warm-up, translation, AMP or progress bar.

        For a recipe that brings its optimisers, schedule and step as :class:`~robustvision.training.Trainer` hooks.

        Example:
            >>> TrainConfig.for_hooks(lr=0.1, epochs=2).translate
            0
        """
        return cls(**{"warmup_epochs": 0.0, "translate": 0, "amp": False, "progress": False, **fields})

    # ---- conversion -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (unknown keys are a clear error)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            import difflib

            hints = [h for u in unknown for h in difflib.get_close_matches(u, known, n=1)]
            hint = f"; did you mean {', '.join(map(repr, hints))}?" if hints else ""
            raise ValueError(f"unknown TrainConfig field(s) {unknown}{hint}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load a config from a YAML mapping of field names to values."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of TrainConfig fields")
        return cls.from_dict(data)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    def recipe_dict(self) -> dict[str, Any]:
        """The fields that change the trained weights (not where files go, progress bars or resume)."""
        data = self.to_dict()
        for key in (
            "checkpoint_dir",
            "resume",
            "progress",
            "device",
            "threads",
            "eval_batch_size",
            "eval_every",
            "workers",
        ):
            data.pop(key)
        return data

    def recipe_hash(self) -> str:
        """A stable hash of :meth:`recipe_dict` (cache keys of trained models)."""
        text = json.dumps(self.recipe_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()
