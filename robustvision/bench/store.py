"""The results store: every benchmark number, in a SQL database through SQLAlchemy 2.

SQLite file by default (``runs/robustvision.db``), any SQLAlchemy URL otherwise (``postgresql://user@host/db``).
Four tables:

* ``runs``: one row per invocation with the resolved config (JSON), its hash, the package version and git commit.
* ``cells``: one row per evaluated cell ``(dataset, model, technique, noise, severity)`` and the hash of the
  cell's resolved config; unique on ``(cell_key, config_hash)``.
* ``results``: one row per ``(run, dataset, model, technique, noise, kind, severity, metric)`` with the value as a
  number, the sample count ``n``, the cell seed, the config hash and the ``capability`` that measured it
  (``benchmark`` for bench cells; ``defend``, ``das``, ``iseg``, ``adapt`` for the rows of
  :mod:`robustvision.bench.capabilities`, written by :meth:`ResultsStore.write_results`).
* ``samples``: per-sample correctness (packed bits) and predictions of a cell, from which the cross-cell metrics
  (AR, WCAR, flips against clean) are derived.

A cell, its result rows and its samples are written in one transaction, so an interrupted run leaves whole cells
or nothing; a cell already stored with the same config hash is skipped, so re-running resumes. A store written by an
older version (no ``capability`` column) is migrated when it is opened for writing; reading it needs no migration.

Example:
    >>> store = ResultsStore("sqlite://")             # in memory
    >>> store.close()
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    inspect,
    literal,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from robustvision.bench.capabilities import BENCHMARK
from robustvision.errors import UserError
from robustvision.runtime import require_extra

DEFAULT_STORE = "runs/robustvision.db"
STORE_ENV = "ROBUSTVISION_STORE"


def default_store() -> str:
    """The store a command uses without ``--store``: ``$ROBUSTVISION_STORE``, else ``runs/robustvision.db``."""
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


class StoreError(UserError):
    """The store cannot be opened or written (bad URL, server unreachable, missing driver)."""


class Base(DeclarativeBase):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class RunRow(Base):
    __tablename__ = "runs"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    dataset: Mapped[str] = mapped_column(String(128))
    preset: Mapped[str] = mapped_column(String(64))
    config_json: Mapped[str] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64))
    package_version: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CellRow(Base):
    __tablename__ = "cells"
    __table_args__ = (UniqueConstraint("cell_key", "config_hash", name="uq_cell_config"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    cell_key: Mapped[str] = mapped_column(String(512))
    config_hash: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    technique: Mapped[str] = mapped_column(String(128))
    noise: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[float] = mapped_column(Float)
    level: Mapped[int] = mapped_column(Integer, default=0)
    family: Mapped[str] = mapped_column(String(32), default="")
    n: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    params_json: Mapped[str] = mapped_column(Text, default="{}")
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


class ResultRow(Base):
    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint(
            "dataset", "model", "technique", "noise", "severity", "metric", "config_hash", name="uq_result"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    dataset: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    technique: Mapped[str] = mapped_column(String(128))
    noise: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[float] = mapped_column(Float)
    metric: Mapped[str] = mapped_column(String(128))
    value: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    config_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)
    capability: Mapped[str] = mapped_column(String(32), default=BENCHMARK, server_default=BENCHMARK)


class SampleRow(Base):
    __tablename__ = "samples"
    cell_id: Mapped[int] = mapped_column(ForeignKey("cells.id", ondelete="CASCADE"), primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    correct: Mapped[bytes] = mapped_column(LargeBinary)  # np.packbits of the 0/1 correctness vector
    predictions: Mapped[bytes] = mapped_column(LargeBinary)  # int32 little-endian predicted labels


class ClaimRow(Base):
    """A cell some run is computing now: a second run on the same store leaves it alone until the claim goes stale."""

    __tablename__ = "claims"
    cell_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    config_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    owner: Mapped[str] = mapped_column(String(300), default="")  # "host:pid" of the claiming process
    claimed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=_now)


# A run refreshes its claims each time it stores a cell. Claims of a process on this machine that no longer exists
# are taken over at once (a killed run resumes immediately); claims of other machines are taken over when they have
# gone this long without a refresh.
CLAIM_STALE_AFTER = dt.timedelta(minutes=30)


def _claim_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_is_dead(owner: str) -> bool:
    """Whether ``host:pid`` names a process of this machine that has ended (other machines: unknown, so False)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else
        return False
    return False


STORE_TABLES = ("runs", "cells", "results", "samples")

RESULT_COLUMNS = [
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
    "capability",
]


@dataclass
class CellRecord:
    """Everything one evaluated cell writes: identity, metrics and per-sample arrays."""

    cell_key: str
    config_hash: str
    dataset: str
    model: str
    technique: str
    noise: str
    kind: str
    severity: float
    seed: int
    n: int
    metrics: dict[str, float]
    level: int = 0
    family: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    correct: np.ndarray | None = None
    predictions: np.ndarray | None = None
    seconds: float = 0.0

    @classmethod
    def from_cell(cls, cell: Any, *, n: int, metrics: dict[str, float], **fields: Any) -> CellRecord:
        """The record of a planned :class:`~robustvision.bench.plan.Cell`: its identity plus what was measured.

        Args:
            cell: the planned cell (its key, config hash, names, kind, severity, level, family and seed are copied).
            n: how many images were evaluated.
            metrics: metric name -> value.
            **fields: the other fields (``params``, ``correct``, ``predictions``, ``seconds``).
        """
        return cls(
            cell_key=cell.key,
            config_hash=cell.config_hash,
            dataset=cell.dataset,
            model=cell.model,
            technique=cell.technique,
            noise=cell.noise,
            kind=cell.kind,
            severity=cell.severity,
            seed=cell.seed,
            n=n,
            metrics=metrics,
            level=cell.level,
            family=cell.family,
            **fields,
        )


def pack_correct(correct: np.ndarray) -> bytes:
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes()


def unpack_correct(blob: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8), count=n).astype(bool)


def normalize_url(url: str | Path | None, *, create: bool = True) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (a path means a SQLite file).

    ``postgresql://`` without a driver uses psycopg 3 (``postgresql+psycopg://``) when psycopg2 is not installed.
    With ``create=False`` a SQLite file that does not exist is an error (reading commands never create one).
    """
    text = str(url or default_store())
    if "://" not in text:
        path = Path(text).expanduser()
        if not create and not path.is_file():
            raise StoreError(f"results store file {str(path)!r} does not exist; run `robustvision bench` first")
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise StoreError(
                    f"cannot create results store {str(path)!r}: a parent of it is a file, not a folder"
                ) from None
            except OSError as err:
                raise StoreError(f"cannot create results store {str(path)!r}: {err.strerror or err}") from None
            if path.is_dir():
                raise StoreError(f"results store {str(path)!r} is a folder; pass a file path such as {path}/results.db")
        return f"sqlite:///{path}"
    if text.startswith(("postgresql://", "postgres://")):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            text = "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


def display_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class ResultsStore:
    """Read and write benchmark results in any SQLAlchemy database.

    Args:
        url: a SQLAlchemy URL or a file path (SQLite); default :func:`default_store`.
        create: create a missing SQLite file and missing tables. ``False`` for read-only commands: a missing file,
            or a database without the store's tables, is an error, and nothing is written to the database.
        connect_timeout: seconds to wait for a server before giving up (PostgreSQL).

    Raises:
        StoreError: the URL is malformed, the driver is missing or the database cannot be reached; one line.
    """

    def __init__(self, url: str | Path | None = None, *, create: bool = True, connect_timeout: int = 5) -> None:
        self.url = normalize_url(url, create=create)
        shown = display_url(self.url)
        kwargs: dict[str, Any] = {"future": True}
        try:
            backend = make_url(self.url).get_backend_name()
        except ArgumentError as err:
            raise StoreError(f"results store URL {str(url)!r} is not a valid SQLAlchemy URL: {err}") from None
        if backend == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": connect_timeout}
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as err:
            raise StoreError(f"cannot open results store {shown}: {_first_line(err)}") from None
        if backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas if create else _sqlite_read_pragmas)
        try:
            with self.engine.connect():
                pass
            if create:
                Base.metadata.create_all(self.engine)
                _add_capability_column(self.engine)
                missing = []
            else:
                missing = [t for t in STORE_TABLES if not inspect(self.engine).has_table(t)]
        except (DBAPIError, SQLAlchemyError, OSError) as err:
            self.engine.dispose()
            raise StoreError(f"cannot connect to results store {shown}: {_first_line(err)}") from None
        if missing:
            self.engine.dispose()
            raise StoreError(
                f"{shown} is not a robustvision results store (no {', '.join(missing)} table); "
                "pass the file `robustvision bench --store` wrote"
            )
        self.display_url = shown
        self._has_capability = any(c["name"] == "capability" for c in inspect(self.engine).get_columns("results"))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------------- writing
    def record_run(
        self,
        run_id: str,
        *,
        dataset: str,
        preset: str,
        config: dict[str, Any],
        config_hash: str,
        package_version: str,
        git_commit: str | None,
    ) -> None:
        """Record one invocation and its resolved config (idempotent per ``run_id``)."""
        with Session(self.engine) as s, s.begin():
            if s.get(RunRow, run_id) is None:
                s.add(
                    RunRow(
                        run_id=run_id,
                        dataset=dataset,
                        preset=preset,
                        config_json=json.dumps(config, sort_keys=True, default=str),
                        config_hash=config_hash,
                        package_version=package_version,
                        git_commit=git_commit,
                    )
                )

    def stored_cells(self, keys: Iterable[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
        """The ``(cell_key, config_hash)`` pairs already stored (all, or those among ``keys``)."""
        with Session(self.engine) as s:
            rows = s.execute(select(CellRow.cell_key, CellRow.config_hash)).all()
        have = {(r[0], r[1]) for r in rows}
        return have if keys is None else have & set(keys)

    def claim_cells(
        self, run_id: str, keys: Iterable[tuple[str, str]], stale_after: dt.timedelta = CLAIM_STALE_AFTER
    ) -> dict[tuple[str, str], str]:
        """Claim the cells ``run_id`` is about to compute; return those another live run has claimed (key -> run).

        The claim table's primary key decides races: of two runs claiming one cell, exactly one wins. Claims of a
        process of this machine that has ended, and claims not refreshed (:meth:`refresh_claims`) for
        ``stale_after``, are taken over.
        """
        keys = list(dict.fromkeys(keys))
        now = _now()
        owner = _claim_owner()
        try:
            with Session(self.engine) as s, s.begin():
                s.execute(delete(ClaimRow).where(ClaimRow.claimed_at < now - stale_after))
                owners = s.execute(select(ClaimRow.owner).distinct()).scalars().all()
                dead = [o for o in owners if o and o != owner and _owner_is_dead(o)]
                if dead:
                    s.execute(delete(ClaimRow).where(ClaimRow.owner.in_(dead)))
            for start in range(0, len(keys), 500):
                rows = [
                    {"cell_key": k, "config_hash": h, "run_id": run_id, "owner": owner, "claimed_at": now}
                    for k, h in keys[start : start + 500]
                ]
                self._insert_ignoring_conflicts(rows)
            with Session(self.engine) as s:
                rows = s.execute(select(ClaimRow.cell_key, ClaimRow.config_hash, ClaimRow.run_id)).all()
        except (DBAPIError, SQLAlchemyError) as err:
            raise StoreError(f"cannot write to results store {self.display_url}: {_first_line(err)}") from None
        wanted = set(keys)
        return {(k, h): r for k, h, r in rows if (k, h) in wanted and r != run_id}

    def _insert_ignoring_conflicts(self, rows: list[dict[str, Any]]) -> None:
        """``INSERT ... ON CONFLICT DO NOTHING`` of claim rows (SQLite and PostgreSQL; row by row elsewhere)."""
        if not rows:
            return
        dialect = self.engine.dialect.name
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            with Session(self.engine) as s, s.begin():
                s.execute(insert(ClaimRow).values(rows).on_conflict_do_nothing())
            return
        for row in rows:
            try:
                with Session(self.engine) as s, s.begin():
                    s.add(ClaimRow(**row))
            except IntegrityError:
                pass  # claimed by another run

    def refresh_claims(self, run_id: str) -> None:
        """Mark ``run_id``'s claims as still being worked on."""
        with Session(self.engine) as s, s.begin():
            s.execute(update(ClaimRow).where(ClaimRow.run_id == run_id).values(claimed_at=_now()))

    def release_claims(self, run_id: str) -> None:
        """Drop every claim of ``run_id`` (its run ended, finished or not)."""
        with Session(self.engine) as s, s.begin():
            s.execute(delete(ClaimRow).where(ClaimRow.run_id == run_id))

    def write_cell(self, run_id: str, rec: CellRecord) -> bool:
        """Store one cell, its metric rows and samples in one transaction.

        Returns:
            ``True`` when written, ``False`` when the cell was already stored with the same config hash.
        """
        now = _now()
        try:
            with Session(self.engine) as s, s.begin():
                exists = s.execute(
                    select(CellRow.id).where(CellRow.cell_key == rec.cell_key, CellRow.config_hash == rec.config_hash)
                ).first()
                if exists is not None:
                    return False
                cell = CellRow(
                    run_id=run_id,
                    cell_key=rec.cell_key,
                    config_hash=rec.config_hash,
                    dataset=rec.dataset,
                    model=rec.model,
                    technique=rec.technique,
                    noise=rec.noise,
                    kind=rec.kind,
                    severity=float(rec.severity),
                    level=int(rec.level),
                    family=rec.family,
                    n=int(rec.n),
                    seed=int(rec.seed),
                    params_json=json.dumps(rec.params, sort_keys=True, default=str),
                    seconds=float(rec.seconds),
                    created_at=now,
                )
                s.add(cell)
                s.flush()
                for metric, value in rec.metrics.items():
                    s.add(
                        ResultRow(
                            run_id=run_id,
                            dataset=rec.dataset,
                            model=rec.model,
                            technique=rec.technique,
                            noise=rec.noise,
                            kind=rec.kind,
                            severity=float(rec.severity),
                            metric=metric,
                            value=float(value),
                            n=int(rec.n),
                            seed=int(rec.seed),
                            config_hash=rec.config_hash,
                            created_at=now,
                            capability=BENCHMARK,
                        )
                    )
                s.execute(
                    delete(ClaimRow).where(ClaimRow.cell_key == rec.cell_key, ClaimRow.config_hash == rec.config_hash)
                )
                if rec.correct is not None:
                    preds = np.asarray(
                        rec.predictions if rec.predictions is not None else np.zeros(len(rec.correct)), dtype="<i4"
                    )
                    s.add(
                        SampleRow(
                            cell_id=cell.id,
                            n=len(rec.correct),
                            correct=pack_correct(rec.correct),
                            predictions=preds.tobytes(),
                        )
                    )
        except IntegrityError:
            return False  # another writer stored the same cell first
        except (DBAPIError, SQLAlchemyError) as err:
            raise StoreError(f"cannot write to results store {self.display_url}: {_first_line(err)}") from None
        return True

    def write_results(
        self,
        capability: str,
        rows: Sequence[Any],
        *,
        config: dict[str, Any],
        dataset: str | None = None,
        run_id: str | None = None,
    ) -> int:
        """Store the result rows of one run of a capability other than the benchmark, in one transaction.

        Args:
            capability: ``defend``, ``das``, ``iseg`` or ``adapt`` (:data:`~robustvision.bench.capabilities.
                CAPABILITIES`).
            rows: :class:`~robustvision.bench.capabilities.Result` rows.
            config: the run's resolved settings (JSON-serialisable); their hash identifies the run, so the same run
                stored twice keeps the first rows.
            dataset: the data set recorded for the run (default: the first row's).
            run_id: the run's id (default: a new one).

        Returns:
            How many rows were written (0 when the same rows with the same config were stored before).

        Raises:
            ValueError: an unknown capability (close names suggested), or no rows.
            StoreError: the store cannot be written.
        """
        import robustvision
        from robustvision.bench.capabilities import check_capability
        from robustvision.runtime import git_commit

        check_capability(capability, writable=True)
        if not rows:
            raise ValueError(f"no {capability} results to store")
        payload = {"capability": capability, **config}
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        run_id = run_id or dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        now = _now()
        try:
            with Session(self.engine) as s, s.begin():
                have = set(
                    s.execute(
                        select(
                            ResultRow.dataset, ResultRow.model, ResultRow.technique, ResultRow.noise,
                            ResultRow.severity, ResultRow.metric,
                        ).where(ResultRow.config_hash == digest)
                    ).all()
                )  # fmt: skip
                new = []
                for r in rows:
                    key = (r.dataset, r.model, r.technique, r.noise, float(r.severity), r.metric)
                    if key not in have:
                        have.add(key)
                        new.append(r)
                if not new:
                    return 0
                if s.get(RunRow, run_id) is None:
                    s.add(
                        RunRow(
                            run_id=run_id,
                            dataset=dataset or rows[0].dataset,
                            preset=capability,
                            config_json=json.dumps(payload, sort_keys=True, default=str),
                            config_hash=digest,
                            package_version=robustvision.__version__,
                            git_commit=git_commit(),
                        )
                    )
                for r in new:
                    s.add(
                        ResultRow(
                            run_id=run_id,
                            dataset=r.dataset,
                            model=r.model,
                            technique=r.technique,
                            noise=r.noise,
                            kind=r.kind,
                            severity=float(r.severity),
                            metric=r.metric,
                            value=float(r.value),
                            n=int(r.n),
                            seed=int(r.seed),
                            config_hash=digest,
                            created_at=now,
                            capability=capability,
                        )
                    )
        except IntegrityError:
            return 0  # another writer stored the same run's rows first
        except (DBAPIError, SQLAlchemyError) as err:
            raise StoreError(f"cannot write to results store {self.display_url}: {_first_line(err)}") from None
        return len(new)

    # ------------------------------------------------------------------------------------------------- reading
    def results(
        self, run_id: str | None = None, dataset: str | None = None, capability: str | None = None
    ) -> pd.DataFrame:
        """Result rows (all, or of one run, data set or capability) as a DataFrame with :data:`RESULT_COLUMNS`."""
        cols = [getattr(ResultRow, c) for c in RESULT_COLUMNS[:-1]]
        stored = ResultRow.capability if self._has_capability else literal(BENCHMARK)  # not migrated: all bench
        q = select(*cols, stored.label("capability"))
        if run_id:
            q = q.where(ResultRow.run_id == run_id)
        if dataset:
            q = q.where(ResultRow.dataset == dataset)
        if capability:
            q = q.where(stored == capability)
        with self.engine.connect() as conn:
            df = pd.DataFrame(conn.execute(q.order_by(ResultRow.id)).all(), columns=RESULT_COLUMNS)
        return df

    def cells(self, run_id: str | None = None, dataset: str | None = None) -> pd.DataFrame:
        """All cell rows as a DataFrame (one row per stored cell)."""
        cols = [c.name for c in CellRow.__table__.columns]
        q = select(CellRow)
        if run_id:
            q = q.where(CellRow.run_id == run_id)
        if dataset:
            q = q.where(CellRow.dataset == dataset)
        with Session(self.engine) as s:
            rows = s.execute(q.order_by(CellRow.id)).scalars().all()
            data = [{c: getattr(r, c) for c in cols} for r in rows]
        return pd.DataFrame(data, columns=cols)

    def samples(self, cell_ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{cell_id: (correct bool array, predictions int array)}`` for the given cells."""
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        ids = [int(i) for i in cell_ids]
        with Session(self.engine) as s:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for row in s.execute(select(SampleRow).where(SampleRow.cell_id.in_(chunk))).scalars():
                    out[row.cell_id] = (
                        unpack_correct(row.correct, row.n),
                        np.frombuffer(row.predictions, dtype="<i4").astype(np.int64),
                    )
        return out

    def runs(self) -> pd.DataFrame:
        cols = ["run_id", "created_at", "dataset", "preset", "config_hash", "package_version", "git_commit"]
        with self.engine.connect() as conn:
            rows = conn.execute(select(*[getattr(RunRow, c) for c in cols]).order_by(RunRow.created_at)).all()
        return pd.DataFrame(rows, columns=cols)

    def run_config(self, run_id: str) -> dict[str, Any]:
        with Session(self.engine) as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise ValueError(f"no run {run_id!r} in the results store {self.display_url}")
            return json.loads(row.config_json)

    def export(self, path: str | Path, fmt: str | None = None, run_id: str | None = None) -> Path:
        """Write the result rows to CSV or Parquet (format from ``fmt`` or the file suffix)."""
        path = Path(path)
        fmt = (fmt or path.suffix.lstrip(".") or "csv").lower()
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"export format must be csv or parquet, got {fmt!r}")
        df = self.results(run_id=run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            require_extra("pyarrow", "bench")
            df.to_parquet(path, index=False)
        return path


def _add_capability_column(engine: Engine) -> None:
    """Migrate a store written before results had a ``capability``: add it, every existing row a bench row."""
    if any(c["name"] == "capability" for c in inspect(engine).get_columns("results")):
        return
    try:
        with engine.begin() as conn:
            conn.execute(
                sql_text(f"ALTER TABLE results ADD COLUMN capability VARCHAR(32) NOT NULL DEFAULT '{BENCHMARK}'")
            )
    except (DBAPIError, SQLAlchemyError):
        # another process migrated the store at the same moment: fine when the column is there now
        if not any(c["name"] == "capability" for c in inspect(engine).get_columns("results")):
            raise


def _sqlite_read_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # no journal_mode change: it is written into the file, and a reading command never writes
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets a report read while a bench writes; a busy timeout rides out the writer's short transactions.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # in-memory databases answer "memory" and keep their journal
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
