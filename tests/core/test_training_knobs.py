"""Training knobs that keep the orthogonality OSRM starts from: the subspace budget (exact
constraint A = C·U_m), the subspace penalty, the other tasks' energy share, and training
against statistics files instead of the other tasks' data. Each checked against an
independent computation on the tiny fixtures."""

import json
import math

import pytest
import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.adapters import load_adapter
from osrm_gui.core.inputs.models import load_base
from osrm_gui.core.inputs.tasks import resolve_task
from osrm_gui.core.osrm.constraints import energy_share, penalty_term
from osrm_gui.core.osrm.features import collect_features, save_features
from osrm_gui.core.osrm.others import SHIPPED_STATS, against_adapters
from osrm_gui.core.osrm.training import TrainSettings, train_adapter
from osrm_gui.core.progress import run_to_end
from tests.job_support import drive

RANK, SAMPLES, MAX_LENGTH = 4, 50, 16
COMMON = {"rank": RANK, "alpha": 8, "batch_size": 16, "lr": 2e-2, "max_length": MAX_LENGTH, "seed": 3, "osrm_samples": SAMPLES}


@pytest.fixture(scope="module")
def tasks(tiny_tasks):
    return {name: resolve_task(str(path)) for name, path in tiny_tasks.items()}


@pytest.fixture(scope="module")
def colour_moments(tiny_base_dir, tasks):
    """The other task's (colour's) S per layer, computed here from its own collection, float64."""
    base = load_base(tiny_base_dir, device="cpu")
    features = run_to_end(collect_features(base, tasks["colour"], ["query", "value"], samples=SAMPLES, max_length=MAX_LENGTH))
    return {name: stats.gram / (stats.count - 1) for name, stats in features.layers.items()}


def _train(tiny_base_dir, task, out, ship_stats=False, **overrides):
    settings = TrainSettings(**{**COMMON, "steps": 30, **overrides})
    result, events = drive(train_adapter(tiny_base_dir, task, out, settings, device="cpu", ship_stats=ship_stats))
    return result, [e for e in events if e.stage == "train"]


def _meta(folder):
    return json.loads((folder / "osrm_adapter.json").read_text())


def _smallest(S, count):
    _, vectors = torch.linalg.eigh(S.to(torch.float64))
    return vectors[:, :count].T


# -- budget --------------------------------------------------------------------------------

def test_budget_keeps_row_a_inside_the_smallest_eigenvectors(tiny_base_dir, tasks, tiny_tasks, colour_moments, tmp_path):
    k = 2
    result, events = _train(tiny_base_dir, tasks["animal"], tmp_path / "budget", init="osrm-cov", subspace_budget=k,
                            osrm_tasks=[str(tiny_tasks["colour"])])
    assert len(events) == 30
    adapter = load_adapter(result.path)
    for name, layer in adapter.layers.items():
        A = layer.A.double()
        U = _smallest(colour_moments[name], k * RANK)
        inside = A @ U.T @ U
        assert float(torch.linalg.matrix_norm(A - inside) / torch.linalg.matrix_norm(A)) <= 1e-6, name
        # it trained (A left its init, the r smallest), within the budget
        assert float(torch.linalg.matrix_norm(A - _aligned(U[:RANK], A))) > 1e-3

    # a plain PEFT adapter: peft loads it unchanged, and its lora_A is the materialised C·U_m
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_base_dir, num_labels=3, ignore_mismatched_sizes=True)
    peft_model = PeftModel.from_pretrained(model, result.path)
    for name, layer in adapter.layers.items():
        loaded = peft_model.base_model.model.get_submodule(name).lora_A["default"].weight.detach()
        assert torch.equal(loaded, layer.A)
        U = _smallest(colour_moments[name], k * RANK)
        C = loaded.double() @ U.T
        torch.testing.assert_close(C @ U, loaded.double(), rtol=0, atol=1e-6)


def _aligned(rows, A):
    """``rows`` with each row's sign matched to A's (eigenvectors have no preferred sign)."""
    signs = torch.sign((rows * A).sum(1, keepdim=True))
    return rows * torch.where(signs == 0, 1.0, signs)


def test_budget_of_the_whole_input_trains_like_free_a(tiny_base_dir, tasks, tiny_tasks, tmp_path):
    others = [str(tiny_tasks["colour"])]
    free, _ = _train(tiny_base_dir, tasks["animal"], tmp_path / "free", init="osrm-cov", osrm_tasks=others, steps=15)
    whole, _ = _train(tiny_base_dir, tasks["animal"], tmp_path / "whole", init="osrm-cov", osrm_tasks=others, steps=15,
                      subspace_budget=32 // RANK)  # m = 32 = d_in: no constraint
    a, b = load_adapter(free.path), load_adapter(whole.path)
    for name in a.layers:
        assert torch.equal(a.layers[name].A, b.layers[name].A) and torch.equal(a.layers[name].B, b.layers[name].B)


def test_budget_errors(tiny_base_dir, tasks, tiny_tasks, tmp_path):
    others = [str(tiny_tasks["colour"])]
    with pytest.raises(OsrmError, match=r"m = k·rank = 36 exceeds the input size 32 of bert\.encoder"):
        _train(tiny_base_dir, tasks["animal"], tmp_path / "x", init="osrm-cov", subspace_budget=9, osrm_tasks=others)
    with pytest.raises(OsrmError, match="--subspace-budget needs --init osrm-cov"):
        TrainSettings(init="peft-default", subspace_budget=2, osrm_tasks=others).check()
    with pytest.raises(OsrmError, match="--subspace-budget 0: expected a whole number"):
        TrainSettings(init="osrm-cov", subspace_budget=0, osrm_tasks=others).check()
    with pytest.raises(OsrmError, match="--subspace-budget needs the other tasks' statistics"):
        TrainSettings(init="osrm-cov", subspace_budget=2).check()
    with pytest.raises(OsrmError, match="--subspace-penalty -1: expected a finite number at least 0"):
        TrainSettings(subspace_penalty=-1).check()
    with pytest.raises(OsrmError, match="--against-stats .*nowhere.safetensors: statistics file not found"):
        TrainSettings(against_stats=[str(tmp_path / "nowhere.safetensors")]).check()
    # only the task itself among the "others": a one-line error once the data is read
    with pytest.raises(OsrmError, match="--subspace-penalty needs the statistics of tasks other than 'animal'") as caught:
        _train(tiny_base_dir, tasks["animal"], tmp_path / "x", subspace_penalty=1.0, osrm_tasks=[str(tiny_tasks["animal"])])
    assert "\n" not in str(caught.value)


# -- penalty ---------------------------------------------------------------------------------

def test_penalty_term_equals_the_formula():
    g = torch.Generator().manual_seed(0)
    As = [torch.randn(3, 7, generator=g, dtype=torch.float64) for _ in range(2)]
    Ss = []
    for _ in range(2):
        H = torch.randn(20, 7, generator=g, dtype=torch.float64)
        Ss.append(H.T @ H / 19)
    expected = sum(float(torch.trace(A @ (S / torch.trace(S)) @ A.T) / torch.trace(A @ A.T)) for A, S in zip(As, Ss)) / 2
    value = penalty_term(As, [S / torch.trace(S) for S in Ss])
    assert float(value) == pytest.approx(expected, rel=1e-12)
    # scale-free: features 7× larger and A 3× larger leave it unchanged
    scaled = penalty_term([3 * A for A in As], [7 * S / torch.trace(7 * S) for S in Ss])
    assert float(scaled) == pytest.approx(expected, rel=1e-12)
    # for orthonormal rows it is the energy share over the rank
    Q = torch.linalg.qr(As[0].T).Q.T
    assert float(penalty_term([Q], [Ss[0] / torch.trace(Ss[0])])) == pytest.approx(energy_share(Q, Ss[0]) / 3, rel=1e-10)


def test_energy_share_falls_as_the_penalty_grows(tiny_base_dir, tasks, tiny_tasks, tmp_path):
    ends = []
    for beta in (0.0, 10.0, 100.0):
        result, events = _train(tiny_base_dir, tasks["animal"], tmp_path / f"beta{beta}", init="peft-default", subspace_penalty=beta,
                                osrm_tasks=[str(tiny_tasks["colour"])], steps=40)
        energy = _meta(result.path)["other_energy"]
        assert energy["end"] == pytest.approx(events[-1].other_energy)
        ends.append(energy["end"])
        if beta:  # the reported loss is the task's, and it still learns
            assert sum(e.loss for e in events[-5:]) < sum(e.loss for e in events[:5])
    assert ends[0] > ends[1] > ends[2], ends
    assert ends[2] < ends[0] / 5


# -- energy share ----------------------------------------------------------------------------

def test_energy_share_equals_the_projector_formula():
    g = torch.Generator().manual_seed(1)
    A = torch.randn(3, 10, generator=g, dtype=torch.float64)
    H = torch.randn(50, 10, generator=g, dtype=torch.float64) * torch.linspace(0.1, 2.0, 10, dtype=torch.float64)
    S = H.T @ H / 49
    P = A.T @ torch.linalg.inv(A @ A.T) @ A  # the orthogonal projector onto row(A), no QR involved
    assert energy_share(A, S) == pytest.approx(float(torch.trace(P @ S) / torch.trace(S)), rel=1e-12)
    assert energy_share(A.float(), S) == pytest.approx(float(torch.trace(P @ S) / torch.trace(S)), rel=1e-5)


def test_energy_share_of_the_osrm_init_is_its_smallest_eigenvalues(tiny_base_dir, tasks, tiny_tasks, colour_moments, tmp_path):
    result, _ = _train(tiny_base_dir, tasks["animal"], tmp_path / "init", init="osrm-cov", steps=0, osrm_tasks=[str(tiny_tasks["colour"])])
    shares = []
    for S in colour_moments.values():
        eigenvalues = torch.linalg.eigvalsh(S)
        shares.append(float(eigenvalues[:RANK].sum() / eigenvalues.sum()))
    energy = _meta(result.path)["other_energy"]
    assert energy["start"] == pytest.approx(sum(shares) / len(shares), rel=1e-4)
    assert energy["end"] == energy["start"]


def test_energy_is_nan_without_other_tasks(tiny_base_dir, tasks, tmp_path):
    result, events = _train(tiny_base_dir, tasks["animal"], tmp_path / "alone", steps=3)
    assert all(math.isnan(e.other_energy) for e in events) and "energy" not in events[-1].message
    meta = _meta(result.path)
    assert meta["other_energy"] is None and meta["against"] is None


# -- statistics files ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def colour_adapter(tiny_base_dir, tasks, tmp_path_factory):
    """colour's untrained adapter with its statistics shipped next to it."""
    result, _ = _train(tiny_base_dir, tasks["colour"], tmp_path_factory.mktemp("shipped") / "colour", ship_stats=True, steps=0)
    return result.path


def test_init_from_a_statistics_file_equals_init_from_the_data(tiny_base_dir, tasks, tiny_tasks, colour_adapter, tmp_path):
    stats = colour_adapter / SHIPPED_STATS
    assert stats.is_file()
    from_data, _ = _train(tiny_base_dir, tasks["animal"], tmp_path / "data", init="osrm-cov", steps=0, osrm_tasks=[str(tiny_tasks["colour"])])
    from_file, _ = _train(tiny_base_dir, tasks["animal"], tmp_path / "file", init="osrm-cov", steps=0, against_stats=[str(stats)])
    a, b = load_adapter(from_data.path), load_adapter(from_file.path)
    for name in a.layers:
        assert torch.equal(a.layers[name].A, b.layers[name].A), name
    meta = _meta(from_file.path)
    assert meta["against"] == {"tasks": ["colour"], "stats_files": [str(stats)]}
    assert meta["other_energy"] == _meta(from_data.path)["other_energy"]
    # both sources of one task count it once
    both, _ = _train(tiny_base_dir, tasks["animal"], tmp_path / "both", init="osrm-cov", steps=0,
                     osrm_tasks=[str(tiny_tasks["colour"])], against_stats=[str(stats)])
    assert _meta(both.path)["against"]["tasks"] == ["colour"]
    assert torch.equal(load_adapter(both.path).layers[name].A, a.layers[name].A)


def test_against_adapters_prefers_shipped_statistics(colour_adapter, tiny_adapters, tiny_tasks):
    specs, files = against_adapters([colour_adapter, tiny_adapters[1]])
    assert files == [str(colour_adapter / SHIPPED_STATS)] and specs == [str(tiny_tasks["animal"])]


def test_a_statistics_file_of_another_base_is_refused(tiny_base_dir, other_base_dir, tasks, tmp_path):
    other = load_base(other_base_dir, device="cpu")
    features = run_to_end(collect_features(other, tasks["colour"], ["query", "value"], samples=10, max_length=MAX_LENGTH))
    path = tmp_path / "wide-colour.safetensors"
    save_features(features, path)
    with pytest.raises(OsrmError, match=r"wide-colour\.safetensors: statistics of another base") as caught:
        _train(tiny_base_dir, tasks["animal"], tmp_path / "x", init="osrm-cov", steps=0, against_stats=[str(path)])
    assert "\n" not in str(caught.value)
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(OsrmError, match=r"garbage\.safetensors: corrupt feature statistics"):
        _train(tiny_base_dir, tasks["animal"], tmp_path / "x", init="osrm-cov", steps=0, against_stats=[str(tmp_path / "garbage.safetensors")])


# -- metadata and command line ---------------------------------------------------------------

def test_metadata_records_the_knobs_and_the_energy(tiny_base_dir, tasks, colour_adapter, tmp_path):
    stats = str(colour_adapter / SHIPPED_STATS)
    result, events = _train(tiny_base_dir, tasks["animal"], tmp_path / "knobs", init="osrm-cov", subspace_budget=3, subspace_penalty=5.0,
                            a_lr_multiplier=0.5, against_stats=[stats], steps=10)
    meta = _meta(result.path)
    settings = meta["settings"]
    assert (settings["subspace_budget"], settings["subspace_penalty"], settings["a_lr_multiplier"], settings["against_stats"]) == (3, 5.0, 0.5, [stats])
    energy = meta["other_energy"]
    assert set(energy) == {"start", "end"} and 0 < energy["start"] < 0.05 and energy["end"] == pytest.approx(events[-1].other_energy)
    assert "others' energy" in events[-1].message


def test_cli_train_against_an_adapter_and_features_out(capsys, tiny_base_dir, tiny_tasks, colour_adapter, tmp_path):
    from tests.cli_support import one_error_line, run

    animal, colour = tiny_tasks["animal"], tiny_tasks["colour"]
    code, out, err = run(capsys, "features", "--base", tiny_base_dir, "--task", colour, "--samples", SAMPLES, "--max-length", MAX_LENGTH,
                         "--device", "cpu", "--dtype", "float32", "--out", tmp_path / "colour.safetensors")
    assert code == 0, err
    common = ["train", "--base", tiny_base_dir, "--task", animal, "--device", "cpu", "--rank", RANK, "--max-length", MAX_LENGTH,
              "--osrm-samples", SAMPLES, "--steps", "0", "--init", "osrm-cov", "--subspace-budget", "2"]
    code, out, err = run(capsys, *common, "--against", colour_adapter, "--out", tmp_path / "a", "--ship-stats")
    assert code == 0, err
    assert "other tasks' energy share" in out and (tmp_path / "a" / SHIPPED_STATS).is_file()
    code, out, err = run(capsys, *common, "--against-stats", tmp_path / "colour.safetensors", "--out", tmp_path / "b")
    assert code == 0, err
    a, b = load_adapter(tmp_path / "a"), load_adapter(tmp_path / "b")
    assert all(torch.equal(a.layers[n].A, b.layers[n].A) for n in a.layers)
    code, _, err = run(capsys, "features", "--base", tiny_base_dir, "--task", colour, "--task", animal, "--out", tmp_path / "c.safetensors")
    assert code != 0 and "one statistics file holds one task" in one_error_line(err)
    code, _, err = run(capsys, *common[:-4], "--subspace-budget", "2", "--out", tmp_path / "d")
    assert code != 0 and "--subspace-budget needs --init osrm-cov" in one_error_line(err)
