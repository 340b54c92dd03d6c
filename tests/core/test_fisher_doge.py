"""DOGE and Fisher merging, each against an independent computation written here: DOGE's δ
against fusion_bench's loss run through autograd and torch.optim.Adam, the per-example Fisher
against torch.func's Jacobian of the log-probabilities, and the Fisher merge against a formula
evaluated entry by entry."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from osrm_gui.core.merge import doge, fisher, merge_layers
from osrm_gui.core.progress import run_to_end
from tests.tolerances import U32, U64, gamma


def lora_stack(ranks, m=12, n=10, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    factors = [(torch.randn(r, n, generator=g, dtype=dtype), torch.randn(m, r, generator=g, dtype=dtype)) for r in ranks]
    return factors, torch.stack([B @ A for A, B in factors])


# -- DOGE ---------------------------------------------------------------------------------------

def reference_projector(stack, ranks):
    """fusion_bench's shared subspace (sum_u blocks, SVD, top columns) with the LoRA caps."""
    T, m, n = stack.shape
    k = min(m, n)
    columns = []
    for i in range(T):
        u = np.linalg.svd(stack[i].numpy(), full_matrices=False)[0]
        columns.append(u[:, : min(k // T, ranks[i], np.linalg.matrix_rank(stack[i].numpy()))])
    cat = np.concatenate(columns, axis=1)
    u_u, _, _ = np.linalg.svd(cat, full_matrices=False)
    p = min(k // 6, np.linalg.matrix_rank(cat))
    return torch.tensor(u_u[:, :p] @ u_u[:, :p].T)


def reference_delta(stack, lamdas, projection, lr, steps):
    """fusion_bench's ``taskvector_loss`` + ``optimize_delta``, verbatim in spirit: autograd, Adam."""
    delta = torch.nn.Parameter(torch.zeros_like(stack[0]))
    optimizer = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        scaled_sum = (stack * lamdas.view(-1, 1, 1)).sum(dim=0)
        delta_sum = (delta.unsqueeze(0) * lamdas.view(-1, 1, 1)).sum(dim=0)
        loss = 0.0
        for v in stack:
            loss = loss + (-v * scaled_sum - v * delta_sum + v * v).sum(dim=1).pow(2).sum()
        loss.backward()
        delta.grad.data = delta.grad.data.sub_(projection @ delta.grad.detach())
        optimizer.step()
    return delta.detach()


def np_top_mask(tau, keep):
    count = max(1, int(keep * tau.size))
    order = np.argsort(-np.abs(tau).ravel(), kind="stable")[:count]
    mask = np.zeros(tau.size, dtype=bool)
    mask[order] = True
    return mask.reshape(tau.shape)


@pytest.mark.parametrize("lamda, lr, steps", [(0.07, 1e-4, 25), (1.0, 0.2, 40)])
def test_doge_delta_follows_the_reference_loss_and_adam(lamda, lr, steps):
    ranks = [3, 2, 2]
    _, stack = lora_stack(ranks, m=24, n=20, seed=1)
    stack = stack * torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64).view(-1, 1, 1)  # τ_i = c_i ΔW_i
    lamdas = lamda / torch.linalg.matrix_norm(stack)
    basis = doge.shared_subspace(stack, ranks)
    projection = reference_projector(stack, ranks)
    torch.testing.assert_close(basis @ basis.T, projection, rtol=0, atol=1e-12)
    got = doge.optimise_delta(stack, lamdas, basis, lr, steps)
    expected = reference_delta(stack, lamdas, projection, lr, steps)
    # Both run in float64. The two gradients (closed form here, autograd there) differ by the rounding
    # of their reductions (n-long row sums, T-long task sums, m-long projections): γ_{T(m+n)} relative.
    # Adam's step is invariant to the gradient's scale, so each step's relative error is of that
    # order, and over `steps` steps (with the feedback through L) the errors add, relative to δ.
    bound = 4 * steps * gamma(len(ranks) * sum(stack.shape[1:]), U64) * float(expected.abs().max())
    assert float((got - expected).abs().max()) <= bound
    assert float(expected.abs().max()) > 0.1 * lr  # δ moved
    wrong = reference_delta(stack, lamdas, projection, lr * 1.01, steps)  # a 1 % error is far outside the bound
    assert float((wrong - expected).abs().max()) > 1e3 * bound
    unprojected = reference_delta(stack, lamdas, torch.zeros_like(projection), lr, steps)
    assert float((unprojected - expected).abs().max()) > 1e3 * bound
    if lamda == 1.0:  # here δ changes the loss: the gradient at the end is not the one at the start
        g0 = doge.loss_gradient(stack, lamdas, torch.zeros_like(got))
        g1 = doge.loss_gradient(stack, lamdas, got)
        assert float((g1 - g0).norm() / g0.norm()) > 0.05


def test_doge_gradient_is_the_loss_gradient_and_its_projection_leaves_the_shared_subspace():
    ranks = [3, 2]
    factors, stack = lora_stack(ranks, m=48, n=40, seed=2)
    lamdas = 0.07 / torch.linalg.matrix_norm(stack)
    delta = torch.randn(48, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 1e-2
    # closed form against autograd of L(δ) = Σ_j Σ_rows (Σ_cols τ_j ⊙ (τ_j − S − Λδ))²
    d = delta.clone().requires_grad_(True)
    S, Lam = (lamdas.view(-1, 1, 1) * stack).sum(0), lamdas.sum()
    loss = sum(((t * (t - S - Lam * d)).sum(dim=1) ** 2).sum() for t in stack)
    (auto,) = torch.autograd.grad(loss, d)
    torch.testing.assert_close(doge.loss_gradient(stack, lamdas, delta), auto, rtol=1e-12, atol=1e-14 * float(auto.abs().max()))

    basis = doge.shared_subspace(stack, ranks)
    # k = 40: ⌊k/T⌋ = 20 per task, capped at the ranks (3 + 2); ⌊k/6⌋ = 6, capped at rank(U_cat) = 5 ≤ R
    assert basis.shape == (48, 5)
    torch.testing.assert_close(basis.T @ basis, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-12)
    columns = torch.linalg.qr(torch.cat([B for _, B in factors], dim=1)).Q  # the adapters' column spaces
    assert float((basis - columns @ (columns.T @ basis)).abs().max()) < 1e-12  # no null-space directions
    grad = doge.loss_gradient(stack, lamdas, delta)
    projected = doge.project_off(grad, basis)
    assert float((basis.T @ grad).norm()) > 1e-3 * float(grad.norm())  # there was something to remove
    assert float((basis.T @ projected).norm()) <= 1e-13 * float(grad.norm())
    # with more tasks the per-task take shrinks: ⌊k/T⌋ below the rank
    _, many = lora_stack([3] * 8, m=16, n=16, seed=4)
    assert doge.shared_subspace(many, [3] * 8).shape[1] == min(16 // 6, 8 * (16 // 8))


def test_doge_masks_keep_the_stated_fraction_and_steps_zero_is_masked_normalised_sum():
    ranks = [4, 2]
    _, stack = lora_stack(ranks, m=20, n=15, seed=5)
    for keep in (0.3, 0.05, 1.0):
        for tau in stack:
            mask = doge.top_fraction_mask(tau, keep)
            assert int(mask.sum()) == max(1, int(keep * tau.numel()))
            np.testing.assert_array_equal(mask.numpy(), np_top_mask(tau.numpy(), keep))
    merged = doge.doge_merge(stack, lamda=0.07, lr=1e-4, steps=0, keep=0.3, ranks=ranks)
    expected = sum(0.07 / np.linalg.norm(t) * t * np_top_mask(t, 0.3) for t in stack.numpy())
    np.testing.assert_allclose(merged.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_doge_through_the_engine():
    ranks = [3, 2]
    factors, _ = lora_stack(ranks, m=16, n=12, seed=6, dtype=torch.float32)
    adapters = [{"a": (A, B, 0.5), "b": (A[:, :8] * 2, B, 1.0)} for A, B in factors]
    params = {"steps": 30, "lr": 1e-3}
    results = dict(merge_layers(adapters, doge.METHOD, [1.0, 2.0], 0.5, params, seed=1))
    again = dict(merge_layers(adapters, doge.METHOD, [1.0, 2.0], 0.5, params, seed=99))  # nothing is drawn
    for name in ("a", "b"):
        stack = torch.stack([s * (B @ A) for A, B, s in (ad[name] for ad in adapters)]) * torch.tensor([1.0, 2.0]).view(-1, 1, 1)
        expected = 0.5 * doge.doge_merge(stack, 0.07, 1e-3, 30, 0.3, ranks)
        torch.testing.assert_close(results[name].delta, expected, rtol=0, atol=0)
        assert torch.equal(results[name].delta, again[name].delta)
        assert results[name].delta.shape == stack.shape[1:]
    # a zero coefficient leaves that adapter out; its λ_i would be infinite
    (_, zero), = [(n, r) for n, r in merge_layers(adapters, doge.METHOD, [1.0, 0.0], 1.0, params) if n == "a"]
    A, B = factors[0]
    alone = doge.doge_merge((0.5 * (B @ A)).unsqueeze(0), 0.07, 1e-3, 30, 0.3, [3])
    torch.testing.assert_close(zero.delta, alone, rtol=0, atol=0)
    with pytest.raises(ValueError, match="steps must be ≤ 5000"):
        doge.METHOD.resolve_params({"steps": 5001})


# -- Fisher: the merge -----------------------------------------------------------------------------

def np_fisher_merge(deltas, fishers, weights, norms):
    """The merge formula one entry at a time."""
    m, n = deltas[0].shape
    out = np.zeros((m, n))
    for r in range(m):
        for c in range(n):
            tilde = [(f[r, c] / nm if norms is not None else f[r, c]) + 1e-6 for f, nm in zip(fishers, norms or [1] * len(fishers))]
            den = sum(w * t for w, t in zip(weights, tilde))
            if den == 0:
                out[r, c] = sum(w * d[r, c] for w, d in zip(weights, deltas)) / len(deltas)
            else:
                out[r, c] = sum(w * t * d[r, c] for w, t, d in zip(weights, tilde, deltas)) / den
    return out


def fisher_inputs(seed=7, layers=("l1", "l2"), ranks=(3, 2), m=6, n=5, scale=1e-3):
    g = torch.Generator().manual_seed(seed)
    adapters, fishers = [], []
    for r in ranks:
        adapters.append({name: (torch.randn(r, n, generator=g), torch.randn(m, r, generator=g), 0.5) for name in layers})
        fishers.append({name: scale * torch.rand(m, n, generator=g) ** 3 for name in layers})
    return adapters, fishers


@pytest.mark.parametrize("normalize", ["on", "off"])
def test_fisher_layer_merge_is_the_formula(normalize):
    adapters, fishers = fisher_inputs()
    coefficients, lam = [0.7, 1.6], 0.8
    # "the whole model": each adapter's norm runs over both of its layers
    norms = [float(np.sqrt(sum((f[k].double() ** 2).sum() for k in f))) for f in fishers] if normalize == "on" else None
    results = dict(merge_layers(adapters, fisher.METHOD, coefficients, lam, {"normalize": normalize}, fishers=fishers))
    for name in ("l1", "l2"):
        deltas = [(s * (B.double() @ A.double())).numpy() for A, B, s in (a[name] for a in adapters)]
        expected = lam * np_fisher_merge(deltas, [f[name].double().numpy() for f in fishers], coefficients, norms)
        # float64 inside, float32 out: one rounding of the result
        np.testing.assert_allclose(results[name].delta.double().numpy(), expected, rtol=2 * U32, atol=0)
        average = lam * sum(c * d for c, d in zip(coefficients, deltas)) / sum(coefficients)
        assert np.abs(expected - average).max() > 1e-2 * np.abs(average).max()  # the Fishers matter


def test_fisher_with_equal_fishers_is_the_weighted_average_and_zero_denominators_fall_back():
    adapters, fishers = fisher_inputs(seed=8)
    equal = [fishers[0], fishers[0]]
    proportional = [fishers[0], {k: 37.0 * v for k, v in fishers[0].items()}]  # same after normalising
    for params, given in (({"normalize": "off"}, equal), ({"normalize": "on"}, equal), ({"normalize": "on"}, proportional)):
        results = dict(merge_layers(adapters, fisher.METHOD, [0.3, 1.2], 2.0, params, fishers=given))
        linear = dict(merge_layers(adapters, "linear", [0.3, 1.2], 2.0))
        for name, result in results.items():
            torch.testing.assert_close(result.delta, linear[name].delta, rtol=1e-5, atol=1e-6)
    # c = (1, −1) with equal Fishers: every denominator is 0, so the plain average (ΔW_1 − ΔW_2)/2
    results = dict(merge_layers(adapters, fisher.METHOD, [1.0, -1.0], 1.0, {}, fishers=equal))
    for name, result in results.items():
        (A1, B1, s1), (A2, B2, s2) = adapters[0][name], adapters[1][name]
        torch.testing.assert_close(result.delta, (s1 * B1 @ A1 - s2 * B2 @ A2) / 2, rtol=1e-5, atol=1e-6)


def test_the_engine_checks_the_fishers():
    adapters, fishers = fisher_inputs()
    with pytest.raises(ValueError, match="needs the Fisher information"):
        merge_layers(adapters, fisher.METHOD, [1.0, 1.0])
    with pytest.raises(ValueError, match="no Fisher information for layer 'l2' of adapter 1"):
        merge_layers(adapters, fisher.METHOD, [1.0, 1.0], fishers=[fishers[0], {"l1": fishers[1]["l1"]}])
    with pytest.raises(ValueError, match="is \\(5, 6\\), the layer is 6 × 5"):
        merge_layers(adapters, fisher.METHOD, [1.0, 1.0], fishers=[fishers[0], {**fishers[1], "l1": fishers[1]["l1"].T}])
    with pytest.raises(ValueError, match="negative or non-finite"):
        merge_layers(adapters, fisher.METHOD, [1.0, 1.0], fishers=[fishers[0], {**fishers[1], "l2": -fishers[1]["l2"]}])


# -- Fisher: the information itself ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ws(tiny_base_dir, tiny_adapters):
    from osrm_gui.core.workspace import open_workspace

    return open_workspace(tiny_base_dir, tiny_adapters, device="cpu")


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # jacrev through CPU attention's backward
def test_per_example_fisher_equals_torch_func_and_not_the_batch_sum(tiny_ws):
    from torch.func import functional_call, jacrev

    from osrm_gui.core.osrm.features import sample_split
    from osrm_gui.core.osrm.fisher_info import collect_fisher

    ws = tiny_ws
    base = copy.copy(ws.base)
    base.model = copy.deepcopy(ws.base.model).double()  # float64: the comparison is limited by the float32 accumulation only
    base.dtype, base._originals, base._default_head = torch.float64, {}, None
    adapter, task = ws.adapters[1], ws.tasks[1]  # animal: 3 classes
    assert ws.pairs[task.name] is adapter
    examples, seed = 5, 3
    got = run_to_end(collect_fisher(base, adapter, task, examples, seed))
    # the model is left as it was
    assert not base._originals and base.model.get_submodule(base.head_name) is base._default_head
    assert not any(p.requires_grad for p in base.model.parameters())

    model = copy.deepcopy(base.model)
    head = base.build_head(adapter.head)
    model.classifier = head
    names = sorted(adapter.layers)
    # model i: W0 + ΔW_i, summed in float32 as BaseModel.set_deltas installs it
    weights = {f"{n}.weight": (model.get_submodule(n).weight.float() + adapter.layers[n].delta()).double() for n in names}

    def log_probs(w, inputs):
        return torch.log_softmax(functional_call(model, w, args=(), kwargs=inputs).logits[0], dim=-1)

    data = sample_split(task.split("train"), examples, seed)
    expected = {f"{n}.weight": torch.zeros_like(weights[f"{n}.weight"]) for n in names}
    batch_grad = {k: torch.zeros_like(v) for k, v in expected.items()}
    for text in data.texts:
        inputs = dict(base.tokenizer(text, truncation=True, max_length=128, return_tensors="pt"))
        jac = jacrev(log_probs)(weights, inputs)  # per weight: [classes, d_out, d_in]
        p = log_probs(weights, inputs).exp().detach()
        for k in expected:
            expected[k] += (p.view(-1, 1, 1) * jac[k] ** 2).sum(0) / examples
            batch_grad[k] += (p.sqrt().view(-1, 1, 1) * jac[k]).sum(0)  # ∂ Σ_x Σ_y √p·log p, p held fixed
    for n in names:
        ref = expected[f"{n}.weight"]
        assert got[n].dtype == torch.float32 and got[n].shape == ref.shape
        # The gradients are float64 in both; each term p·g² is rounded to float32 about 5 times (g, its
        # square, p, the product, the final division), then `examples × classes` positive terms are
        # summed in float32: relative to the entry itself, since every term is ≥ 0.
        bound = (gamma(examples * 3) + 6 * U32) * ref + 1e-12 * float(ref.max())
        assert bool(((got[n].double() - ref).abs() <= bound).all())
        assert float(ref.max()) > 0
        batch = batch_grad[f"{n}.weight"] ** 2 / examples  # the batch-summed approximation (METHODS.md §7a pitfall)
        assert float((batch - ref).abs().max()) > 0.1 * float(ref.max())
        assert float((got[n].double() * 1.01 - ref).abs().max()) > float(bound.max())  # a 1 % error would show


def test_fisher_merge_on_a_workspace_caches_and_records_its_data(tiny_ws, monkeypatch):
    from osrm_gui.core import merge as registry
    from osrm_gui.core.merge.spec import MergeSpec
    from osrm_gui.core.osrm import fisher_info

    monkeypatch.setitem(registry.METHODS, "fisher", fisher.METHOD)
    calls = []
    original = fisher_info.collect_fisher

    def counting(*args, **kwargs):
        calls.append(args[1].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(fisher_info, "collect_fisher", counting)
    ws = tiny_ws
    spec = MergeSpec("fisher", [1.0, 1.0], 2.0, {"fisher_examples": 6}, seed=4)
    events = []
    gen = ws.merge(spec)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        merged = stop.value
    stages = {e.stage for e in events}
    assert {"fisher:colour", "fisher:animal", "merge"} <= stages
    assert len(calls) == 2
    again = run_to_end(ws.merge(spec))
    assert len(calls) == 2  # from the cache
    for name in merged.layers:
        assert torch.equal(merged.layers[name].delta, again.layers[name].delta)
    fishers = run_to_end(ws.adapter_fishers(6, 4))
    dense = {name: [a.layers[name].delta() for a in ws.adapters] for name in merged.layers}
    for name, result in merged.layers.items():
        norms = [float(np.sqrt(sum(float((f[k].double() ** 2).sum()) for k in f))) for f in fishers]
        tilde = [f[name].double() / nm + 1e-6 for f, nm in zip(fishers, norms)]
        expected = 2.0 * sum(t * d.double() for t, d in zip(tilde, dense[name])) / sum(tilde)
        torch.testing.assert_close(result.delta.double(), expected, rtol=1e-5, atol=1e-7)
    record = ws.data_record(spec)
    assert [r["task"] for r in record] == ["colour", "animal"]
    assert all(r["hash"] == t.content_hash() and r["samples"] == 6 for r, t in zip(record, ws.tasks))
    assert ws.data_record(MergeSpec("ties", [1.0, 1.0])) is None


def test_osrm_merge_fisher_through_the_cli(capsys, tmp_path, tiny_base_dir, tiny_adapters, monkeypatch):
    from osrm_gui.cli import main
    from osrm_gui.core import merge as registry

    monkeypatch.setitem(registry.METHODS, "fisher", fisher.METHOD)
    monkeypatch.setitem(registry.METHODS, "doge", doge.METHOD)
    recipe = tmp_path / "fisher.recipe.json"
    code = main([str(a) for a in ["merge", "--base", tiny_base_dir, *tiny_adapters, "--method", "fisher", "--param", "fisher_examples=8",
                                  "--limit", "10", "--save-recipe", recipe]])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "with fisher" in out and "colour" in out and "animal" in out
    saved = json.loads(recipe.read_text())
    assert saved["merge"]["method"] == "fisher" and saved["merge"]["params"] == {"fisher_examples": 8, "normalize": "on"}
    assert [d["task"] for d in saved["data"]] == ["colour", "animal"]
    assert all(d["hash"] and d["spec"] and d["samples"] == 8 for d in saved["data"])
    code = main([str(a) for a in ["merge", "--base", tiny_base_dir, *tiny_adapters, "--method", "doge", "--param", "steps=20",
                                  "--no-eval"]])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "with doge" in out
