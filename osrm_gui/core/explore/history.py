"""Run history: every scored merge point in an SQLite file next to the workspace,
so sweeps survive restarts, resume without recomputing, and compare across sessions.

A point's ``key`` hashes everything its scores depend on (base, adapters' contents,
tasks' data, split, example limit, method, parameters, coefficients, λ, seed), so a
lookup by key is a safe cache hit. One connection per call keeps the file usable
from any thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from contextlib import contextmanager
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
    limit: int | None
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
    """``context``: what identifies the models and data (base fingerprint, adapter and task hashes)."""
    identity = {
        "context": context, "method": method, "params": params, "lam": round(float(lam), 9),
        "coefficients": [round(float(c), 9) for c in coefficients], "seed": int(seed), "split": split, "limit": limit,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class History:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.executescript(_SCHEMA)
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise OsrmError(f"{self.path}: run history written by a newer osrm-gui (schema {version})")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise OsrmError(f"{self.path}: not a run-history database ({exc})") from None
        except OSError as exc:
            raise OsrmError(f"{self.path}: cannot open the run history ({exc.strerror})") from None

    @contextmanager
    def _connect(self):
        """A connection committed on success, rolled back on error, and always closed
        (sqlite3's own context manager leaves it open)."""
        conn = sqlite3.connect(self.path, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            with conn:
                yield conn
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
        """Every point of this history into ``other`` (used when a workspace is first saved)."""
        if other.path.resolve() == self.path.resolve():
            return
        other.record_all(self.points())


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
