"""``osrm history`` and ``osrm sweep`` refuse bad input in one line, before any work and without
writing anything: not to the run history, not to the CSV."""

import pytest

from tests.cli_support import one_error_line, run
from osrm_gui.core.explore.history import History
from tests.core.test_history_robustness import REFUSED, snapshot, write_history


@pytest.mark.parametrize("case", sorted(REFUSED))
@pytest.mark.parametrize("command", ["history", "sweep"])
def test_a_bad_history_file_is_one_line_and_left_as_it_was(capsys, tmp_path, tiny_base_dir, tiny_adapters, case, command):
    make, problem = REFUSED[case]
    path = make(tmp_path / "runs.sqlite")
    before = snapshot(tmp_path)
    argv = ["history"] if command == "history" else ["sweep", "--base", tiny_base_dir, *tiny_adapters, "--limit", "10"]
    code, out, err = run(capsys, *argv, "--history", path)
    assert code == 2 and out == ""
    assert one_error_line(err).startswith(f"osrm: error: {path}: {problem}")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("last", ["0", "-1", "x"])
def test_history_last_must_be_a_positive_number(capsys, tmp_path, last):
    path = write_history(tmp_path / "runs.sqlite")
    code, out, err = run(capsys, "history", "--history", path, "--last", last)
    assert code == 2 and out == ""
    assert one_error_line(err).startswith("osrm history: error: argument --last: ")


def test_history_last_shows_the_last_points(capsys, tmp_path):
    path = write_history(tmp_path / "runs.sqlite")
    code, out, err = run(capsys, "history", "--history", path, "--last", "1")
    assert code == 0, err
    assert f"{path}: 3 points" in out and len(out.strip().splitlines()) == 4  # the count, a header, a rule, one row


def test_history_without_a_history_is_one_line(capsys):
    code, _, err = run(capsys, "history", "--no-history")
    assert code == 2 and one_error_line(err).startswith("osrm: error: --no-history: ")


@pytest.mark.parametrize("options, named", [
    (["--methods", "ties,nosuch"], "--methods 'ties,nosuch': unknown merge method 'nosuch'"),
    (["--methods", "ties,ties"], "--methods 'ties,ties': a method is named twice"),
    (["--axis", "lambda=0:nan:3"], "sweep axis 'lambda=0:nan:3': end 'nan'"),
    (["--axis", "lambda=1,inf"], "sweep axis 'lambda=1,inf': value 'inf'"),
    (["--axis", "colour=0,2e6"], "sweep axis 'colour=0,2e6': value '2e6'"),
    (["--axis", "lambda=0:1:1"], "sweep axis 'lambda=0:1:1': a sweep needs 2 to"),
    (["--from", "nan"], "argument --from: 'nan' is not a finite number"),  # argparse's own
    (["--to=-3e6"], "--to -3000000.0: expected a finite number of magnitude at most 1e+06"),
    (["--points", "1"], "--points 1"),
    (["--coef", "1e7", "1"], "argument --coef: '1e7' is beyond ±1e+06"),  # argparse's own
    (["--lambda", "2e6"], "argument --lambda: '2e6' is beyond ±1e+06"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_sweep_refuses_bad_options_before_any_work(capsys, tmp_path, tiny_base_dir, tiny_adapters, options, named):
    db, csv = tmp_path / "runs.sqlite", tmp_path / "points.csv"
    History(db)
    code, out, err = run(capsys, "sweep", "--base", tiny_base_dir, *tiny_adapters, "--limit", "10", "--history", db, "--csv", csv, *options)
    assert code == 2 and out == ""  # not even the header
    assert named in one_error_line(err)
    assert not csv.exists() and len(History(db)) == 0


def test_sweep_refuses_an_existing_csv_before_scoring(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    db, csv = tmp_path / "runs.sqlite", tmp_path / "points.csv"
    History(db)
    csv.write_text("keep me\n")
    code, out, err = run(capsys, "sweep", "--base", tiny_base_dir, *tiny_adapters, "--limit", "10", "--history", db, "--csv", csv)
    assert code == 2 and out == ""
    assert one_error_line(err) == f"osrm: error: {csv}: already exists; pass --force to replace it"
    assert csv.read_text() == "keep me\n" and len(History(db)) == 0


def test_a_refused_sweep_does_not_create_the_history(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    db = tmp_path / "runs.sqlite"
    code, _, err = run(capsys, "sweep", "--base", tiny_base_dir, *tiny_adapters, "--history", db, "--methods", "nosuch")
    assert code == 2 and not db.exists(), err


def test_a_sweep_that_passes_the_checks_writes_both(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    db, csv = tmp_path / "runs.sqlite", tmp_path / "points.csv"
    code, _, err = run(capsys, "sweep", "--base", tiny_base_dir, *tiny_adapters, "--limit", "10", "--points", "2",
                         "--methods", "task_arithmetic,ties", "--history", db, "--csv", csv)
    assert code == 0, err
    assert len(History(db)) == 4 and len(csv.read_text().splitlines()) == 5
