"""The ``osrm`` command line, driven in-process (and once as a real subprocess)."""

import json
import subprocess
import sys

import pytest

from osrm_gui.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    for command in ("info", "methods", "train", "merge", "eval", "sweep", "history", "export", "demo"):
        assert command in out


def test_info(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "info", "--base", tiny_base_dir, *tiny_adapters)
    assert code == 0, err
    assert "bert" in out and "query,value" in out
    assert "colour" in out and "animal" in out and "classifier (3 labels)" in out


def test_methods(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "ties" in out and "density" in out and "rank" in out


def test_merge_prints_a_table_and_saves_a_recipe(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "merge", "--base", tiny_base_dir, *tiny_adapters, "--method", "ties", "--param", "density=0.5",
                         "--coef", "1", "0.5", "--single", "--save-recipe", tmp_path / "r.json", "--json", tmp_path / "s.json")
    assert code == 0, err
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("task"))
    assert header.split() == ["task", "metric", "n", "single", "merged", "normalised"]
    assert any(line.startswith("average") for line in lines)
    recipe = json.loads((tmp_path / "r.json").read_text())
    assert recipe["merge"]["method"] == "ties" and recipe["merge"]["coefficients"] == [1.0, 0.5]
    scores = json.loads((tmp_path / "s.json").read_text())
    code, out2, err = run(capsys, "merge", "--base", tiny_base_dir, "--recipe", tmp_path / "r.json", "--json", tmp_path / "s2.json")
    assert code == 0, err
    assert json.loads((tmp_path / "s2.json").read_text())["scores"] == scores["scores"]


def test_eval_shows_adapter_and_floor(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "eval", "--base", tiny_base_dir, *tiny_adapters)
    assert code == 0, err
    assert "adapter alone" in out and "head on bare base" in out


@pytest.mark.parametrize("kind", ["full", "adapter", "recipe"])
def test_export_kinds(capsys, tmp_path, tiny_base_dir, tiny_adapters, kind):
    out_path = tmp_path / ("r.json" if kind == "recipe" else "out")
    extra = ["--method", "concat"] if kind == "adapter" else []
    code, out, err = run(capsys, "export", "--base", tiny_base_dir, *tiny_adapters, "--kind", kind, "--out", out_path, *extra)
    assert code == 0, err
    assert out_path.exists()
    code, _, err = run(capsys, "export", "--base", tiny_base_dir, *tiny_adapters, "--kind", kind, "--out", out_path, *extra)
    assert code == 2 and "already exists; pass --force" in err


def test_bad_input_is_one_line_with_exit_2(capsys, tmp_path, tiny_base_dir):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{oops")
    code, out, err = run(capsys, "merge", "--base", tiny_base_dir, bad)
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("osrm: error: ") and "broken/adapter_config.json: corrupt JSON" in err
    assert "Traceback" not in err


def test_bad_method_and_param(capsys, tiny_base_dir, tiny_adapters):
    code, _, err = run(capsys, "merge", "--base", tiny_base_dir, *tiny_adapters, "--method", "nope")
    assert code == 2 and "unknown merge method 'nope'" in err
    code, _, err = run(capsys, "merge", "--base", tiny_base_dir, *tiny_adapters, "--method", "ties", "--param", "density=3")
    assert code == 2 and "density" in err
    code, _, err = run(capsys, "merge", "--base", tiny_base_dir, *tiny_adapters, "--coef", "1")
    assert code == 2 and "1 coefficients given for 2 adapters" in err


def test_missing_base_folder(capsys, tmp_path, tiny_adapters):
    code, _, err = run(capsys, "info", "--base", tmp_path / "nowhere")
    assert code == 2 and "nowhere: base model folder not found" in err


def test_console_script_runs(tmp_path):
    """The installed entry point, as a user calls it."""
    result = subprocess.run([sys.executable, "-m", "osrm_gui.cli", "merge", str(tmp_path / "missing")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("missing: adapter folder not found")


def test_osrm_commands(capsys, tmp_path, tiny_base_dir, tiny_adapters, tiny_tasks, monkeypatch):
    monkeypatch.setenv("OSRM_GUI_CACHE", str(tmp_path / "cache"))  # a cold cache whatever ran before
    colour, animal = str(tiny_tasks["colour"]), str(tiny_tasks["animal"])
    code, out, err = run(capsys, "features", "--base", tiny_base_dir, "--task", colour, "--task", animal, "--samples", "20")
    assert code == 0, err
    assert out.count("miss") == 2
    code, out, _ = run(capsys, "features", "--base", tiny_base_dir, "--task", colour, "--samples", "20")
    assert "hit" in out
    code, out, err = run(capsys, "init", "--base", tiny_base_dir, "--task", animal, "--osrm-task", colour, "--rank", "4",
                         "--out", tmp_path / "init", "--osrm-samples", "20")
    assert code == 0, err
    assert "untrained osrm-cov adapter" in out
    code, out, err = run(capsys, "project", "--base", tiny_base_dir, tiny_adapters[0], "--osrm-task", animal,
                         "--osrm-task", colour, "--out", tmp_path / "projected", "--osrm-samples", "20")
    assert code == 0, err
    assert "head kept" in out and (tmp_path / "projected" / "adapter_model.safetensors").exists()
    code, out, err = run(capsys, "merge", "--base", tiny_base_dir, tmp_path / "projected", tiny_adapters[1], "--method", "regmean")
    assert code == 0, err
    assert "average" in out
    code, _, err = run(capsys, "init", "--base", tiny_base_dir, "--task", animal, "--osrm-task", animal, "--out", tmp_path / "alone")
    assert code == 2 and "no 'other' tasks" in err


def test_grid_sweep_records_history_and_resumes(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    db = tmp_path / "runs.sqlite"
    args = ["sweep", "--base", tiny_base_dir, *tiny_adapters, "--axis", "colour=0:1:2", "--axis", "animal=0,1",
            "--methods", "task_arithmetic,ties", "--limit", "10", "--history", db, "--csv", tmp_path / "grid.csv"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "8 points scored, 0 taken from the history" in out
    assert (tmp_path / "grid.csv").read_text().splitlines()[0].startswith("method,coefficient of colour,coefficient of animal")
    code, out, err = run(capsys, *args[:-2])
    assert code == 0 and "0 points scored, 8 taken from the history" in out and out.count("(history)") == 8
    code, out, err = run(capsys, "history", "--history", db, "--last", "2")
    assert code == 0 and f"{db}: 8 points" in out and out.count("ties") == 2
    code, out, err = run(capsys, "history", "--history", db, "--csv", tmp_path / "all.csv")
    assert code == 0 and len((tmp_path / "all.csv").read_text().splitlines()) == 9


def test_bad_axis_is_one_line(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "sweep", "--base", tiny_base_dir, *tiny_adapters, "--axis", "colour:0:1", "--no-history")
    assert code == 2 and err.strip() == "osrm: error: cannot read sweep axis 'colour:0:1': expected TARGET=START:STOP:COUNT or TARGET=v1,v2,…"


def test_analyze_prints_each_metric_with_adapter_names(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "analyze", "--base", tiny_base_dir, *tiny_adapters, "--metric", "row_overlap")
    assert code == 0, err
    assert "Input subspace overlap (A) [row_overlap], mean over 4 layers" in out
    table = out.splitlines()[1:5]
    assert table[0].split() == ["adapter", "colour", "animal"]
    assert table[2].split()[:2] == ["colour", "1.0000"] and table[3].split()[0] == "animal" and table[3].split()[2] == "1.0000"
    assert any(line.split()[:2] == ["query", "2"] for line in out.splitlines())
    assert "off-diagonal mean over layers: 0." in out


def test_analyze_interference_from_the_recorded_task_data_and_csv(capsys, tmp_path, tiny_base_dir, tiny_adapters):
    import csv

    target = tmp_path / "analysis.csv"
    code, out, err = run(capsys, "analyze", "--base", tiny_base_dir, *tiny_adapters, "--metric", "interference", "--layer", "value", "--csv", target)
    assert code == 0, err
    assert "Interference [interference], mean over the 2 value layers" in out
    assert "adapter i \\ task j" in out and "colour" in out and "animal" in out
    rows = list(csv.DictReader(target.open()))
    assert list(rows[0]) == ["layer", "metric", "adapter_i", "adapter_j", "value"]
    assert len(rows) == 4 * 2 * 2 and {r["metric"] for r in rows} == {"interference"}
    assert all(float(r["value"]) == pytest.approx(1.0) for r in rows if r["adapter_i"] == r["adapter_j"])
    code, _, err = run(capsys, "analyze", "--base", tiny_base_dir, *tiny_adapters, "--metric", "cosine", "--csv", target)
    assert code == 2 and "already exists; pass --force" in err


def test_analyze_all_metrics_leaves_out_interference_without_task_data(capsys, tmp_path, tiny_base_dir):
    from tests.conftest import make_adapter

    plain = [make_adapter(tiny_base_dir, tmp_path / name, None, 2, seed=seed) for name, seed in (("a", 3), ("b", 4))]
    code, out, err = run(capsys, "analyze", "--base", tiny_base_dir, *plain, "--layer", "max")
    assert code == 0, err
    assert "warning: interference skipped" in err
    for name in ("row_overlap", "col_overlap", "delta_overlap", "cosine", "sign_conflict"):
        assert f"[{name}], max over 4 layers" in out
    assert "[interference]" not in out
    code, _, err = run(capsys, "analyze", "--base", tiny_base_dir, *plain, "--metric", "interference")
    assert code == 2 and err.startswith("osrm: error: interference needs every adapter's task data") and err.count("\n") == 1


def test_analyze_bad_metric_or_layer_is_one_line(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "analyze", "--base", tiny_base_dir, *tiny_adapters, "--metric", "nope")
    assert code == 2 and err.count("\n") == 1 and err.startswith("osrm: error: unknown metric 'nope'; one of row_overlap") and not out
    code, _, err = run(capsys, "analyze", "--base", tiny_base_dir, *tiny_adapters, "--layer", "key")
    assert code == 2 and err.count("\n") == 1 and "--layer 'key': expected mean, max, a layer type (query, value)" in err


def test_a_sweep_of_an_unknown_adapter_fails_before_printing(capsys, tiny_base_dir, tiny_adapters):
    code, out, err = run(capsys, "sweep", "--base", tiny_base_dir, *tiny_adapters, "--axis", "nope=0:1:2", "--no-history")
    assert code == 2 and out == "" and err.strip().startswith("osrm: error: cannot sweep 'nope'")


def test_history_of_a_missing_file_is_an_error_not_a_new_database(capsys, tmp_path):
    code, out, err = run(capsys, "history", "--history", tmp_path / "none" / "runs.sqlite")
    assert code == 2 and err.strip() == f"osrm: error: {tmp_path / 'none' / 'runs.sqlite'}: no run history there"
    assert not (tmp_path / "none").exists()


def test_base_and_adapters_by_hub_id(capsys, hub_cache, tiny_base_dir, tiny_adapters):
    from tests.conftest import add_to_hub_cache

    add_to_hub_cache(hub_cache, "acme/tiny-bert", tiny_base_dir)
    add_to_hub_cache(hub_cache, "acme/colour-lora", tiny_adapters[0], ref="v1")
    code, out, err = run(capsys, "info", "--base", "acme/tiny-bert", "acme/colour-lora@v1")
    assert code == 0, err
    assert "base: tiny-bert" in out and "models--acme--tiny-bert" in out


def test_uncached_hub_id_offline_is_one_line_in_a_fresh_process(hub_cache, tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_OFFLINE"}  # the CLI's own default applies
    result = subprocess.run([sys.executable, "-m", "osrm_gui.cli", "info", "acme/not-downloaded"], capture_output=True, text=True,
                            env={**env, "HF_HUB_CACHE": str(hub_cache)}, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("osrm: error: acme/not-downloaded: no local folder of that name") and "--online" in lines[0]
