"""The Ray executor: a real local Ray instance gives the same numbers as the local executor."""

from __future__ import annotations

import time

import numpy as np
import pytest

from robustvision.bench.plan import load_config
from robustvision.bench.runner import check_ray_address, run_bench
from robustvision.bench.sources import resolve_models
from robustvision.bench.store import ResultsStore
from robustvision.checks import CHEAP_CHECKS
from robustvision.errors import UserError

pytestmark = pytest.mark.integration


def test_ray_matches_local(bench_checkpoints, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install ray)")
    common = dict(
        checkpoints=[str(bench_checkpoints)],
        models=["lenet5"],
        noises=["fgsm", "pgd_linf@8/255"],
        n_examples=48,
        n_adversarial=24,
        attack_steps=3,
        out="",
        threads=1,
    )
    local = load_config("quick", store=str(tmp_path / "local.db"), **common)
    remote = load_config("quick", store=str(tmp_path / "ray.db"), executor="ray", workers=2, **common)
    models = resolve_models(local)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with ResultsStore(local.store) as a, ResultsStore(remote.store) as b:
            run_bench(local, models, a)
            s = run_bench(remote, models, b)
            assert s.written == s.planned == 2 * (1 + 3 + 1 + len(CHEAP_CHECKS))  # + one cell per health check
            key = ["model", "technique", "noise", "severity", "metric"]
            ra, rb = a.results().sort_values(key), b.results().sort_values(key)
            assert ra[key].values.tolist() == rb[key].values.tolist()
            np.testing.assert_array_equal(ra["value"].to_numpy(), rb["value"].to_numpy())
            ca, cb = a.cells().sort_values("cell_key"), b.cells().sort_values("cell_key")
            sa, sb = a.samples(ca["id"].tolist()), b.samples(cb["id"].tolist())
            for ia, ib in zip(ca["id"], cb["id"], strict=True):
                assert (int(ia) in sa) == (int(ib) in sb)  # some health checks store no per-sample results
                if int(ia) in sa:
                    np.testing.assert_array_equal(sa[int(ia)][1], sb[int(ib)][1])  # identical predictions
    finally:
        ray.shutdown()


def test_unreachable_ray_address_fails_fast_with_one_line():
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="cannot reach the Ray cluster at 127.0.0.1:9") as err:
        check_ray_address("127.0.0.1:9", timeout=2)
    assert "\n" not in str(err.value) and time.perf_counter() - t0 < 10
    with pytest.raises(UserError, match="not host:port"):
        check_ray_address("nonsense")
