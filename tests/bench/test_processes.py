"""The local executor's worker processes give the same numbers as the in-process run."""

from __future__ import annotations

import numpy as np
import pytest

from robustvision.bench.plan import load_config
from robustvision.bench.runner import AUTO_PROCESSES_MIN_UNITS, local_workers, run_bench
from robustvision.bench.sources import resolve_models
from robustvision.bench.store import ResultsStore

pytestmark = pytest.mark.integration


def test_worker_processes_match_in_process(tiny_checkpoints, tmp_path):
    ckpts = tiny_checkpoints(tmp_path / "ckpts")
    common = dict(
        checkpoints=[str(ckpts)],
        noises=["clean", "fgsm", "gaussian_noise@1,3", "jpeg_reencode_q95", "precision_bf16"],
        n_examples=40,
        n_adversarial=20,
        attack_steps=2,
        out="",
        threads=1,
    )
    serial = load_config("quick", store=str(tmp_path / "serial.db"), workers=1, **common)
    parallel = load_config("quick", store=str(tmp_path / "parallel.db"), workers=2, **common)
    models = resolve_models(serial)
    with ResultsStore(serial.store) as a, ResultsStore(parallel.store) as b:
        sa = run_bench(serial, models, a)
        sb = run_bench(parallel, models, b)
        assert sb.written == sb.planned == sa.written > len(models)
        key = ["model", "technique", "noise", "severity", "metric"]
        ra, rb = a.results().sort_values(key), b.results().sort_values(key)
        assert ra[key].values.tolist() == rb[key].values.tolist()
        np.testing.assert_array_equal(ra["value"].to_numpy(), rb["value"].to_numpy())
        # a second run finds every cell stored and starts no worker
        assert run_bench(parallel, models, b).written == 0


def test_automatic_worker_count(request):
    assert local_workers(3, 1, "cpu") == 3  # an explicit count is kept
    assert local_workers(0, AUTO_PROCESSES_MIN_UNITS - 1, "cpu") == 1  # short runs stay in-process
    assert 1 <= local_workers(0, AUTO_PROCESSES_MIN_UNITS, "cpu", ["clean", "fgsm", "imagenet_p:noise"]) <= 2
    # a noise registered by the user's own code stays in-process: spawned workers would not know it
    request.getfixturevalue("test_noises")
    assert local_workers(0, AUTO_PROCESSES_MIN_UNITS, "cpu", ["fgsm", "test_darken"]) == 1


def test_every_packaged_noise_may_run_in_a_worker():
    from robustvision.bench.runner import _packaged_noise
    from robustvision.noises import NOISES

    assert [n for n in NOISES if not _packaged_noise(n)] == []


PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from robustvision.runtime import exit_with_parent

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(2, ctx, initializer=exit_with_parent, initargs=(os.getpid(), 0.1))
    pids = set()
    while len(pids) < 2:
        pids |= {f.result() for f in [pool.submit(os.getpid) for _ in range(4)]}
    print(" ".join(map(str, sorted(pids))), flush=True)
    time.sleep(60)
"""


def test_pool_workers_exit_when_the_parent_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 20
        alive = workers
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [p for p in workers if _alive(p)]
        assert not alive, f"orphaned workers still running: {alive}"
    finally:
        proc.kill()


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
