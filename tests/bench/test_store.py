"""The results store on SQLite: rows as numbers, skip-by-config-hash, transactions, export, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustvision.bench.store import CellRecord, ResultsStore, StoreError
from robustvision.errors import UserError


def record(key="digits/m/standard/fgsm/0.1", config_hash="h1", value=0.5, n=8):
    correct = np.arange(n) % 2 == 0
    return CellRecord(
        cell_key=key,
        config_hash=config_hash,
        dataset="digits",
        model="m",
        technique="standard",
        noise="fgsm",
        kind="adversarial",
        severity=0.1,
        seed=2**62 + 5,
        n=n,
        metrics={"robust_accuracy": value},
        level=2,
        family="cnn",
        correct=correct,
        predictions=np.arange(n),
    )


def test_write_read_numbers_as_numbers(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        store.record_run(
            "run1",
            dataset="digits",
            preset="quick",
            config={"a": 1},
            config_hash="c",
            package_version="0.1.0",
            git_commit=None,
        )
        assert store.write_cell("run1", record())
        df = store.results()
        assert list(df.columns)[:13] == [
            "run_id",
            "dataset",
            "model",
            "technique",
            "noise",
            "kind",
            "severity",
            "metric",
            "value",
            "n",
            "seed",
            "config_hash",
            "created_at",
        ]
        row = df.iloc[0]
        assert isinstance(row["value"], float) and row["value"] == 0.5
        assert int(row["n"]) == 8 and int(row["seed"]) == 2**62 + 5 and row["severity"] == pytest.approx(0.1)
        assert store.run_config("run1") == {"a": 1}
        cells = store.cells()
        (correct, preds) = store.samples(cells["id"].tolist())[int(cells["id"][0])]
        np.testing.assert_array_equal(correct, np.arange(8) % 2 == 0)
        np.testing.assert_array_equal(preds, np.arange(8))


def test_same_cell_and_hash_is_skipped_new_hash_is_added(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        assert store.write_cell("r1", record())
        assert not store.write_cell("r2", record(value=0.9))  # same key and hash: skipped, value kept
        assert store.results()["value"].tolist() == [0.5]
        assert store.write_cell("r2", record(config_hash="h2", value=0.9))
        assert len(store.results()) == 2
        assert store.stored_cells() == {("digits/m/standard/fgsm/0.1", "h1"), ("digits/m/standard/fgsm/0.1", "h2")}


def test_a_failed_cell_write_leaves_nothing(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        bad = record()
        bad.metrics = {"robust_accuracy": 0.5, "broken": "not a number"}
        with pytest.raises(ValueError):
            store.write_cell("r1", bad)
        assert store.results().empty and store.cells().empty
        assert store.write_cell("r1", record())


def test_export_csv_and_parquet(synthetic_store, tmp_path):
    store = synthetic_store(f"sqlite:///{tmp_path / 's.db'}")
    df = store.results()
    csv = pd.read_csv(store.export(tmp_path / "out.csv"))
    pq = pd.read_parquet(store.export(tmp_path / "out.parquet"))
    assert len(csv) == len(pq) == len(df) > 0
    assert np.allclose(csv["value"], df["value"]) and np.allclose(pq["value"], df["value"])
    with pytest.raises(ValueError, match="csv or parquet"):
        store.export(tmp_path / "out.xlsx")
    store.close()


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgresql+psycopg://nobody@127.0.0.1:9/nodb", "cannot connect to results store"),
        ("sqlite:////nonexistent-dir/sub/r.db", "cannot connect to results store"),
        ("notadialect://x/y", "cannot open results store"),
        ("://", "not a valid SQLAlchemy URL"),
    ],
)
def test_unusable_store_urls_are_one_clear_line(url, message):
    with pytest.raises(StoreError, match=message) as err:
        ResultsStore(url, connect_timeout=2)
    assert isinstance(err.value, UserError)
    assert "\n" not in str(err.value)


def test_password_hidden_in_errors():
    with pytest.raises(StoreError) as err:
        ResultsStore("postgresql+psycopg://user:s3cret@127.0.0.1:9/db", connect_timeout=2)
    assert "s3cret" not in str(err.value)


def test_reading_commands_do_not_create_a_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        ResultsStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()


def test_reading_an_unrelated_sqlite_file_writes_nothing(foreign_sqlite, tmp_path):
    import sqlite3

    from robustvision.bench.store import ResultsStore, StoreError

    path = foreign_sqlite
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a robustvision results store"):
        ResultsStore(path, create=False)
    assert path.read_bytes() == before and not (tmp_path / "other.db-wal").exists()
    con = sqlite3.connect(path)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["notes"]
    con.close()


def test_store_path_under_a_file_or_a_folder_is_one_line(tmp_path):
    from robustvision.bench.store import ResultsStore, StoreError

    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="parent of it is a file"):
        ResultsStore(tmp_path / "file" / "r.db")
    with pytest.raises(StoreError, match="is a folder"):
        ResultsStore(tmp_path)
