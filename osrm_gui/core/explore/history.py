"""Run history: every scored merge point in an SQLite file next to the workspace,
so sweeps survive restarts, resume without recomputing, and compare across sessions.

A point's ``key`` hashes everything its scores depend on (base, adapters' contents,
tasks' data, split, example limit, method, parameters, coefficients, λ, seed), so a
lookup by key is a safe cache hit. One connection per call keeps the file usable
from any thread.

Beside it (``NAME.singles.sqlite``), the predictions of each adapter alone on its task's
evaluation examples, so a later launch shows the reference scores without computing them.
They are a cache, kept in a file of their own: a table added to the history itself would
make every older osrm-gui take the history for a foreign database.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.tables import rows_to_csv

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS points (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    created REAL NOT NULL,
    kind TEXT NOT NULL,
    method TEXT NOT NULL,
    params TEXT NOT NULL,
    lam REAL NOT NULL,
    coefficients TEXT NOT NULL,
    seed INTEGER NOT NULL,
    adapters TEXT NOT NULL,
    adapter_hashes TEXT NOT NULL,
    split TEXT NOT NULL,
    example_limit INTEGER,
    scores TEXT NOT NULL,
    average REAL,
    label TEXT
);
CREATE INDEX IF NOT EXISTS points_key ON points (key);
"""
SINGLES_SCHEMA_VERSION = 1
_SINGLES_SCHEMA = """
CREATE TABLE IF NOT EXISTS single_predictions (
    identity TEXT PRIMARY KEY,
    created REAL NOT NULL,
    task TEXT NOT NULL,
    adapter_hash TEXT NOT NULL,
    examples INTEGER NOT NULL,
    predictions TEXT NOT NULL
);
"""
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDECARS = ("-journal", "-wal", "-shm")
_FRESH_START = "move it aside or delete it to start a fresh history"


class HistoryDamaged(OsrmError):
    """The file is damaged, or is not a run history at all: only setting it aside helps."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}; {_FRESH_START}")
        self.path, self.problem = Path(path), problem

    def __reduce__(self):  # copied or pickled, it is rebuilt from both parts, not from the message
        return type(self), (self.path, self.problem)


def default_history_path() -> Path:
    """The per-user history, used when no workspace file names one."""
    override = os.environ.get("OSRM_GUI_DATA")
    if override:
        return Path(override) / "history.sqlite"
    from platformdirs import user_data_dir

    return Path(user_data_dir("osrm-gui", appauthor=False)) / "history.sqlite"


def history_path_for(workspace_file: str | Path) -> Path:
    path = Path(workspace_file)
    return path.with_name(path.stem + ".history.sqlite")


@dataclass
class HistoryPoint:
    method: str
    params: dict
    lam: float
    coefficients: list[float]
    seed: int
    adapters: list[str]  # display names, in merge order
    adapter_hashes: list[str]
    split: str
    limit: int | None  # the fidelity, examples per task scored: a sweep's first N, or a search trial's N of a seeded subset; None: all
    scores: dict[str, float]  # task -> its metric
    kind: str = "preview"  # "preview" (a subset of each task) or "full"
    label: str | None = None  # e.g. the sweep that produced it
    created: float = field(default_factory=time.time)
    key: str = ""
    id: int | None = None
    reused: bool = False  # found in the history rather than computed now (not stored)

    @property
    def average(self) -> float:
        values = list(self.scores.values())
        return sum(values) / len(values) if values else float("nan")

    def row(self) -> dict:
        """A flat record for CSV: one column per adapter coefficient and per task."""
        out = {
            "id": self.id, "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created)), "kind": self.kind,
            "method": self.method, "params": json.dumps(self.params, sort_keys=True), "lambda": self.lam, "seed": self.seed,
            "split": self.split, "limit": self.limit, "label": self.label or "",
        }
        out.update({f"c[{name}]": c for name, c in zip(self.adapters, self.coefficients)})
        out.update(self.scores)
        out["average"] = self.average
        out["adapter_hashes"] = " ".join(self.adapter_hashes)
        return out


def point_key(context: dict, method: str, params: dict, lam: float, coefficients: list[float], seed: int, split: str, limit: int | None) -> str:
    """``context``: what identifies the models, the data and how they are evaluated (see
    ``sweep.workspace_context``); the rest is the merge, resolved: every parameter, defaults included."""
    identity = {
        "context": context, "method": method, "params": params, "lam": round(float(lam), 9),
        "coefficients": [round(float(c), 9) for c in coefficients], "seed": int(seed), "split": split, "limit": limit,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class History:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Judged read-only first: a file that is not ours is refused exactly as it was found.
        if check_history(self.path) < SCHEMA_VERSION:
            self._initialise()

    def _initialise(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OsrmError(f"{self.path}: cannot create the run history ({exc.strerror})") from None
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _connect(self):
        """A connection committed on success, rolled back on error, and always closed
        (sqlite3's own context manager leaves it open); SQLite's errors as one line."""
        try:
            conn = sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as exc:
            raise OsrmError(f"{self.path}: cannot open the run history ({exc})") from None
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
        except sqlite3.DatabaseError as exc:
            raise _one_line(self.path, exc) from None
        finally:
            conn.close()

    def record(self, point: HistoryPoint) -> HistoryPoint:
        return self.record_all([point])[0]

    def record_all(self, points: list[HistoryPoint]) -> list[HistoryPoint]:
        """Insert ``points`` in one transaction; each gets its new id."""
        with self._connect() as conn:
            for point in points:
                cursor = conn.execute(
                    "INSERT INTO points (key, created, kind, method, params, lam, coefficients, seed, adapters, adapter_hashes,"
                    " split, example_limit, scores, average, label) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        point.key, point.created, point.kind, point.method, json.dumps(point.params, sort_keys=True), point.lam,
                        json.dumps(point.coefficients), point.seed, json.dumps(point.adapters), json.dumps(point.adapter_hashes),
                        point.split, point.limit, json.dumps(point.scores), point.average, point.label,
                    ),
                )
                point.id = cursor.lastrowid
        return points

    def find(self, key: str) -> HistoryPoint | None:
        """The latest point recorded under ``key``."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM points WHERE key = ? ORDER BY id DESC LIMIT 1", (key,)).fetchone()
        return _from_row(row) if row else None

    def points(self, adapter_hashes: list[str] | None = None, kind: str | None = None) -> list[HistoryPoint]:
        """Every point, oldest first; optionally only those of one adapter set or one kind."""
        query, args = "SELECT * FROM points", []
        clauses = []
        if adapter_hashes is not None:
            clauses.append("adapter_hashes = ?")
            args.append(json.dumps(adapter_hashes))
        if kind is not None:
            clauses.append("kind = ?")
            args.append(kind)
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        return [_from_row(r) for r in rows]

    def __len__(self) -> int:
        with self._connect() as conn:
            return conn.execute("SELECT COUNT(*) FROM points").fetchone()[0]

    def copy_to(self, other: "History") -> None:
        """Every point of this history, and its adapters' predictions alone, into ``other`` (used when a
        workspace is first saved)."""
        if other.path.resolve() == self.path.resolve():
            return
        other.record_all(self.points())
        other.record_singles([(row["identity"], row["task"], row["adapter_hash"], json.loads(row["predictions"])) for row in self._single_rows()])

    # -- each adapter alone: a cache of its predictions ------------------------------------
    @property
    def singles_path(self) -> Path:
        return self.path.with_name(self.path.stem + ".singles.sqlite")

    def single_predictions(self, identities: list[str]) -> dict[str, list]:
        """identity -> the longest prefix of predictions recorded under it (see ``MergeSession.single_identity``),
        in the evaluation split's order; those never stored are missing, and all are when the file is
        unusable (a cache: the scores are then computed again)."""
        marks = ",".join("?" * len(identities))
        rows = self._single_rows(f"WHERE identity IN ({marks})", tuple(identities)) if identities else []
        return {row["identity"]: json.loads(row["predictions"]) for row in rows}

    def record_singles(self, rows: list[tuple[str, str, str, list]]) -> None:
        """Keep each ``(identity, task, adapter hash, predictions)`` in one transaction, unless a longer
        prefix is kept under its identity already; an unusable file is left alone."""
        if not rows or not self._singles_usable():
            return
        try:
            with closing(sqlite3.connect(self.singles_path, timeout=10)) as conn, conn:
                conn.executescript(_SINGLES_SCHEMA)
                conn.execute(f"PRAGMA user_version = {SINGLES_SCHEMA_VERSION}")
                conn.executemany(
                    "INSERT INTO single_predictions (identity, created, task, adapter_hash, examples, predictions) VALUES (?,?,?,?,?,?)"
                    " ON CONFLICT (identity) DO UPDATE SET created = excluded.created, examples = excluded.examples,"
                    " predictions = excluded.predictions WHERE excluded.examples > single_predictions.examples",
                    [(identity, time.time(), task, adapter_hash, len(predictions), json.dumps(predictions))
                     for identity, task, adapter_hash, predictions in rows],
                )
        except (sqlite3.Error, OSError):
            return  # locked, full disk, read-only folder: the next launch computes them again

    def _single_rows(self, where: str = "", args: tuple = ()) -> list[sqlite3.Row]:
        if not self.singles_path.is_file() or not self._singles_usable():
            return []
        try:
            with closing(sqlite3.connect(self.singles_path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10)) as conn:
                conn.row_factory = sqlite3.Row
                return conn.execute(f"SELECT * FROM single_predictions {where}", args).fetchall()
        except sqlite3.Error:
            return []

    def _singles_usable(self) -> bool:
        """Missing, empty, or ours: a foreign, newer or damaged file is neither read nor written."""
        path = self.singles_path
        try:
            if not _has_sqlite_header(path):
                return not path.exists() or path.stat().st_size == 0
            with closing(sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10)) as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                columns = {row[1] for row in conn.execute("PRAGMA table_info(single_predictions)")}
            # version 0 with our table or none: a store whose first write was cut short
            return version in (0, SINGLES_SCHEMA_VERSION) and tables <= {"single_predictions"} and columns in (set(), _single_columns())
        except (HistoryDamaged, sqlite3.Error, OSError):
            return False


def check_history(path: str | Path) -> int:
    """The schema version of the run history at ``path`` (0: nothing there yet), found without
    writing to the file. HistoryDamaged when it is damaged or not a run history; OsrmError when
    a newer osrm-gui wrote it or it cannot be read."""
    path = Path(path)
    try:
        if not _has_sqlite_header(path):
            return 0
        try:
            return _inspect(path, path)
        except sqlite3.OperationalError:
            if not _sidecar(path, "-journal").is_file():
                raise
        return _inspect_rolled_back(path)
    except sqlite3.DatabaseError as exc:
        raise _one_line(path, exc) from None
    except OSError as exc:
        raise OsrmError(f"{path}: cannot open the run history ({exc.strerror})") from None


def _has_sqlite_header(path: Path) -> bool:
    """False for a missing or empty file (a new history); HistoryDamaged for anything but a
    rollback-journal SQLite database, which every history is (opening a write-ahead-log one,
    even read-only, would leave files next to it)."""
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except FileNotFoundError:
        return False
    if not header:
        return False
    if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
        raise HistoryDamaged(path, "not a run-history database (not an SQLite file)")
    if header[18] == 2:
        raise HistoryDamaged(path, "not a run-history database (a write-ahead-log SQLite file)")
    return True


def _inspect(file: Path, shown: Path) -> int:
    """Judge ``file`` read-only, naming ``shown`` in errors: its schema first, then every page."""
    uri = file.resolve().as_uri() + "?mode=ro"
    with closing(sqlite3.connect(uri, uri=True, timeout=10)) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in conn.execute("PRAGMA table_info(points)")}
        if not tables and version == 0:
            return 0  # an empty database: nothing in it to lose
        _check_schema(shown, version, tables, columns)
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(problems[0])
    return version


def _check_schema(path: Path, version: int, tables: set[str], columns: set[str]) -> None:
    ours = _history_columns()
    if version > SCHEMA_VERSION and ours <= columns:
        raise OsrmError(f"{path}: run history written by a newer osrm-gui (schema {version}, this one reads {SCHEMA_VERSION});"
                        " open it with that version, or use another history file")
    others = sorted(t for t in tables if t != "points" and not t.startswith("sqlite_"))  # sqlite_*: SQLite's own
    if others or "points" not in tables:
        raise HistoryDamaged(path, f"not a run-history database (its tables: {', '.join(sorted(tables))})")
    if columns != ours:
        raise HistoryDamaged(path, "not a run-history database (its points table has other columns)")
    if version not in (0, SCHEMA_VERSION):
        raise HistoryDamaged(path, f"not a run-history database (schema version {version})")


def _single_columns() -> set[str]:
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(_SINGLES_SCHEMA)
        return {row[1] for row in conn.execute("PRAGMA table_info(single_predictions)")}


def _history_columns() -> set[str]:
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(_SCHEMA)
        return {row[1] for row in conn.execute("PRAGMA table_info(points)")}


def _inspect_rolled_back(path: Path) -> int:
    """An interrupted write left a journal that only a writer may roll back: judge a rolled-back
    copy, so a crash does not make a good history look damaged, and the file stays untouched."""
    with tempfile.TemporaryDirectory(prefix="osrm-history-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(_sidecar(path, "-journal"), _sidecar(copy, "-journal"))
        with closing(sqlite3.connect(copy)) as conn:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the first read rolls back
        return _inspect(copy, path)


def _one_line(path: Path, exc: sqlite3.DatabaseError) -> Exception:
    """SQLite's error as the user should read it."""
    # OperationalError is a lock, a full disk, a permission: the file itself may be fine.
    if isinstance(exc, sqlite3.OperationalError):
        return OsrmError(f"{path}: cannot use the run history ({exc})")
    # SQLite reports a malformed or foreign file as the base class; its subclasses (a broken
    # constraint, a misused API) are bugs here, and keep their traceback.
    if type(exc) is sqlite3.DatabaseError:
        return HistoryDamaged(path, f"the run history is damaged ({exc})")
    return exc


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def set_aside(path: str | Path) -> Path:
    """Rename a damaged history (and SQLite's files beside it) to ``NAME.damaged-YYYYmmdd-HHMMSS``,
    so a fresh one can start at ``path``; the new name of the file."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.damaged-{stamp}"), 1
    while target.exists():  # two in one second: rename never replaces
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    # the journal goes too: left behind, SQLite would replay it into the fresh file
    for suffix in _SIDECARS:
        if _sidecar(path, suffix).exists():
            _sidecar(path, suffix).rename(_sidecar(target, suffix))
    path.rename(target)
    return target


def to_csv(points: list[HistoryPoint]) -> str:
    return rows_to_csv([p.row() for p in points])


def _from_row(row: sqlite3.Row) -> HistoryPoint:
    return HistoryPoint(
        method=row["method"], params=json.loads(row["params"]), lam=row["lam"], coefficients=json.loads(row["coefficients"]),
        seed=row["seed"], adapters=json.loads(row["adapters"]), adapter_hashes=json.loads(row["adapter_hashes"]),
        split=row["split"], limit=row["example_limit"], scores=json.loads(row["scores"]), kind=row["kind"],
        label=row["label"], created=row["created"], key=row["key"], id=row["id"],
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on each)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((ox >= x and oy >= y) and (ox > x or oy > y) for ox, oy in points)
        if not dominated:
            front.append(i)
    return front
