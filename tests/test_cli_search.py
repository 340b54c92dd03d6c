"""``osrm search`` end to end on the tiny fixtures, resuming, and refusing bad input in one line."""

import json

import pytest

from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace
from tests.cli_support import one_error_line, run


pytestmark = pytest.mark.usefixtures("one_thread")


def _search(capsys, tiny_base_dir, tiny_adapters, tmp_path, *options):
    return run(capsys, "search", *tiny_adapters, "--base", tiny_base_dir, "--chunk", 4, "--history", tmp_path / "h.sqlite",
               "--storage", tmp_path / "studies.sqlite", *options)


def test_search_prints_the_best_point_on_validation_and_test_and_resumes(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    code, out, err = _search(capsys, tiny_base_dir, tiny_adapters, tmp_path, "--methods", "task_arithmetic,ties", "--trials", 5,
                             "--study", "s", "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "study s (" in out and "5 trials" in out and "best point (trial" in out and "forward passes" in out
    assert "validation" in out and "test" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert len(result["trials"]) == 5 and result["objectives"] == ["normalised mean"]
    best = result["best"]
    assert best["trial"] in [t["number"] for t in result["trials"] if t["state"] == "complete"]
    ws = open_workspace(tiny_base_dir, tiny_adapters, device="cpu")
    test = run_to_end(ws.score(MergeSpec(**best["spec"]), "test"))
    assert best["test"] == {t: s["metric"] for t, s in test.items()}
    assert result["examples"]["search"] == sum(t["examples"] for t in result["trials"])

    code, out, err = _search(capsys, tiny_base_dir, tiny_adapters, tmp_path, "--methods", "task_arithmetic,ties", "--trials", 2,
                             "--study", "s", "--json", tmp_path / "r2.json")
    assert code == 0, err
    again = json.loads((tmp_path / "r2.json").read_text())
    assert len(again["trials"]) == 7 and again["trials"][:5] == result["trials"]
    assert again["examples"]["reference"] == 0 and again["examples"]["study"] == sum(t["examples"] for t in again["trials"])


def test_nsga2_prints_the_pareto_set(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    code, out, err = _search(capsys, tiny_base_dir, tiny_adapters, tmp_path, "--sampler", "nsga2", "--trials", 4, "--raw")
    assert code == 0, err
    assert "Pareto set (mean, worst task)" in out and "worst task" in out


@pytest.mark.parametrize("options, message", [
    (["--sampler", "cmaes", "--methods", "task_arithmetic,ties"], "CMA-ES searches continuous spaces only"),
    (["--methods", "nope"], "unknown merge method 'nope'"),
    (["--lambda-range", "1"], "--lambda-range '1': expected LOW:HIGH"),
    (["--lambda-range", "ties=0.1:2"], "a λ range is given for 'ties', which is not searched"),
    (["--coefficient-range", "2:1"], "coefficient range 2…1"),
    (["--min-task-fraction", "2"], "fraction in (0, 1]"),
    (["--per-layer-groups", "2", "--methods", "ties"], "weighted sum of task vectors"),
    (["--param", "density=0.5"], "belongs to none of the searched methods"),
    (["--timeout", "0"], "a positive timeout"),
    (["--sampler", "bayes"], "invalid choice: 'bayes'"),
])
def test_bad_options_are_one_line_before_any_work(capsys, tmp_path, tiny_base_dir, tiny_adapters, options, message):
    code, out, err = _search(capsys, tiny_base_dir, tiny_adapters, tmp_path, "--trials", 2, *options)
    assert code == 2
    line = one_error_line(err)
    assert line.startswith("osrm") and "error: " in line and message in line, line
    assert not (tmp_path / "h.sqlite").exists() and not (tmp_path / "studies.sqlite").exists()


def test_bad_files_are_one_line(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    (tmp_path / "r.json").write_text("{}")
    code, _, err = _search(capsys, tiny_base_dir, tiny_adapters, tmp_path, "--trials", 1, "--json", tmp_path / "r.json")
    assert code == 2 and "r.json" in one_error_line(err)
    code, _, err = run(capsys, "search", *tiny_adapters, "--base", tiny_base_dir, "--trials", 1, "--history", tmp_path / "h.sqlite",
                       "--storage", tmp_path / "h.sqlite")
    assert code == 2 and one_error_line(err).endswith("is a run history, not a study storage; name another file")
    code, _, err = run(capsys, "search", "--trials", 1)
    assert code == 2 and "no adapters given" in one_error_line(err)
