import numpy as np
import pytest
import torch

from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.explore.compare import compare, load_runs, save_runs, summarise
from osrm_gui.core.analysis.pairwise import mean_off_diagonal
from osrm_gui.core.analysis.interference import interference_matrix, output_energy
from osrm_gui.core.progress import run_to_end
from osrm_gui.core.inputs.tasks import resolve_task
from osrm_gui.core.osrm.training import TrainSettings


def test_interference_from_grams_equals_explicit_activations(tiny_adapters):
    adapters = [load_adapter(p) for p in tiny_adapters]
    rng = np.random.default_rng(0)
    H = [torch.tensor(rng.normal(size=(25, 32))) for _ in adapters]
    layers = sorted(adapters[0].layers)
    grams = [{name: h.T @ h for name in layers} for h in H]
    matrices = interference_matrix(adapters, grams)
    for name in layers:
        for i, a in enumerate(adapters):
            for j, b in enumerate(adapters):
                direct = torch.linalg.matrix_norm(a.layers[name].delta().double() @ H[j].T) / torch.linalg.matrix_norm(
                    b.layers[name].delta().double() @ H[j].T)
                assert matrices[name][i, j] == pytest.approx(float(direct), rel=1e-6)
        assert np.allclose(np.diag(matrices[name]), 1.0)
    expected = np.mean([m[~np.eye(2, dtype=bool)].mean() for m in matrices.values()])
    assert mean_off_diagonal(matrices) == pytest.approx(expected)


def test_orthogonal_update_does_not_interfere():
    gram = torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))  # the task uses dims 0 and 1 only
    delta = torch.zeros(3, 4, dtype=torch.float64)
    delta[:, 2:] = 1.0  # reads only dims 2 and 3
    assert output_energy(delta, gram) == 0.0


def test_compare_trains_each_family_once_and_summarises(tiny_base_dir, tiny_tasks, tmp_path):
    tasks = [resolve_task(str(p)) for p in tiny_tasks.values()]
    settings = TrainSettings(rank=4, alpha=8, steps=3, batch_size=8, max_length=16, osrm_samples=20)
    runs = run_to_end(compare(["peft-default", "osrm-cov-frozen"], [0], tasks, tmp_path / "work", settings, "cpu", 10, tiny_base_dir))
    assert [(r.family, r.seed) for r in runs] == [("peft-default", 0), ("osrm-cov-frozen", 0)]
    frozen = load_adapter(runs[1].paths[0])
    assert frozen.init == "osrm-cov" and frozen.metadata["settings"]["freeze_a"]
    stamp = (tmp_path / "work" / "peft-default" / "seed0" / "colour" / "adapter_model.safetensors").stat().st_mtime_ns
    again = run_to_end(compare(["peft-default"], [0], tasks, tmp_path / "work", settings, "cpu", 10, tiny_base_dir))
    assert (tmp_path / "work" / "peft-default" / "seed0" / "colour" / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert again[0].single == runs[0].single
    rows = summarise(runs)
    assert [r["family"] for r in rows] == ["peft-default", "osrm-cov-frozen"] and "TA λ=1" in rows[0]
    save_runs(runs, tmp_path / "c.json", {"command": "test"})
    meta, loaded = load_runs(tmp_path / "c.json")
    assert loaded == runs and meta["command"] == "test"


def test_lambda_is_chosen_on_validation_and_reported_on_test():
    from osrm_gui.core.explore.compare import FamilyRun, per_task

    test = {"0": {"a": 0.1, "b": 0.2}, "1": {"a": 0.5, "b": 0.7}}
    validation = {"0": {"a": 0.6, "b": 0.6}, "1": {"a": 0.5, "b": 0.5}}  # validation prefers λ=0, test would prefer 1
    run = FamilyRun("f", 0, {"a": 1.0, "b": 0.7}, test, {"a": 0.4, "b": 0.3}, 0.5, [], validation)
    assert run.chosen_lambda == "0"
    rows = per_task([run])
    assert rows[0] == {"family": "f", "task": "a", "single": "1.000", "TA (λ by validation)": "0.100 (λ=0)", "TIES": "0.400",
                       "normalised TA": "0.100"}
    assert summarise([run])[0]["TA (λ by validation)"] == "0.150"
    old = FamilyRun("f", 0, {"a": 1.0, "b": 0.7}, test, {"a": 0.4, "b": 0.3}, 0.5)  # saved before validation was scored
    assert old.chosen_lambda is None and per_task([old]) == []
    assert summarise([old])[0]["TA (λ by validation)"] == "no validation scores"
