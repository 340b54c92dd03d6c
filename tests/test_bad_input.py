"""Hostile input across the commands: every case is refused with exit 2, exactly one line on
stderr naming the file or option, no traceback, and no file created or changed anywhere
under the test's folder (a snapshot of the tree before and after)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from osrm_gui.cli import main
from tests.conftest import _write_tiny_base, make_adapter, write_task_csv


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def refused(capsys, root: Path, argv, *needles):
    """Run the CLI in-process; assert the refusal and return its one line."""
    before = snapshot(root)
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse refuses before main's own handling
        code = exit_.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith(("osrm: error:", "osrm ")), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert snapshot(root) == before, "files changed under the test folder"
    return lines[0]


@pytest.fixture()
def work(tmp_path, tiny_base_dir, tiny_adapters, tiny_tasks):
    """A private copy of everything a command reads, so the snapshot covers inputs too."""
    shutil.copytree(tiny_base_dir, tmp_path / "base")
    for adapter in tiny_adapters:
        shutil.copytree(adapter, tmp_path / adapter.name)
    for adapter in tiny_adapters:  # trained on the copied base, as far as their configs tell
        _edit_config(tmp_path / adapter.name, base_model_name_or_path=str(tmp_path / "base"))
    for name, task in tiny_tasks.items():
        shutil.copy(task, tmp_path / task.name)
        for folder in (tmp_path / "colour", tmp_path / "animal"):  # point the adapters at the copied data
            meta = folder / "osrm_adapter.json"
            data = json.loads(meta.read_text())
            if data["task"] == name:
                data["task_spec"] = str(tmp_path / task.name)
                meta.write_text(json.dumps(data))
    return tmp_path


# -- adapter files ------------------------------------------------------------------------------

def _edit_config(folder: Path, **changes):
    config = json.loads((folder / "adapter_config.json").read_text())
    config.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(config))


def _int8_tensors(folder: Path):
    tensors = load_file(folder / "adapter_model.safetensors")
    save_file({k: (v * 10).to(torch.int8) if "lora_" in k else v for k, v in tensors.items()}, folder / "adapter_model.safetensors")


ADAPTER_CASES = {
    "alpha is a word": (lambda f: _edit_config(f, lora_alpha="sixteen"), ["adapter_config.json", "lora_alpha is 'sixteen'"]),
    "rank zero": (lambda f: _edit_config(f, r=0), ["adapter_config.json", "r is 0"]),
    "config is an array": (lambda f: (f / "adapter_config.json").write_text("[1, 2]"), ["adapter_config.json", "expected a JSON object"]),
    "metadata not UTF-8": (lambda f: (f / "osrm_adapter.json").write_bytes(b'{"task": "\xff\xfe"}'), ["osrm_adapter.json", "not UTF-8"]),
    "metadata is an array": (lambda f: (f / "osrm_adapter.json").write_text("[]"), ["osrm_adapter.json", "expected a JSON object"]),
    "int8 tensors": (_int8_tensors, ["adapter_model.safetensors", "not floating point"]),
}
ADAPTER_COMMANDS = {
    "info": lambda w, bad: ["info", "--base", w / "base", bad],
    "merge": lambda w, bad: ["merge", "--base", w / "base", w / "colour", bad],
    "eval": lambda w, bad: ["eval", "--base", w / "base", bad],
    "export": lambda w, bad: ["export", "--base", w / "base", w / "colour", bad, "--kind", "recipe", "--out", w / "r.json"],
    "analyze": lambda w, bad: ["analyze", "--base", w / "base", w / "colour", bad],
    "sweep": lambda w, bad: ["sweep", "--base", w / "base", w / "colour", bad, "--no-history", "--points", "2"],
    "project": lambda w, bad: ["project", bad, "--base", w / "base", "--out", w / "projected", "--osrm-task", w / "colour.csv"],
}


@pytest.mark.parametrize("command", ADAPTER_COMMANDS)
@pytest.mark.parametrize("case", ADAPTER_CASES)
def test_bad_adapter_files(capsys, work, case, command):
    damage, needles = ADAPTER_CASES[case]
    bad = work / "animal"
    damage(bad)
    refused(capsys, work, ADAPTER_COMMANDS[command](work, bad), *needles)


def test_a_pickled_base_is_refused_in_one_line_and_never_runs(capsys, work):
    evil = work / "evil-base"
    shutil.copytree(work / "base", evil)
    (evil / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {work / 'pwned'}",))

    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Payload()}))
    for argv in (["info", "--base", evil], ["merge", "--base", evil, work / "colour"]):
        refused(capsys, work, argv, "pytorch_model.bin", "refused")
    assert not (work / "pwned").exists()


def test_a_refused_pickled_adapter_prints_only_its_line(capsys, work):
    folder = work / "animal"
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(pickle.dumps({"x": bytearray(b"not a tensor")}))
    refused(capsys, work, ["info", "--base", work / "base", folder], "adapter_model.bin", "refused")


# -- recipes ---------------------------------------------------------------------------------------

@pytest.fixture()
def recipe(work, capsys):
    path = work / "merge.recipe.json"
    assert main([str(a) for a in ["export", "--base", work / "base", work / "colour", work / "animal", "--kind", "recipe", "--out", path]]) == 0
    capsys.readouterr()
    return path


def _without(data: dict, dotted: str) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[last]
    return data


@pytest.mark.parametrize("field", ["adapters", "merge", "merge.method", "base", "adapters.0.hash"])
def test_recipes_missing_a_field(capsys, work, recipe, field):
    recipe.write_text(json.dumps(_without(json.loads(recipe.read_text()), field)))
    refused(capsys, work, ["merge", "--recipe", recipe, "--no-eval"], str(recipe), "recipe field", field.replace(".0.", "[0]."))


def test_a_recipe_whose_adapters_are_a_string(capsys, work, recipe):
    data = json.loads(recipe.read_text())
    data["adapters"] = "colour"
    recipe.write_text(json.dumps(data))
    refused(capsys, work, ["merge", "--recipe", recipe, "--no-eval"], "recipe field adapters is a str")


def test_a_recipe_refuses_an_adapter_whose_config_changed(capsys, work, recipe):
    _edit_config(work / "animal", lora_alpha=160)
    refused(capsys, work, ["merge", "--recipe", recipe, "--no-eval"], "has changed since the recipe was written")


# -- numbers and sizes -------------------------------------------------------------------------------

ARGUMENT_CASES = {
    "train rank 0": (lambda w: ["train", "--task", w / "animal.csv", "--out", w / "o", "--rank", "0"], "--rank"),
    "init rank 0": (lambda w: ["init", "--task", w / "animal.csv", "--out", w / "o", "--rank", "0", "--osrm-task", w / "colour.csv"], "--rank"),
    "train batch 0": (lambda w: ["train", "--task", w / "animal.csv", "--out", w / "o", "--batch-size", "0"], "--batch-size"),
    "train steps -1": (lambda w: ["train", "--task", w / "animal.csv", "--out", w / "o", "--steps", "-1"], "--steps"),
    "train lr nan": (lambda w: ["train", "--task", w / "animal.csv", "--out", w / "o", "--lr", "nan"], "--lr"),
    "project samples 0": (lambda w: ["project", w / "colour", "--out", w / "o", "--osrm-task", w / "animal.csv", "--osrm-samples", "0"], "--osrm-samples"),
    "project rank 0": (lambda w: ["project", w / "colour", "--out", w / "o", "--osrm-task", w / "animal.csv", "--rank", "0"], "--rank"),
    "features samples 0": (lambda w: ["features", "--task", w / "animal.csv", "--samples", "0"], "--samples"),
    "export rank 0": (lambda w: ["export", w / "colour", "--kind", "adapter", "--rank", "0", "--out", w / "o"], "--rank"),
    "merge lambda nan": (lambda w: ["merge", "--base", w / "base", w / "colour", "--lambda", "nan"], "--lambda"),
    "merge coefficient 1e308": (lambda w: ["merge", "--base", w / "base", w / "colour", "--coef", "1e308", "--no-eval"], "--coef"),
    "merge lambda 1e7": (lambda w: ["merge", "--base", w / "base", w / "colour", "--lambda", "1e7", "--no-eval"], "--lambda"),
    "merge limit 0": (lambda w: ["merge", "--base", w / "base", w / "colour", "--limit", "0"], "--limit"),
    "history last 0": (lambda w: ["history", "--last", "0"], "--last"),
    "history last -1": (lambda w: ["history", "--last", "-1"], "--last"),
}


@pytest.mark.parametrize("case", ARGUMENT_CASES)
def test_bad_numbers(capsys, work, case):
    argv, needle = ARGUMENT_CASES[case]
    refused(capsys, work, argv(work), needle)


def test_a_coefficient_that_overflows_in_the_merge_is_refused(capsys, work):
    # 1e5 is a legal coefficient, but with λ it overflows float32 in a layer: said, not silently inf
    from osrm_gui.core.errors import OsrmError
    from osrm_gui.core.merge.spec import MergeSpec, merge_adapters
    from osrm_gui.core.inputs.adapters import load_adapter
    from osrm_gui.core.progress import run_to_end

    adapter = load_adapter(work / "colour")
    layer = next(iter(adapter.layers.values()))
    huge = type(layer)(layer.A * 1e18, layer.B * 1e18, layer.scaling)
    adapter.layers = {name: huge for name in adapter.layers}
    with pytest.raises(OsrmError, match="non-finite values"):
        run_to_end(merge_adapters([adapter], MergeSpec("task_arithmetic", [1e5], 1e5)))


# -- outputs -----------------------------------------------------------------------------------------

def test_an_output_may_never_be_an_input(capsys, work):
    refused(capsys, work, ["export", "--base", work / "base", work / "colour", work / "animal", "--kind", "recipe", "--force",
                           "--out", work / "colour"], "the input")
    refused(capsys, work, ["export", "--base", work / "base", work / "colour", "--kind", "full", "--force", "--out", work],
            "the input")  # an output holding an input would be replaced with it
    refused(capsys, work, ["project", work / "colour", "--base", work / "base", "--out", work / "colour" / "inside",
                           "--osrm-task", work / "animal.csv"], "the input")
    refused(capsys, work, ["train", "--task", work / "animal.csv", "--base", work / "base", "--force", "--out", work / "base"], "the input")


def test_merge_json_needs_force_and_an_existing_folder(capsys, work):
    (work / "scores.json").write_text("{}")
    refused(capsys, work, ["merge", "--base", work / "base", work / "colour", "--json", work / "scores.json"], "already exists")
    refused(capsys, work, ["merge", "--base", work / "base", work / "colour", "--json", work / "missing" / "s.json"], "does not exist")


def test_a_read_only_folder_is_one_line_and_leaves_nothing(capsys, work, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    refused(capsys, work, ["export", "--base", work / "base", work / "colour", "--kind", "full", "--out", work / "models"],
            str(work / "models"), "cannot write (Permission denied)")


def test_a_file_size_limit_during_export_is_one_line_and_leaves_nothing(work):
    before = snapshot(work)

    def limit():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    result = subprocess.run([sys.executable, "-m", "osrm_gui.cli", "export", "--base", str(work / "base"), str(work / "colour"),
                             "--kind", "full", "--out", str(work / "models")], capture_output=True, text=True, preexec_fn=limit,
                            timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "models: cannot write (" in lines[0] and "File too large" in lines[0]
    assert snapshot(work) == before


def test_sigterm_during_an_export_removes_its_temporary_folder(work):
    script = textwrap.dedent(f"""
        import time, transformers
        from osrm_gui.cli import main
        save = transformers.PreTrainedTokenizerBase.save_pretrained
        def slow(self, *args, **kwargs):  # a long write, so the signal lands mid-export
            result = save(self, *args, **kwargs)
            time.sleep(60)
            return result
        transformers.PreTrainedTokenizerBase.save_pretrained = slow
        raise SystemExit(main(["export", "--base", {str(work / 'base')!r}, {str(work / 'colour')!r}, "--kind", "full", "--out", {str(work / 'models')!r}]))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(work.glob(".models.osrm-tmp-*")) and time.time() < deadline:
        time.sleep(0.1)
    assert list(work.glob(".models.osrm-tmp-*")), "the export never started"
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143 and err.strip().splitlines()[-1] == "osrm: terminated", err
    assert not list(work.glob(".models*")) and not (work / "models").exists()


def test_a_killed_writers_temporary_folder_is_removed_by_the_next_write(capsys, work):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = work / f".models.osrm-tmp-{dead.pid}-abc123"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half written")
    alive = work / f".models.osrm-tmp-{os.getpid()}-def456"  # a writer still running keeps its folder
    alive.mkdir()
    assert main([str(a) for a in ["export", "--base", work / "base", work / "colour", "--kind", "full", "--out", work / "models"]]) == 0
    capsys.readouterr()
    assert not stale.exists() and alive.exists() and (work / "models" / "colour" / "config.json").is_file()


def test_outputs_follow_the_umask(capsys, work):
    old = os.umask(0o027)
    try:
        assert main([str(a) for a in ["export", "--base", work / "base", work / "colour", "--kind", "full", "--out", work / "models"]]) == 0
        assert main([str(a) for a in ["export", "--base", work / "base", work / "colour", "--kind", "recipe", "--out", work / "r.json"]]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    assert (work / "models").stat().st_mode & 0o777 == 0o750
    assert (work / "models" / "colour" / "config.json").stat().st_mode & 0o777 == 0o640
    assert (work / "r.json").stat().st_mode & 0o777 == 0o640


# -- several adapters for one task ----------------------------------------------------------------------

def test_every_adapter_of_a_shared_task_gets_its_own_export(capsys, work):
    twin = work / "colour-twin"
    shutil.copytree(work / "colour", twin)
    meta = json.loads((twin / "osrm_adapter.json").read_text())
    (twin / "osrm_adapter.json").write_text(json.dumps({**meta, "name": "colour-twin"}))
    for kind in ("full", "adapter"):
        out = work / f"out-{kind}"
        args = ["export", "--base", work / "base", work / "colour", twin, work / "animal", "--kind", kind, "--method", "concat", "--out", out]
        assert main([str(a) for a in args]) == 0
        printed = capsys.readouterr().out
        written = sorted(p.name for p in out.iterdir())
        assert written == ["animal", "colour--colour", "colour--colour-twin"]
        assert all(name in printed for name in written) and "wrote 3 " in printed


# -- data-dependent recipes -----------------------------------------------------------------------------

def test_a_regmean_recipe_records_its_data_and_refuses_when_it_changed(capsys, work):
    recipe = work / "regmean.recipe.json"
    args = ["export", "--base", work / "base", work / "colour", work / "animal", "--method", "regmean", "--kind", "recipe", "--out", recipe]
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    data = json.loads(recipe.read_text())["data"]
    assert [d["task"] for d in data] == ["colour", "animal"] and all(d["hash"] and d["samples"] == 100 for d in data)
    assert main([str(a) for a in ["merge", "--recipe", recipe, "--no-eval"]]) == 0
    capsys.readouterr()
    with (work / "animal.csv").open("a") as f:
        f.write("dog fish cat,land\n")
    refused(capsys, work, ["merge", "--recipe", recipe, "--no-eval"], "task 'animal'", "has changed since the recipe was written")
    recorded = json.loads(recipe.read_text())
    del recorded["data"]
    recipe.write_text(json.dumps(recorded))
    refused(capsys, work, ["merge", "--recipe", recipe, "--no-eval"], "does not record the task data")


# -- the README's way of loading an exported adapter, on a 4-label task ----------------------------------

def test_exported_adapter_loads_in_peft_as_the_readme_says_for_four_labels(capsys, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    base = _write_tiny_base(tmp_path / "base")
    task = write_task_csv(tmp_path / "pos.csv", {"red": "adjective", "fast": "adverb", "cat": "noun", "run": "verb"}, seed=4)
    adapter = make_adapter(base, tmp_path / "pos", task, num_labels=4, seed=3)
    meta = json.loads((adapter / "osrm_adapter.json").read_text())
    (adapter / "osrm_adapter.json").write_text(json.dumps({**meta, "label_names": ["adjective", "adverb", "noun", "verb"]}))
    assert main([str(a) for a in ["export", "--base", base, adapter, "--kind", "adapter", "--method", "concat", "--out", tmp_path / "out"]]) == 0
    capsys.readouterr()
    folder = tmp_path / "out" / "pos"
    # the README's snippet
    labels = json.loads((folder / "osrm_adapter.json").read_text())["label_names"]
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(labels), ignore_mismatched_sizes=True)
    model = PeftModel.from_pretrained(model, folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    with torch.inference_mode():
        logits = model(**tokenizer(["the red cat", "run fast"], return_tensors="pt", padding=True)).logits
    assert logits.shape == (2, 4)
    with torch.inference_mode():
        original = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=4, ignore_mismatched_sizes=True), adapter).eval()
        expected = original(**tokenizer(["the red cat", "run fast"], return_tensors="pt", padding=True)).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
