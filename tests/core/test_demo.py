"""The committed demo set: its manifest matches the files, and the whole flow runs on the real MiniLM."""

import hashlib

import pytest

from osrm_gui.core.inputs.demo_tasks import DEMO_TASKS, load_demo_task
from osrm_gui.core.inputs.demo_set import demo_adapter_paths, read_manifest
from osrm_gui.core.paths import demo_dir
from tests.conftest import accuracy_after_reload


def test_manifest_matches_the_committed_files():
    manifest = read_manifest()
    assert set(manifest["tasks"]) == set(DEMO_TASKS)
    total = 0
    sets = [manifest["tasks"], *(f["tasks"] for f in manifest.get("families", {}).values())]
    for name, entry in [item for entries in sets for item in entries.items()]:
        folder = demo_dir() / entry["adapter"]
        files = {p.name for p in folder.iterdir()}
        assert files == set(entry["files"]), name
        for file, digest in entry["files"].items():
            data = (folder / file).read_bytes()
            total += len(data)
            assert hashlib.sha256(data).hexdigest() == digest, f"{folder / file} differs from the manifest"
        assert entry["task_hash"] == load_demo_task(name).content_hash(), f"demo data of {name} changed since the build"
    for entry in manifest["tasks"].values():
        assert 0 < entry["test"]["head_only_probe"] < entry["test"]["lora"] <= 1
    assert total < 4 * 2**20  # a few MB in all
    seeds = [e["seed"] for e in manifest["tasks"].values()]
    assert len(set(seeds)) == len(seeds)  # no two adapters share an initial A


def test_demo_tasks_are_deterministic_and_disjoint():
    for name in DEMO_TASKS:
        task = load_demo_task(name)
        splits = {s: set(task.split(s).texts) for s in ("train", "validation", "test")}
        assert len(task.split("test")) == 500 and len(task.split("validation")) == 200
        assert not (splits["train"] & splits["test"]) and not (splits["validation"] & splits["test"])
        assert len(task.label_names) >= 2


@pytest.mark.slow
def test_real_minilm_merge_eval_export_reload(tmp_path):
    """load → merge → eval → export → reload in a fresh process → same metric."""
    from osrm_gui.core.export import export_full_models
    from osrm_gui.core.merge.spec import MergeSpec, merge_adapters
    from osrm_gui.core.progress import run_to_end
    from osrm_gui.core.workspace import open_workspace

    ws = open_workspace(None, demo_adapter_paths()[:2], device="cpu")
    assert ws.base.name == "all-MiniLM-L6-v2" and ws.warnings == []
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec("ties", [1.0, 1.0], 1.0, {"density": 0.5})))
    scores = run_to_end(ws.evaluate(merged, limit=80))
    single = run_to_end(ws.evaluate_single(limit=80))
    manifest = read_manifest()
    for task in ws.tasks:
        # 80 of the 500 test examples: close to the build's full-test figure
        assert abs(single[task.name]["metric"] - manifest["tasks"][task.name]["test"]["lora"]) < 0.12
    run_to_end(export_full_models(ws.base, merged, ws.pairs, ws.tasks, tmp_path / "full"))
    reloaded = accuracy_after_reload(tmp_path / "full", ws.tasks, limit=80)
    for task in ws.tasks:
        assert reloaded[task.name] == pytest.approx(scores[task.name]["accuracy"])


@pytest.mark.slow
def test_demo_run_prints_the_table(capsys):
    from osrm_gui.cli import main

    assert main(["demo", "run", "--limit", "40"]) == 0
    out = capsys.readouterr().out
    for name in DEMO_TASKS:
        assert name in out
    assert "normalised" in out and "average" in out


def test_build_reuses_only_identically_trained_adapters(tmp_path):
    import json
    from dataclasses import asdict

    from osrm_gui.core.explore.compare import family_settings
    from osrm_gui.core.osrm.training import TrainSettings
    from osrm_gui.cli.demo import LORA, _reusable

    task = load_demo_task("word-pos")
    specs = [f"demo:{n}" for n in DEMO_TASKS]
    settings = family_settings("osrm-cov-frozen", TrainSettings(**LORA), 0, 0, specs)
    folder = tmp_path / "osrm-cov-frozen" / "seed0" / "word-pos"
    folder.mkdir(parents=True)
    meta = {"settings": {**asdict(settings), "targets": ["query", "value"]}, "task_hash": task.content_hash()}
    (folder / "osrm_adapter.json").write_text(json.dumps(meta))
    assert _reusable(tmp_path, "osrm-cov-frozen", 0, "word-pos", settings, task) == folder
    other = family_settings("osrm-cov-frozen", TrainSettings(**{**LORA, "steps": 100}), 0, 0, specs)
    assert _reusable(tmp_path, "osrm-cov-frozen", 0, "word-pos", other, task) is None
    assert _reusable(tmp_path, "osrm-cov-frozen", 1, "word-pos", settings, task) is None
