"""The run history refuses any file that is not a healthy history of ours without writing to it,
in one line that says what to do; a point's key covers everything its score depends on."""

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.history import History, HistoryDamaged, HistoryPoint, check_history, point_key, set_aside
from osrm_gui.core.explore.sweep import LAMBDA, Axis, run_sweep, workspace_context
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace

FRESH_START = "move it aside or delete it to start a fresh history"


def _point(i: int) -> HistoryPoint:
    return HistoryPoint("task_arithmetic", {}, 1.0, [1.0, 0.5 + i], 0, ["a", "b"], ["ha", "hb"], "test", 10,
                        {"t": 0.5}, key=f"key-{i}", label="x" * 200)


def write_history(path: Path, points: int = 3) -> Path:
    History(path).record_all([_point(i) for i in range(points)])
    return path


def sql(path: Path, *statements: str) -> Path:
    with closing(sqlite3.connect(path)) as conn, conn:  # closed: no journal or -wal file stays beside it
        for statement in statements:
            conn.execute(statement)
    return path


def foreign(path: Path) -> Path:
    return sql(path, "CREATE TABLE users (name TEXT, email TEXT)", "INSERT INTO users VALUES ('ada', 'ada@example.org')")


def other_points_table(path: Path) -> Path:
    return sql(path, "CREATE TABLE points (x REAL, y REAL)", "INSERT INTO points VALUES (1.0, 2.0)")


def newer(path: Path) -> Path:
    return sql(write_history(path), "PRAGMA user_version = 99")


def damaged(path: Path) -> Path:
    """A history whose pages after the first (the schema) are garbage."""
    write_history(path, points=200)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 3 * page
    data[page:] = bytes((i * 151 + 7) % 256 for i in range(len(data) - page))
    path.write_bytes(bytes(data))
    return path


def not_sqlite(path: Path) -> Path:
    path.write_text("not sqlite at all\n" * 100)
    return path


def write_ahead_log(path: Path) -> Path:
    return sql(path, "PRAGMA journal_mode = wal", "CREATE TABLE t (x)")


UNUSABLE = {
    "foreign": (foreign, "not a run-history database (its tables: users)"),
    "other points table": (other_points_table, "not a run-history database (its points table has other columns)"),
    "damaged": (damaged, "the run history is damaged"),
    "not sqlite": (not_sqlite, "not a run-history database (not an SQLite file)"),
    "write-ahead log": (write_ahead_log, "not a run-history database (a write-ahead-log SQLite file)"),
}
REFUSED = {**UNUSABLE, "newer": (newer, "run history written by a newer osrm-gui (schema 99, this one reads 1)")}


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(params=sorted(REFUSED))
def refused(request, tmp_path):
    """(path, expected problem, whether setting it aside helps), in a folder of its own."""
    make, problem = REFUSED[request.param]
    folder = tmp_path / "h"
    folder.mkdir()
    return make(folder / "runs.sqlite"), problem, request.param in UNUSABLE


def test_a_file_that_is_not_a_healthy_history_is_refused_in_one_line_untouched(refused):
    path, problem, unusable = refused
    before = snapshot(path.parent)
    with pytest.raises(OsrmError) as caught:
        History(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {problem}") and "\n" not in message
    assert isinstance(caught.value, HistoryDamaged) == unusable
    assert message.endswith(FRESH_START) == unusable
    assert snapshot(path.parent) == before  # the same bytes, and no journal or -wal/-shm left beside it
    with pytest.raises(OsrmError):
        check_history(path)
    assert snapshot(path.parent) == before


def test_damage_found_after_opening_is_one_line_too(tmp_path):
    path = write_history(tmp_path / "runs.sqlite", points=200)
    history = History(path)
    damaged(path)
    with pytest.raises(HistoryDamaged, match=f"^{path}: the run history is damaged .*; {FRESH_START}$"):
        history.points()


@pytest.mark.parametrize("make", [lambda p: p.touch(), lambda p: sql(p), lambda p: None],
                         ids=["empty file", "empty database", "no file"])
def test_new_and_empty_files_become_histories(tmp_path, make):
    path = tmp_path / "new" / "runs.sqlite"
    path.parent.mkdir()
    make(path)
    history = History(path)
    history.record(_point(0))
    assert len(History(path)) == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_opening_a_healthy_history_writes_nothing(tmp_path):
    path = write_history(tmp_path / "runs.sqlite")
    before = path.read_bytes()
    assert len(History(path)) == 3
    assert path.read_bytes() == before


INTERRUPTED_WRITE = """
import os, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")  # spill pages to the file mid-transaction
conn.execute("BEGIN")
for i in range(3000):
    conn.execute("INSERT INTO points (key, created, kind, method, params, lam, coefficients, seed, adapters, adapter_hashes,"
                 " split, scores) VALUES (?, 0, 'preview', 'm', '{}', 1, '[]', 0, '[]', '[]', 'test', '{}')", ("k" * 200,))
os._exit(9)  # killed mid-write: the journal stays
"""


def test_a_history_left_by_a_killed_writer_is_not_taken_for_damaged(tmp_path):
    path = write_history(tmp_path / "runs.sqlite")
    subprocess.run([sys.executable, "-c", INTERRUPTED_WRITE, str(path)], check=False)
    assert Path(f"{path}-journal").is_file()
    assert check_history(path) == 1
    assert [p.key for p in History(path).points()] == ["key-0", "key-1", "key-2"]  # the write is rolled back


def test_set_aside_moves_the_file_and_its_journal_and_a_fresh_history_starts(tmp_path):
    path = damaged(tmp_path / "runs.sqlite")
    Path(f"{path}-journal").write_bytes(b"stale")
    contents = path.read_bytes()
    moved = set_aside(path)
    assert moved.parent == tmp_path and moved.name.startswith("runs.sqlite.damaged-")
    assert moved.read_bytes() == contents and Path(f"{moved}-journal").read_bytes() == b"stale"
    assert not path.exists() and not Path(f"{path}-journal").exists()
    again = set_aside(damaged(path))  # a second one in the same second keeps the first
    assert again != moved and moved.exists() and again.exists()
    assert len(History(path)) == 0


# -- what a point's key depends on -------------------------------------------------------

KEY_ARGS = {"context": {"base": "b"}, "method": "ties", "params": {"density": 0.5}, "lam": 1.0, "coefficients": [1.0, 0.5],
            "seed": 0, "split": "test", "limit": 10}


@pytest.mark.parametrize("change", [
    {"context": {"base": "c"}}, {"method": "dare_ties"}, {"params": {"density": 0.4}}, {"lam": 0.9},
    {"coefficients": [1.0, 0.6]}, {"coefficients": [0.5, 1.0]}, {"seed": 1}, {"split": "validation"}, {"limit": 11},
    {"limit": None},
], ids=str)
def test_each_part_of_a_point_changes_its_key(change):
    assert point_key(**{**KEY_ARGS, **change}) != point_key(**KEY_ARGS)


def _fake_workspace():
    task = SimpleNamespace(name="t", metric="accuracy", content_hash=lambda: "data-1")
    adapter = SimpleNamespace(content_hash="adapter-1")
    base = SimpleNamespace(fingerprint="base-1", dtype="torch.float32")
    return SimpleNamespace(base=base, adapters=[adapter], tasks=[task], pairs={"t": adapter}, feature_samples=100)


@pytest.mark.parametrize("change", [
    lambda ws: setattr(ws.base, "fingerprint", "base-2"),
    lambda ws: setattr(ws.base, "dtype", "torch.bfloat16"),
    lambda ws: setattr(ws.adapters[0], "content_hash", "adapter-2"),  # weights, or (soon) its config's lora_alpha
    lambda ws: setattr(ws.tasks[0], "content_hash", lambda: "data-2"),
    lambda ws: setattr(ws.tasks[0], "metric", "f1"),
    lambda ws: setattr(ws, "pairs", {"t": SimpleNamespace(content_hash="head-2")}),
    lambda ws: setattr(ws, "feature_samples", 50),
    lambda ws: setattr(ws, "batch_size", 7),  # read from the workspace as soon as it has them
    lambda ws: setattr(ws, "max_length", 32),
], ids=["base", "dtype", "adapter", "task data", "metric", "head", "feature samples", "batch size", "max length"])
def test_each_part_of_the_workspace_changes_the_context(change):
    ws = _fake_workspace()
    before = workspace_context(ws)
    change(ws)
    assert workspace_context(ws) != before


def test_the_context_records_the_evaluation_settings_scores_use():
    assert workspace_context(_fake_workspace())["evaluation"] == {"batch_size": 64, "max_length": 128}


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def test_keys_hold_resolved_parameters_so_defaults_spelled_out_hit(ws, tmp_path):
    history = History(tmp_path / "runs.sqlite")
    axes = [Axis(LAMBDA, (1.0,))]
    run_to_end(run_sweep(ws, MergeSpec("ties"), axes, limit=10, history=history))
    density = history.points()[0].params["density"]
    again = run_to_end(run_sweep(ws, MergeSpec("ties", params={"density": density}), axes, limit=10, history=history))
    assert again.points[0].reused and len(history) == 1


@pytest.mark.parametrize("methods, spec", [
    (["task_arithmetic", "nosuch"], MergeSpec()),
    (["task_arithmetic", "ties"], MergeSpec("ties", params={"density": 7})),  # the second method's parameters
    (["task_arithmetic"], MergeSpec(coefficients=[2e6, 1.0])),
])
def test_a_sweep_refuses_every_method_before_scoring_any_point(ws, tmp_path, methods, spec):
    history = History(tmp_path / "runs.sqlite")
    with pytest.raises(OsrmError):
        run_sweep(ws, spec, [Axis(LAMBDA, (0.0, 1.0))], limit=10, methods=methods, history=history)
    assert len(history) == 0


@pytest.mark.parametrize("values", [(0.0, float("nan")), (float("inf"),), (0.0, 2e6)])
def test_a_sweep_refuses_values_that_are_not_finite_or_too_large(ws, values):
    with pytest.raises(OsrmError, match="expected a finite number"):
        run_sweep(ws, MergeSpec(), [Axis("colour", values)])
