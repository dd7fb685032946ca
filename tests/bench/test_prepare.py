"""The straight bench path: typed noise settings, flip-probability scoring as registry metadata, one prepare."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

import robustvision
import robustvision.data
from robustvision.bench.plan import (
    HASH_VERSION,
    CellKind,
    ModelEntry,
    NoiseSetting,
    config_hash,
    load_config,
    noise_settings,
    plan_cells,
)
from robustvision.bench.runner import EvalData, load_data, prepare, run_bench
from robustvision.bench.selectors import noise_scoring, scored_by_flip
from robustvision.bench.store import ResultsStore
from robustvision.cli import app
from robustvision.models import create_model
from robustvision.models.checkpoints import save_checkpoint
from robustvision.noises import NOISES, Scoring
from robustvision.noises.perturbations import PERTURBATIONS

ENTRIES = [
    ModelEntry("lenet5", "standard", "cnn", "a.safetensors", "h1"),
    ModelEntry("resnet", "pgd_at", "cnn", "b.safetensors", "h2"),
]

# sha256 of every planned cell's "key|config_hash|seed|n|kind|level|noise_kwargs" line, computed with the
# 5-tuple ``Setting`` planner (commit eb2b32c) for ENTRIES at 32 x 32 x 3, 500 test images, no image files.
GOLDEN = {
    "quick": (34, "7baf48d82684a5a9579965dc67f38f6fb282dd368c70748bbf4cbfda9db6d280"),
    "default": (206, "42c559961430080328661bd4d8b41e926cc2eed6740debfe5bf7c39a1411a38d"),
}


# ---------------------------------------------------------------------------------------------- NoiseSetting
@pytest.mark.parametrize("preset", sorted(GOLDEN))
def test_cells_keep_the_hashes_of_the_tuple_planner(preset):
    cfg = load_config(preset, store="unused.db")
    plan = plan_cells(cfg, ENTRIES, image_size=32, channels=3, test_size=500, has_files=False)
    lines = "\n".join(f"{c.key}|{c.config_hash}|{c.seed}|{c.n}|{c.kind}|{c.level}|{c.noise_kwargs}" for c in plan.cells)
    assert (len(plan.cells), hashlib.sha256(lines.encode()).hexdigest()) == GOLDEN[preset]


def test_config_hash_is_the_old_payload():
    cfg = load_config("quick", store="unused.db", noises=["pgd_linf@8/255", "imagenet_p:rotate"])
    plan = plan_cells(cfg, ENTRIES[:1], image_size=32, channels=3, test_size=500, has_files=False)
    m = ENTRIES[0]
    for cell in plan.cells:
        payload = {  # the payload as the tuple planner wrote it, field by field
            "v": HASH_VERSION,
            "dataset": cfg.dataset,
            "image_size": 32,
            "data_seed": cfg.seed,
            "model": m.name,
            "technique": m.technique,
            "checkpoint": m.checkpoint_hash,
            "noise": cell.noise,
            "kwargs": dict(cell.noise_kwargs),
            "n": cell.n,
            "seed": cell.seed,
            "batch_size": cfg.batch_size,
        }
        assert cell.config_hash == config_hash(payload)
    pgd = next(c for c in plan.cells if c.noise == "pgd_linf")
    assert pgd.setting == NoiseSetting("pgd_linf", "adversarial", 8 / 255, 0, {"eps": 8 / 255, "steps": 5})
    seq = next(c for c in plan.cells if c.noise == "imagenet_p:rotate")
    assert seq.setting.kwargs == {"frames": cfg.p_frames} and seq.n == cfg.n_sequences


def test_noise_setting_is_typed_and_frozen():
    cfg = load_config("quick", store="unused.db", noises=["fgsm", "fog@3", "imagenet_p:rotate"])
    suite = noise_settings(cfg, image_size=32, channels=3, has_files=False)
    assert all(isinstance(s, NoiseSetting) for s in suite.settings)
    assert suite.settings[0] == NoiseSetting.clean()
    with pytest.raises(dataclasses.FrozenInstanceError):
        suite.settings[1].severity = 1.0
    assert len(set(suite.settings)) == len(suite.settings)  # hashable, all distinct
    fgsm = [s for s in suite.settings if s.noise == "fgsm"]
    assert [s.level for s in fgsm] == [1, 2, 3] and not any(s.model_independent for s in fgsm)
    # Each setting's noise is built once, while planning; clean and ImageNet-P sequences build none.
    assert set(suite.built) == {s.key for s in suite.settings if s.builds_noise}
    assert ("clean", ()) not in suite.built and not any(k[0].startswith("imagenet_p") for k in suite.built)


# -------------------------------------------------------------------------------------------- scoring metadata
def test_imagenet_p_sequences_carry_flip_probability_scoring():
    assert PERTURBATIONS and all(spec.scoring == Scoring.FLIP_PROBABILITY for spec in PERTURBATIONS.values())
    for name in PERTURBATIONS:
        assert noise_scoring(f"imagenet_p:{name}") == Scoring.FLIP_PROBABILITY
    for name in ("clean", "fgsm", "fog", "check:gradient_masking", "not_registered_here"):
        assert noise_scoring(name) == Scoring.ACCURACY
    assert Scoring.FLIP_PROBABILITY.value == "flip_probability" and CellKind.NATURAL == "natural"


def test_scoring_is_read_from_the_registry_not_the_name(monkeypatch):
    """Flip the metadata both ways: the planner follows the registry entries."""
    monkeypatch.setitem(PERTURBATIONS, "rotate", dataclasses.replace(PERTURBATIONS["rotate"], scoring=Scoring.ACCURACY))
    monkeypatch.setitem(NOISES._meta, "fog", {**NOISES.meta("fog"), "scoring": "flip_probability"})
    assert not scored_by_flip("imagenet_p:rotate") and scored_by_flip("fog")
    cfg = load_config("quick", store="unused.db", noises=["fog"], n_sequences=7)
    plan = plan_cells(cfg, ENTRIES[:1], image_size=32, channels=3, test_size=500, has_files=False)
    assert {c.n for c in plan.cells if c.noise == "fog"} == {7}  # sized as a sequence cell


# ---------------------------------------------------------------------------------------------------- prepare
@pytest.fixture
def counted(monkeypatch):
    """Count data-set loads and noise builds (by name and kwargs)."""
    counts = {"data": 0, "noises": Counter()}
    create_dataset, create = robustvision.data.create_dataset, NOISES.create

    def counting_dataset(*args, **kwargs):
        counts["data"] += 1
        return create_dataset(*args, **kwargs)

    def counting_create(name, **kwargs):
        counts["noises"][(name, tuple(sorted(kwargs.items())))] += 1
        return create(name, **kwargs)

    monkeypatch.setattr(robustvision.data, "create_dataset", counting_dataset)
    monkeypatch.setattr(NOISES, "create", counting_create)
    return counts


def _lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("lenet5", num_classes=10, image_size=32).eval()


def test_bench_command_loads_data_once_and_builds_each_noise_once(counted, tmp_path):
    save_checkpoint(_lenet(), tmp_path / "a.safetensors", {"technique": "standard"})
    save_checkpoint(_lenet(), tmp_path / "b.safetensors", {"technique": "label_smoothing"})
    args = ["bench", "--preset", "quick", "--checkpoints", str(tmp_path / "a.safetensors"), "--checkpoints"]
    args += [str(tmp_path / "b.safetensors"), "--noises", "fgsm,pgd_linf@8/255,fog@3", "--n-examples", "24"]
    args += ["--n-adversarial", "12", "--attack-steps", "1", "--no-checks", "--out", "", "--workers", "1"]
    result = CliRunner().invoke(app, [*args, "--store", str(tmp_path / "s.db")])
    assert result.exit_code == 0, result.output
    assert counted["data"] == 1
    assert set(counted["noises"].values()) == {1} and len(counted["noises"]) == 5  # 3 fgsm budgets, pgd, fog
    with ResultsStore(str(tmp_path / "s.db")) as rs:
        assert len(rs.cells()) == 2 * 6  # clean + 5 settings, two models


def test_run_bench_and_evaluate_prepare_once(counted, tmp_path):
    ckpt = tmp_path / "a.safetensors"
    save_checkpoint(_lenet(), ckpt, {"technique": "standard"})
    cfg = load_config(
        "quick", store=str(tmp_path / "s.db"), checkpoints=[str(ckpt)], noises=["fgsm", "fog@3"], n_examples=24,
        n_adversarial=12, checks=False, out="", workers=1,
    )  # fmt: skip
    with ResultsStore(cfg.store) as rs:
        summary = run_bench(cfg, None, rs)
    assert summary.written == 5 and counted["data"] == 1 and set(counted["noises"].values()) == {1}

    counted["data"], counted["noises"] = 0, Counter()
    table = robustvision.evaluate(_lenet(), "digits", noises=["fgsm", "fog@3"], n_examples=24, n_adversarial=12)
    assert len(table) == 5 and counted["data"] == 1 and set(counted["noises"].values()) == {1}


def test_prepare_uses_given_data_and_models():
    cfg = load_config("quick", store="unused.db", noises=["fog@3"], checks=False)
    data = EvalData(torch.rand(6, 3, 32, 32), torch.arange(6) % 3)
    prepared = prepare(cfg, ENTRIES, data=data)
    assert prepared.data is data and prepared.models == ENTRIES
    assert [c.n for c in prepared.plan.cells] == [6] * 4 and set(prepared.plan.noises) == {("fog", (("severity", 3),))}
    assert load_data(cfg).files == ()  # digits is not read from image files


def test_worker_tasks_use_the_noises_built_while_planning(counted, tmp_path, monkeypatch):
    from robustvision.bench import runner

    ckpt = tmp_path / "a.safetensors"
    save_checkpoint(_lenet(), ckpt, {"technique": "standard"})
    cfg = load_config(
        "quick", store="unused.db", checkpoints=[str(ckpt)], noises=["fgsm", "fog@3"], n_examples=24,
        n_adversarial=12, checks=False, out="",
    )  # fmt: skip
    prepared = prepare(cfg)
    built = sum(counted["noises"].values())
    assert built == 4  # three fgsm budgets and fog, once each
    # what a worker process receives: the data, the settings and the planned noises, pickled once
    shipped = pickle.loads(pickle.dumps(dict(prepared.plan.noises)))
    settings = runner.EvalSettings("cpu", 64, 1, ())
    for key, value in {"images": prepared.data.images, "labels": prepared.data.labels, "settings": settings}.items():
        monkeypatch.setitem(runner._WORKER_DATA, key, value)
    monkeypatch.setitem(runner._WORKER_DATA, "noises", shipped)
    in_process = []
    for unit in runner.make_units(prepared.plan.cells):
        records = runner._process_task(unit)
        data = prepared.data
        expected = runner.evaluate_unit(unit, data.images, data.labels, None, settings, prepared.plan.noises)
        assert [r.metrics for r in records] == [r.metrics for r in expected]
        in_process += records
    assert len(in_process) == 5 and sum(counted["noises"].values()) == built  # no noise rebuilt in the "worker"


def test_every_noise_of_the_default_suite_pickles():
    suite = noise_settings(load_config("default", store="unused.db"), image_size=32, channels=3, has_files=False)
    assert len(suite.built) > 50
    assert set(pickle.loads(pickle.dumps(suite.built))) == set(suite.built)
