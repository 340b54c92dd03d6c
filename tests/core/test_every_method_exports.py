"""Every registered method merges, exports as full models that plain transformers loads, and as
PEFT adapters (SVD-compressed where the result is dense) that reproduce its update."""

import pytest
import torch

from osrm_gui.core.export import export_merge
from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.merge import METHODS
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace

FAST = {"doge": {"steps": 10}, "fisher": {"fisher_examples": 4}}  # their defaults are slow on purpose
LAYER = "bert.encoder.layer.0.attention.self.value"


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


@pytest.mark.parametrize("method", list(METHODS))
def test_exports_reload_and_carry_the_merge(ws, tmp_path, method):
    from transformers import AutoModelForSequenceClassification

    spec = MergeSpec(method, [1.0, 0.8], 0.9, FAST.get(method, {}))
    merged = run_to_end(ws.merge(spec))
    run_to_end(export_merge(ws, spec, "full", tmp_path / "full"))
    run_to_end(export_merge(ws, spec, "adapter", tmp_path / "lora", rank=32))  # rank 32 = the layers' size: exact
    w0 = ws.base.model.get_submodule(LAYER).weight.detach()
    for index, task in enumerate(ws.tasks):
        expected = merged.dense_deltas(index if merged.per_task else None)[LAYER].float()
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "full" / task.name)
        assert model.config.num_labels == task.num_labels
        torch.testing.assert_close(model.get_submodule(LAYER).weight.detach() - w0, expected, atol=1e-5, rtol=0)
        exported = load_adapter(tmp_path / "lora" / task.name)
        torch.testing.assert_close(exported.layers[LAYER].delta(), expected, atol=1e-4, rtol=0)
