import json

import pytest
import torch

from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.tasks import resolve_task
from osrm_gui.core.osrm.training import TrainSettings, train_adapter


@pytest.fixture(scope="module")
def task(tiny_tasks):
    return resolve_task(str(tiny_tasks["animal"]))


def _train(tiny_base_dir, task, out, **overrides):
    settings = TrainSettings(**{"rank": 4, "alpha": 8, "steps": 60, "batch_size": 16, "lr": 2e-2, "max_length": 16, "seed": 3, **overrides})
    events = []
    job = train_adapter(tiny_base_dir, task, out, settings, device="cpu")
    while True:
        try:
            events.append(next(job))
        except StopIteration as stop:
            return stop.value, events


def test_training_learns_and_saves_a_peft_adapter(tiny_base_dir, task, tmp_path):
    result, events = _train(tiny_base_dir, task, tmp_path / "ad")
    assert [e.done for e in events] == list(range(1, 61)) and events[-1].total == 60
    first = sum(e.loss for e in events[:5]) / 5
    last = sum(e.loss for e in events[-5:]) / 5
    assert last < first * 0.7, (first, last)
    adapter = load_adapter(result.path)
    assert adapter.task == "animal" and adapter.num_labels == 3 and adapter.ranks == [4]
    meta = json.loads((result.path / "osrm_adapter.json").read_text())
    assert meta["settings"]["targets"] == ["query", "value"] and meta["init"] == "peft-default"
    assert json.loads((result.path / "adapter_config.json").read_text())["base_model_name_or_path"] == tiny_base_dir.name


def test_frozen_a_stays_at_its_init_and_b_trains(tiny_base_dir, task, tmp_path):
    torch.manual_seed(3)
    result, _ = _train(tiny_base_dir, task, tmp_path / "fa", freeze_a=True, init="gaussian", steps=10)
    adapter = load_adapter(result.path)
    layer = adapter.layers["bert.encoder.layer.0.attention.self.query"]
    assert layer.B.abs().sum() > 0
    # the same seed reproduces the initial A exactly
    again, _ = _train(tiny_base_dir, task, tmp_path / "fa2", freeze_a=True, init="gaussian", steps=1)
    assert torch.equal(load_adapter(again.path).layers["bert.encoder.layer.0.attention.self.query"].A, layer.A)


def test_head_only_probe_keeps_b_zero(tiny_base_dir, task, tmp_path):
    result, _ = _train(tiny_base_dir, task, tmp_path / "probe", freeze_a=True, freeze_b=True, steps=10)
    adapter = load_adapter(result.path)
    assert all(layer.B.abs().sum() == 0 for layer in adapter.layers.values())


def test_cancel_leaves_no_output(tiny_base_dir, task, tmp_path):
    job = train_adapter(tiny_base_dir, task, tmp_path / "cancelled", TrainSettings(steps=50, batch_size=8), device="cpu")
    for _ in range(3):
        next(job)
    job.close()
    assert list(tmp_path.iterdir()) == []


def test_bad_settings(tiny_base_dir, task, tmp_path):
    with pytest.raises(OsrmError, match="unknown init 'orthogonal'"):
        next(train_adapter(tiny_base_dir, task, tmp_path / "x", TrainSettings(init="orthogonal")))
    with pytest.raises(OsrmError, match="target module.*q_proj not found"):
        next(train_adapter(tiny_base_dir, task, tmp_path / "x", TrainSettings(targets=["q_proj"])))
    (tmp_path / "exists").mkdir()
    with pytest.raises(OsrmError, match="already exists"):
        next(train_adapter(tiny_base_dir, task, tmp_path / "exists"))
