"""Merge → evaluate → export → reload, on the tiny model, checked against peft and plain transformers."""

import json

import pytest
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.evaluation import encode_split, predict_logits
from osrm_gui.core.export import build_recipe, export_full_models, export_peft_adapters, read_recipe, write_recipe
from osrm_gui.core.merge.spec import MergeSpec, merge_adapters
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace
from tests.conftest import accuracy_after_reload
from tests.tolerances import assert_within, logits_bound


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def _peft_logits(base_dir, adapter_dir, num_labels, texts, merge=True):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=num_labels, ignore_mismatched_sizes=True)
    model = PeftModel.from_pretrained(model, adapter_dir)
    if merge:
        model = model.merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    with torch.inference_mode():
        return model.eval()(**tokenizer(texts, return_tensors="pt", padding=True)).logits.numpy()


def test_single_adapter_eval_matches_peft(ws, tiny_base_dir, tiny_adapters):
    """Our evaluation of one adapter equals peft's own model on the same texts."""
    task = ws.tasks[1]
    adapter = ws.pairs[task.name]
    ws.base.set_deltas({n: layer.delta() for n, layer in adapter.layers.items()})
    ws.base.set_head(ws.heads[task.name])
    try:
        split = task.split("test")
        ours = run_to_end(predict_logits(ws.base, encode_split(ws.base.tokenizer, split, 64), batch_size=5, stage="t"))
    finally:
        ws.base.set_head(None)
        ws.base.clear_deltas()
    reference = _peft_logits(tiny_base_dir, tiny_adapters[1], 3, split.texts)
    assert_within(ours, reference, logits_bound(ws.base.model.config, ws.heads[task.name], seq_len=64), "logits")


def test_batching_and_sorting_do_not_change_results(ws):
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec("task_arithmetic", [1.0, 0.7], 0.8)))
    one = run_to_end(ws.evaluate(merged, batch_size=1))
    many = run_to_end(ws.evaluate(merged, batch_size=64))
    for task in one:
        assert one[task]["metric"] == pytest.approx(many[task]["metric"])


def test_evaluate_restores_the_base(ws):
    name = next(iter(ws.adapters[0].layers))
    before = ws.base.model.get_submodule(name).weight.detach().clone()
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec("ties", [1.0, 1.0], 1.0, {"density": 0.3})))
    run_to_end(ws.evaluate(merged))
    assert torch.equal(ws.base.model.get_submodule(name).weight, before)


def test_full_export_reloads_in_a_fresh_process(ws, tmp_path):
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec("ties", [1.0, 0.5], 1.0, {"density": 0.5})))
    scores = run_to_end(ws.evaluate(merged))
    run_to_end(export_full_models(ws.base, merged, ws.pairs, ws.tasks, tmp_path / "full"))
    reloaded = accuracy_after_reload(tmp_path / "full", ws.tasks)
    for task in ws.tasks:
        assert reloaded[task.name] == pytest.approx(scores[task.name]["accuracy"])
    config = json.loads((tmp_path / "full" / "animal" / "config.json").read_text())
    assert len(config["id2label"]) == 3
    assert sorted(config["id2label"].values()) == ["air", "land", "water"]


def test_exact_adapter_export_loads_in_peft_and_reproduces_the_merge(ws, tmp_path, tiny_base_dir):
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec("concat", [0.6, 1.3], 0.9)))
    error = run_to_end(export_peft_adapters(ws.base, merged, ws.pairs, ws.tasks, tmp_path / "peft"))
    assert error == 0.0
    task = ws.tasks[0]
    texts = task.split("test").texts
    ws.base.set_deltas(merged.dense_deltas())
    ws.base.set_head(ws.heads[task.name])
    try:
        ours = run_to_end(predict_logits(ws.base, encode_split(ws.base.tokenizer, task.split("test"), 64), 64, "t"))
    finally:
        ws.base.set_head(None)
        ws.base.clear_deltas()
    # unmerged PeftModel: the LoRA branch computes B'A' x with mixed ranks (rank_pattern)
    reference = _peft_logits(tiny_base_dir, tmp_path / "peft" / task.name, 2, texts, merge=False)
    rank = sum(max(a.ranks) for a in ws.adapters)
    assert_within(ours, reference, logits_bound(ws.base.model.config, ws.heads[task.name], seq_len=64, lora_rank=rank), "logits")


def test_compressed_adapter_export_reports_its_error(ws, tmp_path):
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec("ties", [1.0, 1.0], 1.0, {"density": 0.5})))
    with pytest.raises(OsrmError, match="choose a rank"):
        run_to_end(export_peft_adapters(ws.base, merged, ws.pairs, ws.tasks, tmp_path / "no-rank"))
    assert not (tmp_path / "no-rank").exists()
    low = run_to_end(export_peft_adapters(ws.base, merged, ws.pairs, ws.tasks, tmp_path / "r2", rank=2))
    high = run_to_end(export_peft_adapters(ws.base, merged, ws.pairs, ws.tasks, tmp_path / "r16", rank=16))
    assert 0 < high < low < 1


def test_export_refuses_an_existing_folder_and_force_replaces_it(ws, tmp_path):
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec()))
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(OsrmError, match="out: already exists; pass --force"):
        run_to_end(export_full_models(ws.base, merged, ws.pairs, ws.tasks, target))
    assert (target / "keep.txt").read_text() == "mine"
    run_to_end(export_full_models(ws.base, merged, ws.pairs, ws.tasks, target, force=True))
    assert not (target / "keep.txt").exists() and (target / "colour" / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary leftovers


def test_cancelled_export_leaves_nothing(ws, tmp_path):
    merged = run_to_end(merge_adapters(ws.adapters, MergeSpec()))
    job = export_full_models(ws.base, merged, ws.pairs, ws.tasks, tmp_path / "out")
    next(job)
    job.close()
    assert list(tmp_path.iterdir()) == []


def test_recipe_replays_to_identical_weights(ws, tmp_path):
    spec = MergeSpec("dare_ties", [0.9, 1.1], 0.7, {"density": 0.4}, seed=5)
    first = run_to_end(merge_adapters(ws.adapters, spec))
    write_recipe(build_recipe(ws.base, ws.adapters, spec), tmp_path / "r.json")
    recipe, adapters, replayed_spec = read_recipe(tmp_path / "r.json")
    assert recipe["merge"]["params"] == {"density": 0.4, "majority_sign_method": "total"}
    second = run_to_end(merge_adapters(adapters, replayed_spec))
    assert set(first.layers) == set(second.layers)
    for name in first.layers:
        assert torch.equal(first.layers[name].dense(), second.layers[name].dense())


def test_recipe_detects_a_changed_adapter(ws, tmp_path, tiny_base_dir):
    import shutil

    copy = tmp_path / "colour"
    shutil.copytree(ws.adapters[0].path, copy)
    from osrm_gui.core.inputs.adapters import load_adapter

    write_recipe(build_recipe(ws.base, [load_adapter(copy)], MergeSpec()), tmp_path / "r.json")
    from tests.conftest import make_adapter

    shutil.rmtree(copy)
    make_adapter(tiny_base_dir, copy, None, 2, seed=99)
    with pytest.raises(OsrmError, match="has changed since the recipe was written"):
        read_recipe(tmp_path / "r.json")
