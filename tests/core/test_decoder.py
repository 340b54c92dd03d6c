"""A decoder-only base (Llama-style): default targets, statistics, OSRM init, merge and evaluation."""

import torch

from osrm_gui.core.osrm.features import collect_features
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.inputs.models import load_base
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.inputs.tasks import resolve_task
from osrm_gui.core.osrm.training import TrainSettings, train_adapter
from osrm_gui.core.workspace import open_workspace
from tests.conftest import make_adapter


def test_llama_base_end_to_end(tiny_llama_dir, tiny_tasks, tmp_path):
    base = load_base(tiny_llama_dir, device="cpu")
    assert base.head_name == "score" and base.default_targets == ["q_proj", "v_proj"]
    task = resolve_task(str(tiny_tasks["animal"]))
    features = run_to_end(collect_features(base, task, samples=20))
    assert len(features.layers) == 4 and all(s.gram.shape == (32, 32) for s in features.layers.values())
    settings = TrainSettings(rank=4, alpha=8, steps=2, batch_size=8, max_length=16, init="osrm-cov", osrm_tasks=[str(tiny_tasks["colour"])], osrm_samples=20)
    trained = run_to_end(train_adapter(tiny_llama_dir, task, tmp_path / "animal", settings, device="cpu"))
    other = make_adapter(tiny_llama_dir, tmp_path / "colour", tiny_tasks["colour"], 2, seed=4, targets=("q_proj", "v_proj"))
    ws = open_workspace(tiny_llama_dir, [trained.path, other], device="cpu")
    assert ws.adapters[0].head_name == "score"
    merged = run_to_end(ws.merge(MergeSpec("ties", [1.0, 1.0], 1.0)))
    scores = run_to_end(ws.evaluate(merged))
    assert set(scores) == {"animal", "colour"}
    assert all(torch.isfinite(torch.tensor(s["metric"])) for s in scores.values())
