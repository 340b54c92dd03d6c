"""``osrm continual`` on the tiny fixtures: a row per arrival step, and bad arguments refused in one
line before any work; ``osrm merge --method opcm`` merges through the registry."""

from __future__ import annotations

import csv

import pytest

from tests.cli_support import one_error_line, run


def table_rows(out: str) -> list[list[str]]:
    """The summary table's body: the lines after the header rule."""
    lines = out.strip().splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("----"))
    body = [line for line in lines[rule + 1:] if not line.startswith("wrote ")]
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in body]


def test_two_orders_print_a_row_per_step_with_mean_and_spread(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    out_csv = tmp_path / "curve.csv"
    code, out, err = run(capsys, "continual", "--base", tiny_base_dir, *tiny_adapters, "--orders", "2", "--limit", "12",
                         "--split", "validation", "--csv", out_csv)
    assert code == 0, err
    assert "order 1: " in out and "order 2: " in out
    # each order scores each of its 2 steps as it goes
    assert sum(line.startswith("order ") and ", step " in line for line in out.splitlines()) == 4
    header = out.strip().splitlines()[[i for i, line in enumerate(out.strip().splitlines()) if line.startswith("----")][-1] - 1]
    assert header.split()[:4] == ["step", "average", "colour", "animal"]
    rows = table_rows(out)
    assert [r[0] for r in rows] == ["1", "2"]
    assert out.count("±") >= 4  # step 2: average and both tasks over 2 orders; step 1: at least the average
    with open(out_csv) as handle:
        written = list(csv.DictReader(handle))
    assert [r["order"] for r in written] == ["1", "1", "2", "2", "mean", "std", "mean", "std"]
    assert all(written[i]["colour"] and written[i]["animal"] for i in (1, 3))  # both tasks scored after both arrivals


def test_one_given_order_names_the_adapter_arriving_at_each_step(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "continual", "--base", tiny_base_dir, *tiny_adapters, "--order", "2,1", "--limit", "12")
    assert code == 0, err
    assert "order 1: animal → colour" in out and "±" not in out
    rows = table_rows(out)
    assert [r[:2] for r in rows] == [["1", "animal"], ["2", "colour"]]
    # at step 1 only the animal task has arrived (the average is its value, colour's cell is empty)
    assert len(rows[0]) == 4 and rows[0][2] == rows[0][3] and len(rows[1]) == 5


@pytest.mark.parametrize("options, message", [
    (["--orders", "0"], "osrm continual: error: argument --orders: 0 is less than 1"),
    (["--orders", "3"], "osrm: error: --orders 3: 2 adapters have 2 different arrival orders; cannot draw 3"),
    (["--order", "1,1"], "osrm: error: --order '1,1': must list each of the 2 adapters' positions (1…2) once"),
    (["--order", "1,3"], "osrm: error: --order '1,3': must list each of the 2 adapters' positions (1…2) once"),
    (["--order", "a,b"], "osrm: error: --order 'a,b': expected the adapters' positions, e.g. 2,1,3"),
    (["--order", "1,2", "--orders", "2"], "osrm: error: --order and --orders: give one arrival order"),
    (["--alpha", "1.5"], "osrm: error: --alpha: alpha must be ≤ 1.0, got 1.5"),
    (["--alpha", "-0.1"], "osrm: error: --alpha: alpha must be ≥ 0.0, got -0.1"),
    (["--alpha", "nan"], "osrm continual: error: argument --alpha: 'nan' is not a finite number"),
    (["--seed", "-1"], "osrm continual: error: argument --seed: -1 is less than 0"),
    (["--split", "train"], "osrm continual: error: argument --split: invalid choice: 'train'"),
    (["--limit", "0"], "osrm continual: error: argument --limit: 0 is less than 1"),
])
def test_bad_arguments_are_one_line_before_any_work(capsys, tiny_base_dir, tiny_adapters, options, message):
    code, out, err = run(capsys, "continual", "--base", tiny_base_dir, *tiny_adapters, *options)
    assert code == 2 and out == ""
    assert one_error_line(err).startswith(message)


def test_an_existing_csv_is_refused_unless_forced(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    existing = tmp_path / "curve.csv"
    existing.write_text("keep me\n")
    code, out, err = run(capsys, "continual", "--base", tiny_base_dir, *tiny_adapters, "--csv", existing)
    assert code == 2 and out == "" and "already exists" in one_error_line(err)
    assert existing.read_text() == "keep me\n"
    missing = tmp_path / "no-such-folder" / "curve.csv"
    code, _, err = run(capsys, "continual", "--base", tiny_base_dir, *tiny_adapters, "--csv", missing)
    assert code == 2 and "does not exist" in one_error_line(err)


def test_merge_with_opcm_goes_through_the_registry(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "merge", "--base", tiny_base_dir, *tiny_adapters, "--method", "opcm", "--param", "order=shuffled",
                         "--seed", "1", "--limit", "12")
    assert code == 0, err
    assert "with opcm" in out and "'order': 'shuffled'" in out and "average" in out
    code, _, err = run(capsys, "merge", "--base", tiny_base_dir, *tiny_adapters, "--method", "opcm", "--param", "alpha=2", "--no-eval")
    assert code == 2 and one_error_line(err) == "osrm: error: alpha must be ≤ 1.0, got 2.0"
