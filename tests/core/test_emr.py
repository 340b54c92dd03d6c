"""EMR-Merging: the layer rule against a per-entry loop, and each task scored and exported
with its own masked, rescaled update."""

import numpy as np
import pytest
import torch

from osrm_gui.core.merge import get_method
from osrm_gui.core.merge.base import LayerContext, LoraDelta
from osrm_gui.core.merge.emr import emr_storage
from osrm_gui.core.merge.spec import MergeSpec
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace


def deltas(ranks=(2, 3, 1), m=6, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [LoraDelta(i, torch.randn(r, n, generator=g, dtype=torch.float64), torch.randn(m, r, generator=g, dtype=torch.float64), 0.5 + i)
            for i, r in enumerate(ranks)]


def emr_by_hand(weighted):
    T, m, n = weighted.shape
    unified, masks = np.zeros((m, n)), np.zeros((T, m, n), dtype=bool)
    for i in range(m):
        for j in range(n):
            sign = 1.0 if weighted[:, i, j].sum() > 0 else -1.0
            agree = [t for t in range(T) if weighted[t, i, j] * sign > 0]
            unified[i, j] = sign * max((abs(weighted[t, i, j]) for t in agree), default=0.0)
            for t in agree:
                masks[t, i, j] = True
    scales = [np.abs(weighted[t]).mean() / np.abs(masks[t] * unified).mean() for t in range(T)]
    return unified, masks, scales


def test_emr_layer_equals_the_definition_entry_by_entry():
    ds = deltas()
    coefs, lam = (1.0, -0.6, 2.0), 0.8
    ctx = LayerContext("l", coefs, lam, {}, 0)
    result = get_method("emr").merge_layer(ds, ctx)
    weighted = np.stack([c * d.dense(torch.float64).numpy() for c, d in zip(coefs, ds)])
    unified, masks, scales = emr_by_hand(weighted)
    np.testing.assert_allclose(result.delta.numpy(), lam * unified, atol=1e-12)
    for t, d in enumerate(ds):
        np.testing.assert_allclose(result.dense(d.index).numpy(), lam * scales[t] * masks[t] * unified, atol=1e-12)
    assert not np.allclose(result.dense(0).numpy(), result.dense(1).numpy())
    # an adapter that does not target the layer runs it unchanged
    assert torch.count_nonzero(result.dense(7)) == 0


def test_a_zero_sum_elects_minus():
    d = [LoraDelta(0, torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), 1.0),
         LoraDelta(1, torch.ones(1, 1, dtype=torch.float64), -torch.ones(1, 1, dtype=torch.float64), 1.0)]
    result = get_method("emr").merge_layer(d, LayerContext("l", (1.0, 1.0), 1.0, {}, 0))
    assert result.delta.item() == -1.0 and result.dense(0).item() == 0.0 and result.dense(1).item() == -1.0


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def test_each_task_is_scored_with_its_own_update(ws):
    from osrm_gui.core.evaluation import evaluate_tasks

    merged = run_to_end(ws.merge(MergeSpec("emr", None, 1.0)))
    assert merged.per_task
    scores = run_to_end(ws.evaluate(merged, limit=20))
    for index, task in enumerate(ws.tasks):
        ws.base.set_deltas(merged.dense_deltas(index))
        try:
            alone = run_to_end(evaluate_tasks(ws.base, {task.name: ws.heads[task.name]}, [task], "test", 64, 128, 20, {}))
        finally:
            ws.base.clear_deltas()
        assert scores[task.name]["metric"] == alone[task.name]["metric"]
    storage = emr_storage(merged)
    assert storage["total"] == storage["unified"] + storage["masks"] + storage["scales"] > 0


def test_exports_carry_each_tasks_own_update(ws, tmp_path):
    from safetensors.torch import load_file

    from osrm_gui.core.export import export_merge
    from osrm_gui.core.inputs.adapters import load_adapter

    merged = run_to_end(ws.merge(MergeSpec("emr", None, 1.0)))
    run_to_end(export_merge(ws, MergeSpec("emr", None, 1.0), "full", tmp_path / "full"))
    layer = "bert.encoder.layer.0.attention.self.value"
    w0 = ws.base.model.get_submodule(layer).weight.detach()
    for index, task in enumerate(ws.tasks):
        weights = load_file(tmp_path / "full" / task.name / "model.safetensors")
        torch.testing.assert_close(weights[f"{layer}.weight"] - w0, merged.dense_deltas(index)[layer].float(), atol=1e-6, rtol=0)
    run_to_end(export_merge(ws, MergeSpec("emr", None, 1.0), "adapter", tmp_path / "lora", rank=32))
    for index, task in enumerate(ws.tasks):  # rank 32 ≥ min(32, 32): the SVD compression is exact
        exported = load_adapter(tmp_path / "lora" / task.name)
        torch.testing.assert_close(exported.layers[layer].delta(), merged.dense_deltas(index)[layer].float(), atol=1e-5, rtol=0)
