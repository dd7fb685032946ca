"""The runner: local execution, what cells store, resuming (also after a SIGKILL), wraps_model noises."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from robustvision.bench.plan import load_config
from robustvision.bench.runner import load_eval_data, run_bench
from robustvision.bench.sources import entries_from_paths, resolve_models
from robustvision.bench.store import ResultsStore
from robustvision.bench.summary import summarize
from robustvision.noises import create_noise


def small_cfg(ckpts, store, **kw):
    base = dict(
        checkpoints=[str(ckpts)],
        store=str(store),
        n_examples=48,
        n_adversarial=24,
        attack_steps=2,
        noises=["fgsm", "pgd_linf@8/255", "test_darken@1,4", "test_posterize3", "test_modelswap"],
        out="",
        threads=1,
        checks=False,  # the health checks have their own tests (tests/bench/test_health.py)
    )
    base.update(kw)
    return load_config("quick", **base)


def test_local_run_stores_every_cell_and_resumes(bench_checkpoints, test_noises, tmp_path):
    cfg = small_cfg(bench_checkpoints, tmp_path / "r.db")
    models = resolve_models(cfg)
    assert {m.key for m in models} == {"lenet5/standard", "lenet5/label_smoothing", "mixer_tiny/standard"}
    with ResultsStore(cfg.store) as store:
        s1 = run_bench(cfg, models, store)
        per_model = 1 + 3 + 1 + 2 + 1 + 1  # clean, fgsm x3, pgd, darken x2, posterize, modelswap
        assert s1.planned == 3 * per_model and s1.written == s1.planned and s1.skipped_existing == 0
        df = store.results()
        assert len(store.cells()) == s1.planned
        assert not df.duplicated(["model", "technique", "noise", "severity", "metric"]).any()
        s2 = run_bench(cfg, models, store)
        assert s2.written == 0 and s2.skipped_existing == s1.planned
        assert len(store.results()) == len(df)

        summary = summarize(store)
        cells = summary.cells
        x, y, _ = load_eval_data(cfg)
        for _key, g in cells.groupby(["model", "technique"]):
            clean = float(g[g["noise"] == "clean"]["accuracy"].iloc[0])
            # robust accuracy <= clean accuracy on the same prefix (the attack never helps a wrong sample here
            # often enough to matter; compare with AR's definition instead of the raw numbers):
            adv = g[g["kind"] == "adversarial"]
            assert (adv["ar"] <= 1.0).all() and (adv["ar"] >= 0.0).all()
            # the wraps_model noise evaluated the wrapped model (always class 0) on clean images
            swap = float(g[g["noise"] == "test_modelswap"]["accuracy"].iloc[0])
            assert swap == pytest.approx(float((y[:48] == 0).float().mean()))
            assert 0 <= clean <= 1
        lenet = cells[(cells["model"] == "lenet5") & (cells["technique"] == "standard")]
        clean = float(lenet[lenet["noise"] == "clean"]["accuracy"].iloc[0])
        assert clean > 0.5  # the tiny LeNet is trained
        # PGD runs on the first n_adversarial images, clean on all n_examples: compare on the same images only
        clean_id = int(lenet[lenet["noise"] == "clean"]["id"].iloc[0])
        pgd_id = int(lenet[lenet["noise"] == "pgd_linf"]["id"].iloc[0])
        per_sample = store.samples([clean_id, pgd_id])
        clean_correct, pgd_correct = per_sample[clean_id][0], per_sample[pgd_id][0]
        assert len(clean_correct) == 48 and len(pgd_correct) == 24
        assert pgd_correct.mean() <= clean_correct[: len(pgd_correct)].mean()


def test_cell_numbers_replay_exactly(bench_checkpoints, test_noises, tmp_path):
    a = small_cfg(bench_checkpoints, tmp_path / "a.db", noises=["pgd_linf@8/255", "test_darken@4"])
    b = small_cfg(bench_checkpoints, tmp_path / "b.db", noises=["pgd_linf@8/255", "test_darken@4"])
    models = entries_from_paths([bench_checkpoints])
    with ResultsStore(a.store) as sa, ResultsStore(b.store) as sb:
        run_bench(a, models, sa)
        run_bench(b, models, sb)
        ra = sa.results().sort_values(["model", "technique", "noise", "severity", "metric"])
        rb = sb.results().sort_values(["model", "technique", "noise", "severity", "metric"])
        np.testing.assert_array_equal(ra["value"].to_numpy(), rb["value"].to_numpy())
        np.testing.assert_array_equal(ra["seed"].to_numpy(), rb["seed"].to_numpy())


def test_noise_that_needs_a_model_given_none_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a model"):
        create_noise("fgsm", eps=8 / 255)(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))


def _count_cells(db: Path) -> int:
    import sqlite3

    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return conn.execute("select count(*) from cells").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_killed_run_resumes_without_lost_or_duplicated_rows(bench_checkpoints, repo_root, tmp_path):
    db = tmp_path / "kill.db"
    # Many small cells (one model, 30 budgets, 3 PGD steps on 64 images) so the kill lands part-way.
    eps = ",".join(f"{k}/255" for k in range(1, 31))
    args = [
        sys.executable, "-m", "robustvision.cli", "bench", "--preset", "quick",
        "--checkpoints", str(bench_checkpoints), "--models", "lenet5/standard",
        "--noises", f"pgd_linf@{eps}", "--n-examples", "64", "--n-adversarial", "64", "--attack-steps", "3",
        "--store", str(db), "--out", "", "--threads", "1", "--no-checks",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(repo_root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    total = 1 + 30
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    try:
        while _count_cells(db) < 3:
            assert proc.poll() is None, f"bench exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.time() < deadline, "bench stored no cells in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = _count_cells(db)
    assert 3 <= stored < total, "the run must have been killed part-way"
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{stored} already stored" in done.stdout.replace("\n", " ")
    with ResultsStore(db) as store:
        cells = store.cells()
        results = store.results()
    assert len(cells) == total and not cells.duplicated(["cell_key", "config_hash"]).any()
    assert len(results) == total and not results.duplicated(["model", "technique", "noise", "severity", "metric"]).any()
    # Same numbers as an uninterrupted in-process run of the same config.
    cfg = load_config(
        "quick", checkpoints=[str(bench_checkpoints)], models=["lenet5/standard"], noises=[f"pgd_linf@{eps}"],
        n_examples=64, n_adversarial=64, attack_steps=3, store=str(tmp_path / "ref.db"), out="", threads=1,
        checks=False,
    )  # fmt: skip
    with ResultsStore(cfg.store) as ref:
        run_bench(cfg, resolve_models(cfg), ref)
        expected = ref.results().set_index(["model", "technique", "noise", "severity", "metric"])["value"].sort_index()
    got = results.set_index(["model", "technique", "noise", "severity", "metric"])["value"].sort_index()
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy())


def test_zoo_results_are_read_from_zoocheckpoint_tuples(bench_checkpoints):
    from typing import NamedTuple

    from robustvision.bench.sources import _zoo_items

    class ZooCheckpoint(NamedTuple):
        model_name: str
        technique: str
        checkpoint_path: Path

    ck = bench_checkpoints / "lenet5_ls.safetensors"
    items = _zoo_items([ZooCheckpoint("lenet5", "label_smoothing", ck), str(ck), {"path": str(ck)}])
    assert items[0] == (ck, "lenet5", "label_smoothing")
    assert items[1] == (ck, None, None) and items[2] == (ck, None, None)
    with pytest.raises(TypeError, match="without a checkpoint path"):
        _zoo_items([object()])


def test_model_selection_errors_suggest_names(bench_checkpoints):
    from robustvision.bench.sources import select_models

    entries = entries_from_paths([bench_checkpoints])
    assert [e.key for e in select_models(entries, ["lenet5/label_smoothing"], [])] == ["lenet5/label_smoothing"]
    assert {e.technique for e in select_models(entries, [], ["standard"])} == {"standard"}
    with pytest.raises(ValueError, match="did you mean 'lenet5'"):
        select_models(entries, ["lenet"], [])
    with pytest.raises(ValueError, match="technique 'pgd_att'"):
        select_models(entries, [], ["pgd_att"])


def test_zoo_trains_only_the_selected_members(bench_checkpoints, monkeypatch, tmp_path):
    import robustvision.training as training
    from robustvision.training.zoo_presets import ZooCheckpoint

    asked = []

    def fake_ensure_zoo(preset, device="auto", only=None, **kw):
        asked.append(only)
        return [ZooCheckpoint("lenet5", "mixup", bench_checkpoints / "lenet5_ls.safetensors")]

    monkeypatch.setattr(training, "ensure_zoo", fake_ensure_zoo)
    cfg = load_config("quick", store=str(tmp_path / "r.db"), models=["lenet5/mixup"], out="")
    assert [m.key for m in resolve_models(cfg)] == ["lenet5/mixup"]
    assert asked == [["lenet5/mixup"]]  # not the whole zoo
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):  # a typo fails before any training
        resolve_models(load_config("quick", store=str(tmp_path / "r.db"), models=["resnet19"], out=""))
    assert len(asked) == 1


def test_tiny_checkpoints_do_not_depend_on_the_thread_count(tiny_checkpoints, tmp_path):
    """The bench fixtures' weights are the same whatever OMP_NUM_THREADS the suite runs with."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = tiny_checkpoints(tmp_path / "two")
        torch.set_num_threads(1)
        b = tiny_checkpoints(tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    for name in ("lenet5_standard.safetensors", "lenet5_ls.safetensors", "mixer.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_a_second_run_leaves_cells_another_run_is_computing(bench_checkpoints, test_noises, tmp_path):
    import datetime as dt

    cfg = small_cfg(bench_checkpoints, tmp_path / "c.db", noises=["test_darken@1,4"])
    models = entries_from_paths([bench_checkpoints])
    with ResultsStore(cfg.store) as store:
        from robustvision.bench.plan import plan_cells

        x, y, _ = load_eval_data(cfg)
        plan = plan_cells(cfg, models, image_size=int(x.shape[-1]), channels=int(x.shape[1]), test_size=len(y))
        first = [(c.key, c.config_hash) for c in plan.cells if c.noise == "test_darken"]
        assert store.claim_cells("run-a", first) == {}  # run A is computing the darken cells
        assert store.claim_cells("run-b", first) == {k: "run-a" for k in first}  # exactly one run wins a cell
        b = run_bench(cfg, models, store, run_id="run-b")
        assert b.written == b.planned - len(first) and any("run-a" in note for note in b.notes)
        assert not store.cells()["noise"].eq("test_darken").any()
        store.release_claims("run-a")  # run A ended without storing them: the next run fills them in
        c = run_bench(cfg, models, store, run_id="run-c")
        assert c.written == len(first) and len(store.cells()) == c.planned
        # claims of another machine's run are taken over once stale
        store.claim_cells("run-far", [("k", "h")])
        with store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE claims SET owner = 'elsewhere.example:1'")
        assert store.claim_cells("run-d", [("k", "h")]) == {("k", "h"): "run-far"}
        assert store.claim_cells("run-d", [("k", "h")], stale_after=dt.timedelta(0)) == {}
        # claims of a killed process of this machine are taken over at once
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        with store.engine.begin() as conn:
            owner = f"{socket.gethostname()}:{dead.pid}"
            conn.exec_driver_sql(f"UPDATE claims SET run_id = 'run-killed', owner = '{owner}'")
        assert store.claim_cells("run-e", [("k", "h")]) == {}
        store.release_claims("run-e")
