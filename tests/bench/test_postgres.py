"""The results store against a real PostgreSQL server (Debian's ``postgresql`` package), started for the test."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from robustvision.bench.store import CellRecord, ResultsStore
from robustvision.bench.summary import summarize

pytestmark = pytest.mark.integration


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    hits = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return hits[-1] if hits else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'psycopg[binary]'")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as the package's 'postgres' user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user exists to run the server")
        runuser = shutil.which("runuser")
        if not runuser:
            pytest.skip("running as root and runuser is missing")
        prefix = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="rv_pg_"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if owner is not None:
        for p in (root, sock):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-U", "rv", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60", "start"],
            check=True,
            capture_output=True,
            env=env,
            timeout=120,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        out = getattr(err, "stderr", b"") or b""
        pytest.fail(f"could not start PostgreSQL: {out.decode(errors='replace')[-1000:]} {log[-1000:]}")
    try:
        yield f"postgresql+psycopg://rv@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_store_writes_and_reads_through_postgres(postgres_url, synthetic_store, tmp_path):
    store = synthetic_store(postgres_url)
    try:
        assert store.engine.dialect.name == "postgresql"
        df = store.results()
        assert len(df) > 0 and df["value"].dtype == float and df["seed"].dtype.kind == "i"
        # Same content as the same synthetic store on SQLite.
        lite = synthetic_store(f"sqlite:///{tmp_path / 's.db'}")
        key = ["model", "technique", "noise", "severity", "metric"]
        np.testing.assert_allclose(df.sort_values(key)["value"], lite.results().sort_values(key)["value"])
        a, b = summarize(store).leaderboard, summarize(lite).leaderboard
        np.testing.assert_allclose(a["wcar"].to_numpy(), b["wcar"].to_numpy())
        lite.close()
        # Skipping by config hash works the same way.
        rec = CellRecord("k", "h", "digits", "m", "t", "clean", "clean", 0.0, 2**62, 4, {"clean_accuracy": 1.0})
        assert store.write_cell("r", rec) and not store.write_cell("r", rec)
    finally:
        store.close()


def test_bad_postgres_database_is_one_clear_line(postgres_url):
    from robustvision.bench.store import StoreError

    with pytest.raises(StoreError, match="cannot connect to results store") as err:
        ResultsStore(postgres_url.rsplit("/", 1)[0] + "/no_such_db")
    assert "\n" not in str(err.value)
