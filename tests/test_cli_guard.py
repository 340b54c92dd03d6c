"""``osrm guard`` on the tiny fixtures plus a large-norm random adapter: tables, verdicts, JSON, exit
codes, and bad input refused in one line before any work."""

from __future__ import annotations

import json
import re

import pytest
from safetensors.torch import load_file, save_file

from tests.cli_support import one_error_line, run
from tests.conftest import make_adapter, write_task_csv


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def loud(tmp_path_factory, tiny_base_dir):
    """A random adapter with its update 10× conftest's, serving its own task ("size")."""
    folder = tmp_path_factory.mktemp("loud")
    task = write_task_csv(folder / "size.csv", {"big": "large", "small": "little"}, seed=3)
    out = make_adapter(tiny_base_dir, folder / "loud", task, num_labels=2, seed=9)
    weights = load_file(out / "adapter_model.safetensors")
    save_file({k: v * 10 if "lora_B" in k else v for k, v in weights.items()}, out / "adapter_model.safetensors")
    return out


def test_guard_prints_tables_and_verdicts_and_writes_json(capsys, tmp_path, tiny_base_dir, tiny_adapters, loud):
    out_json = tmp_path / "guard.json"
    code, out, err = run(capsys, "guard", "--base", tiny_base_dir, *tiny_adapters, loud, "--device", "cpu", "--json", out_json)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert data["split"] == "validation" and data["tau"] == 0.01 and data["adapters"] == ["colour", "animal", "loud"]
    assert data["own_tasks"] == ["colour", "animal", "size"]
    loud_verdict = data["verdicts"][2]
    assert loud_verdict["flagged"] and any(r.startswith("norm ") for r in loud_verdict["prescreen"])
    assert data["prescreen"]["adapters"][2]["norm_ratio"] > 3
    assert "loud" in data["flagged"] and f"flagged: {', '.join(data['flagged'])}" in out
    for name, deltas in data["deltas"].items():
        assert set(deltas) == set(data["tasks"]) - {data["own_tasks"][data["adapters"].index(name)]}
        for task, delta in deltas.items():
            assert delta == pytest.approx(data["with_all"][task] - data["without"][name][task], abs=1e-12)
    # each adapter's deltas as soon as it is scored, then the pre-screen, the Δ table and the verdicts
    for i, name in enumerate(data["adapters"]):
        line = next(line for line in out.splitlines() if line.startswith(f"[{i + 1}/3] without {name}: Δ "))
        shown = dict(re.findall(r"(\w+) ([+-]\d\.\d{4})", line.split(": Δ ", 1)[1]))
        assert shown == {t: f"{d:+.4f}" for t, d in data["deltas"][name].items()}
    assert out.index("pre-screen (data-free") < out.index("leave-one-out on validation") < out.index("flagged:")
    assert "  loud (pre-screen): norm " in out


def test_prescreen_only_needs_no_task_and_fail_on_flag_exits_3(capsys, tmp_path, tiny_base_dir, tiny_adapters, loud):
    stray = make_adapter(tiny_base_dir, tmp_path / "stray", None, num_labels=2, seed=5)  # no task recorded
    out_json = tmp_path / "screen.json"
    code, out, err = run(capsys, "guard", "--base", tiny_base_dir, *tiny_adapters, loud, stray, "--device", "cpu", "--prescreen-only",
                         "--fail-on-flag", "--json", out_json)
    assert code == 3 and "--fail-on-flag" in err
    assert "pre-screen (data-free" in out and "leave-one-out" not in out and "flagged: loud" in out
    data = json.loads(out_json.read_text())
    assert data["flagged"] == ["loud"] and [a["name"] for a in data["prescreen"]["adapters"]] == ["colour", "animal", "loud", "stray"]
    code, out, _ = run(capsys, "guard", "--base", tiny_base_dir, *tiny_adapters, "--device", "cpu", "--prescreen-only", "--fail-on-flag")
    assert code == 0 and "no adapter flagged" in out


def test_split_limit_and_reference_reach_the_job(capsys, tmp_path, tiny_base_dir, tiny_adapters, loud):
    out_json = tmp_path / "g.json"
    code, out, err = run(capsys, "guard", "--base", tiny_base_dir, *tiny_adapters, loud, "--device", "cpu", "--split", "test", "--limit", "5",
                         "--reference", "zero", "--tau", "0.2", "--method", "ties", "--param", "density=0.5", "--json", out_json)
    assert code == 0, err
    data = json.loads(out_json.read_text())
    assert (data["split"], data["limit"], data["reference"], data["tau"]) == ("test", 5, "zero", 0.2)
    assert data["spec"]["method"] == "ties" and data["spec"]["params"]["density"] == 0.5
    assert all(r == 0 for refs in data["references"].values() for r in refs.values())
    assert all(round(v * 5) == v * 5 for v in data["with_all"].values())  # 5 examples per task


@pytest.mark.parametrize("extra, message", [
    (["--tau", "-1"], "--tau -1.0: expected a finite number ≥ 0"),
    (["--tau", "nan"], "argument --tau: 'nan' is not a finite number"),
    (["--norm-ratio", "0"], "--norm-ratio 0.0: expected a finite number greater than 0"),
    (["--density", "2"], "--density 2.0: expected at most 1"),
    (["--reference", "mean"], "argument --reference: invalid choice: 'mean'"),
    (["--method", "nope"], "unknown"),
    (["--coef", "1", "1"], "2 coefficients given for 3 adapters"),
])
def test_bad_options_are_one_line(capsys, tiny_base_dir, tiny_adapters, loud, extra, message):
    code, out, err = run(capsys, "guard", "--base", tiny_base_dir, *tiny_adapters, loud, "--device", "cpu", *extra)
    assert code == 2 and message in one_error_line(err), err


def test_bad_inputs_are_one_line(capsys, tmp_path, tiny_base_dir, tiny_adapters, tiny_tasks):
    stray = make_adapter(tiny_base_dir, tmp_path / "stray", None, num_labels=2, seed=5)
    capsys.readouterr()  # transformers' loading bar while the fixture adapter is built
    code, _, err = run(capsys, "guard", "--base", tiny_base_dir, *tiny_adapters, stray, "--device", "cpu",
                       "--task", tiny_tasks["colour"], "--task", tiny_tasks["animal"])
    assert code == 2 and re.search(r"none is known for .*stray; name every adapter's evaluation data with --task", one_error_line(err))
    code, _, err = run(capsys, "guard", "--base", tiny_base_dir, tiny_adapters[0], "--device", "cpu")
    assert code == 2 and "needs 2 adapters or more (1 given)" in one_error_line(err)
    existing = tmp_path / "exists.json"
    existing.write_text("{}")
    code, _, err = run(capsys, "guard", "--base", tiny_base_dir, *tiny_adapters, "--device", "cpu", "--json", existing)
    assert code == 2 and "already exists; pass --force" in one_error_line(err) and existing.read_text() == "{}"
    code, _, err = run(capsys, "guard", "--base", tiny_base_dir, "--device", "cpu")
    assert code == 2 and "no adapters given" in one_error_line(err)
