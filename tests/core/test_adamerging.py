"""AdaMerging: the differentiable stacked-LoRA engine against dense weights set directly, its
gradient against autograd through a dense model, the job's rules (inputs only, no test pool, no
regression), AdaMerging++'s trimming against numpy, and exports that reproduce the learned model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.explore.adamerging import (
    AdaMergingStep,
    adamerge,
    export_result,
    mean_entropy,
)
from osrm_gui.core.inputs.adapters import LoraLayer
from osrm_gui.core.merge.learnable_lora import LearnableLoraMerge, trim_task_vectors
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.workspace import open_workspace
from tests.conftest import make_adapter
from tests.job_support import drive
from tests.tolerances import assert_within, logits_bound


@pytest.fixture(scope="module")
def ws(tiny_base_dir, tiny_adapters):
    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


def _names(adapters) -> list[str]:
    return sorted({n for a in adapters for n in a.layers})


def _inputs(ws, task, split="validation", n=8):
    return ws.base.tokenizer(task.split(split).texts[:n], return_tensors="pt", padding=True)


def _dense_deltas(adapters, lam: np.ndarray, vectors=None) -> dict[str, torch.Tensor]:
    """Σ_i λ_i^ℓ ΔW_i^ℓ in float64 from the adapters' own factors (or given dense ``vectors``)."""
    deltas = {}
    for j, name in enumerate(_names(adapters)):
        total = 0
        for i, a in enumerate(adapters):
            if name in a.layers:
                layer = a.layers[name]
                dense = vectors[i][name].double() if vectors else layer.scaling * (layer.B.double() @ layer.A.double())
                total = total + float(lam[i, j]) * dense
        deltas[name] = total
    return deltas


def _logits(ws, task, inputs, engine=None, deltas=None) -> np.ndarray:
    ws.base.set_head(ws.heads[task.name])
    try:
        if deltas is not None:
            ws.base.set_deltas({n: d.float() for n, d in deltas.items()})
        with torch.no_grad():
            if engine is None:
                return ws.base.model(**inputs).logits.numpy()
            with engine.installed():
                return ws.base.model(**inputs).logits.numpy()
    finally:
        ws.base.set_head(None)
        ws.base.clear_deltas()


@pytest.mark.parametrize("layer_wise, plus", [(False, False), (True, False), (True, True)])
def test_hooks_equal_dense_weights_set_directly(ws, layer_wise, plus):
    lam = np.random.default_rng(0).uniform(-0.5, 1.5, size=(2, len(_names(ws.adapters))))
    if not layer_wise:
        lam[:, :] = lam[:, :1]
    vectors = trim_task_vectors(ws.adapters, 0.2) if plus else None
    engine = LearnableLoraMerge(ws.base, ws.adapters, layer_wise, trimmed=vectors)
    engine.set_coefficients(lam if layer_wise else lam[:, 0])
    np.testing.assert_allclose(engine.table(), lam, rtol=1e-6)
    task = ws.tasks[1]
    inputs = _inputs(ws, task)
    hooked = _logits(ws, task, inputs, engine)
    direct = _logits(ws, task, inputs, deltas=_dense_deltas(ws.adapters, lam, vectors))
    plain = _logits(ws, task, inputs)
    bound = logits_bound(ws.base.model.config, ws.heads[task.name], inputs["input_ids"].shape[1], lora_rank=6)
    assert_within(hooked, direct, bound, "hooked vs dense logits")
    assert np.abs(hooked - plain).max() > 100 * bound.max()  # the merge shows, so the comparison can fail
    assert not any(m._forward_hooks for m in ws.base.model.modules())  # hooks only inside the block


def test_entropy_gradient_matches_autograd_through_dense_weights(ws):
    from torch.func import functional_call

    names = _names(ws.adapters)
    lam = np.random.default_rng(1).uniform(0.1, 0.9, size=(2, len(names)))
    engine = LearnableLoraMerge(ws.base, ws.adapters, layer_wise=True)
    engine.set_coefficients(lam)
    task = ws.tasks[0]
    inputs = _inputs(ws, task, n=10)
    ws.base.set_head(ws.heads[task.name])
    try:
        with engine.installed():
            mean_entropy(ws.base.model(**inputs).logits).backward()
        ours = engine.coefficients.grad.clone()
        # independently: W(λ) = W0 + Σ_i λ_i^ℓ ΔW_i^ℓ as differentiable weights, H written out
        direct_lam = torch.tensor(lam, dtype=torch.float32, requires_grad=True)
        params = {}
        for j, name in enumerate(names):
            w0 = ws.base.model.get_submodule(name).weight
            params[f"{name}.weight"] = w0 + sum(direct_lam[i, j] * a.layers[name].delta() for i, a in enumerate(ws.adapters))
        p = torch.softmax(functional_call(ws.base.model, params, args=(), kwargs=dict(inputs)).logits, dim=-1)
        (-(p * torch.log(p)).sum(-1).mean()).backward()
    finally:
        ws.base.set_head(None)
    assert ours.abs().max() > 1e-4  # a gradient to compare
    torch.testing.assert_close(ours, direct_lam.grad, rtol=2e-3, atol=1e-6)


def _pool_entropy(ws, lam) -> float:
    """Σ over tasks of the mean entropy over the whole validation pool, with dense weights."""
    total = 0.0
    for task in ws.tasks:
        inputs = ws.base.tokenizer(task.split("validation").texts, return_tensors="pt", padding=True)
        total += float(mean_entropy(torch.from_numpy(_logits(ws, task, inputs, deltas=_dense_deltas(ws.adapters, lam)))))
    return total


def test_entropy_decreases_and_the_loss_is_the_summed_task_entropy(ws):
    # one batch holds the whole pool: each step's loss is the full-pool entropy at that step's λ
    result = run_to_end(adamerge(ws, "layer", steps=12, lr=0.05, batch_size=1000))
    start = np.full((2, len(result.layers)), 0.3)
    assert result.history[0].entropy == pytest.approx(_pool_entropy(ws, start), rel=1e-4)
    assert result.history[0].entropy == pytest.approx(sum(result.history[0].task_entropy), rel=1e-6)
    assert result.history[-1].entropy < result.history[0].entropy - 1e-3
    assert _pool_entropy(ws, result.coefficients) < _pool_entropy(ws, start) - 1e-3
    assert [e.step for e in result.history] == list(range(1, 13))
    assert result.coefficients.shape == (2, 4) and ((result.coefficients >= 0) & (result.coefficients <= 1)).all()


def test_events_are_plain_and_validation_is_scored_every_n(ws):
    result, events = drive(adamerge(ws, "task", steps=4, eval_every=2, lr=0.01))
    steps = [e for e in events if isinstance(e, AdaMergingStep)]
    assert steps == result.history and [e.validation is not None for e in steps] == [False, True, False, True]
    for event in steps:
        assert isinstance(event.entropy, float) and all(isinstance(v, float) for row in event.coefficients for v in row)
    # task-wise: the table repeats each adapter's one λ across the layers
    assert np.ptp(result.coefficients, axis=1).max() == 0
    assert result.merged.spec.method == "concat" and result.merged.spec.coefficients == pytest.approx(result.coefficients[:, 0].tolist())
    assert result.to_dict()["history"][1]["validation"] == steps[1].validation


class _Unreadable:
    """Labels that fail the test when anything looks at them."""

    def __getattr__(self, name):
        raise AssertionError(f"pool labels were read ({name})")

    def __getitem__(self, key):
        raise AssertionError("pool labels were read")

    def __len__(self):
        raise AssertionError("pool labels were read")

    def __array__(self, *args, **kwargs):
        raise AssertionError("pool labels were read")


def test_pool_labels_are_never_read_and_shuffling_is_seeded(tiny_base_dir, tiny_adapters, ws):
    clean = run_to_end(adamerge(ws, "layer", steps=2, lr=0.05, batch_size=5, seed=3))
    poisoned_ws = open_workspace(tiny_base_dir, tiny_adapters, device="cpu")
    for task in poisoned_ws.tasks:
        task.splits["validation"].labels = _Unreadable()
    poisoned = run_to_end(adamerge(poisoned_ws, "layer", steps=2, lr=0.05, batch_size=5, seed=3))
    np.testing.assert_array_equal(poisoned.coefficients, clean.coefficients)
    for task in poisoned_ws.tasks:  # and garbage labels change nothing
        task.splits["validation"].labels = np.full(len(task.splits["validation"].texts), np.nan)
    garbage = run_to_end(adamerge(poisoned_ws, "layer", steps=2, lr=0.05, batch_size=5, seed=3))
    np.testing.assert_array_equal(garbage.coefficients, clean.coefficients)
    other = run_to_end(adamerge(ws, "layer", steps=2, lr=0.05, batch_size=5, seed=4))
    assert not np.array_equal(other.coefficients, clean.coefficients)


def test_cancel_leaves_the_plain_base(ws):
    task = ws.tasks[0]
    inputs = _inputs(ws, task)
    before = _logits(ws, task, inputs)
    default_head = ws.base.model.classifier
    job = adamerge(ws, "layer", steps=50)
    for _ in range(3):
        next(job)
    job.close()
    assert not any(m._forward_hooks for m in ws.base.model.modules())
    assert ws.base.model.classifier is default_head
    np.testing.assert_array_equal(_logits(ws, task, inputs), before)


def test_clamp_keeps_lambda_in_unit_interval(ws):
    clamped = run_to_end(adamerge(ws, "layer", steps=3, lr=0.5))
    free = run_to_end(adamerge(ws, "layer", steps=3, lr=0.5, clamp=False))
    assert ((clamped.coefficients >= 0) & (clamped.coefficients <= 1)).all()
    assert ((free.coefficients < 0) | (free.coefficients > 1)).any()


def test_test_pool_regression_and_bad_settings_are_refused(ws, tmp_path, tiny_base_dir):
    def refused(**kwargs) -> str:
        with pytest.raises(OsrmError) as info:
            adamerge(ws, **kwargs)  # at the call, before any work
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "test" in refused(pool="test") and "validation or train" in refused(pool="test")
    assert "mode" in refused(mode="block")
    assert "steps" in refused(steps=-1)
    assert "learning rate" in refused(lr=0.0)
    assert "initial" in refused(init=float("nan"))
    assert "density" in refused(plus=True, density=1.5)
    rows = ["text,label"] + [f"{w} very good,{i % 5 / 4}" for i, w in enumerate(["red", "cat", "dog", "fish", "blue"] * 8)]
    (tmp_path / "score.csv").write_text("\n".join(rows) + "\n")
    adapter = make_adapter(tiny_base_dir, tmp_path / "score", tmp_path / "score.csv", num_labels=1, seed=3)
    reg_ws = open_workspace(tiny_base_dir, [adapter], [f"{tmp_path / 'score.csv'}@regression"], device="cpu")
    with pytest.raises(OsrmError, match="regression.*softmax"):
        adamerge(reg_ws)


def _numpy_trim(vectors: np.ndarray, density: float) -> np.ndarray:
    """The AdaMerging++ split TIES, written out in numpy: per row keep |v| ≥ its k-th smallest
    magnitude (k = D − ⌊density·D⌋), elect signs from the column sums (0 → the sign of the sum of
    signs), keep the entries that agree."""
    size = vectors.shape[1]
    k = size - int(size * density)
    kth = np.sort(np.abs(vectors), axis=1)[:, k - 1:k] if k >= 1 else np.zeros((len(vectors), 1))  # density 1: keep all
    trimmed = np.where(np.abs(vectors) >= kth, vectors, 0.0)
    sign = np.sign(trimmed.sum(axis=0))
    sign[sign == 0] = np.sign(sign.sum())
    keep = np.where(sign > 0, trimmed > 0, trimmed < 0)
    return np.where(keep, trimmed, 0.0)


def test_plus_trimming_matches_numpy():
    g = torch.Generator().manual_seed(0)

    def layer(d_out, d_in, r=2):
        return LoraLayer(torch.randn(r, d_in, generator=g), torch.randn(d_out, r, generator=g), 0.5)

    a = {"x": layer(6, 5), "y": layer(4, 5)}
    opposite = LoraLayer(a["x"].A, -a["x"].B, 0.5)  # cancels adapter a on x: zero sums, resolved by the majority sign
    adapters = [SimpleNamespace(layers=a), SimpleNamespace(layers={"x": opposite}), SimpleNamespace(layers={"y": layer(4, 5), "z": layer(3, 3)})]
    names = ["x", "y", "z"]
    shapes = {"x": (6, 5), "y": (4, 5), "z": (3, 3)}
    flat = np.stack([np.concatenate([(ad.layers[n].delta().numpy() if n in ad.layers else np.zeros(shapes[n], np.float32)).ravel()
                                     for n in names]) for ad in adapters])
    for density in (0.2, 0.5, 1.0):
        expected = _numpy_trim(flat, density)
        got = trim_task_vectors(adapters, density)
        start = 0
        for name in names:
            count = shapes[name][0] * shapes[name][1]
            for i, ad in enumerate(adapters):
                want = expected[i, start:start + count].reshape(shapes[name])
                if name in ad.layers:
                    np.testing.assert_array_equal(got[i][name].numpy(), want)
                else:
                    assert name not in got[i] and not want.any()
            start += count
        if density == 0.2:
            kept = (expected != 0).sum(axis=1)
            assert (kept <= int(flat.shape[1] * 0.2) + 1).all() and (kept > 0).all()


def test_exports_reproduce_the_learned_model(ws, tmp_path, tiny_base_dir):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from osrm_gui.core.export import read_recipe

    task_wise = run_to_end(adamerge(ws, "task", steps=2, lr=0.05))
    layer_wise = run_to_end(adamerge(ws, "layer", steps=2, lr=0.05))
    plus = run_to_end(adamerge(ws, "layer", plus=True, steps=2, lr=0.05))
    run_to_end(export_result(ws, task_wise, "adapter", tmp_path / "task-peft"))
    run_to_end(export_result(ws, layer_wise, "full", tmp_path / "layer-full"))
    run_to_end(export_result(ws, layer_wise, "adapter", tmp_path / "layer-peft"))
    run_to_end(export_result(ws, plus, "full", tmp_path / "plus-full"))
    for task in ws.tasks:
        inputs = _inputs(ws, task)
        bound = logits_bound(ws.base.model.config, ws.heads[task.name], inputs["input_ids"].shape[1], lora_rank=6)
        for result, folder, peft in ((task_wise, "task-peft", True), (layer_wise, "layer-full", False), (layer_wise, "layer-peft", True),
                                     (plus, "plus-full", False)):
            engine = LearnableLoraMerge(ws.base, ws.adapters, True, trimmed=trim_task_vectors(ws.adapters, 0.2) if result.plus else None)
            engine.set_coefficients(result.coefficients)
            learned = _logits(ws, task, inputs, engine)
            if peft:
                model = AutoModelForSequenceClassification.from_pretrained(tiny_base_dir, num_labels=task.num_labels, ignore_mismatched_sizes=True)
                model = PeftModel.from_pretrained(model, tmp_path / folder / task.name)
            else:
                model = AutoModelForSequenceClassification.from_pretrained(tmp_path / folder / task.name)
            with torch.no_grad():
                exported = model.eval()(**inputs).logits.numpy()
            assert_within(exported, learned, bound, f"{folder} logits of {task.name}")
            assert np.abs(learned - _logits(ws, task, inputs)).max() > 100 * bound.max()
    # a plain task-wise result replays from a recipe (concat with the learned coefficients) …
    run_to_end(export_result(ws, task_wise, "recipe", tmp_path / "task.recipe.json"))
    _, adapters, spec = read_recipe(tmp_path / "task.recipe.json")
    assert spec.method == "concat" and spec.coefficients == pytest.approx(task_wise.coefficients[:, 0].tolist())
    replayed = run_to_end(open_workspace(tiny_base_dir, [a.path for a in adapters], device="cpu").merge(spec))
    for name, delta in task_wise.merged.dense_deltas().items():
        torch.testing.assert_close(replayed.dense_deltas()[name], delta, rtol=1e-5, atol=1e-6)
    # … the others are refused in one line, and ++ needs a rank for LoRA factors
    for result in (layer_wise, plus):
        with pytest.raises(OsrmError, match="cannot be written as a recipe") as info:
            run_to_end(export_result(ws, result, "recipe", tmp_path / "other.recipe.json"))
        assert "\n" not in str(info.value) and not (tmp_path / "other.recipe.json").exists()
    with pytest.raises(OsrmError, match="choose a rank"):
        run_to_end(export_result(ws, plus, "adapter", tmp_path / "plus-peft"))
