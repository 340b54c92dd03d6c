import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from osrm_gui.core.inputs.adapters import load_adapter, validate_adapter
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.models import load_base
from tests.conftest import make_adapter
from tests.tolerances import U32, assert_within, matmul_bound


@pytest.fixture(scope="module")
def base(tiny_base_dir):
    return load_base(tiny_base_dir, device="cpu")


def test_loads_layers_head_and_scaling(tiny_adapters, base):
    adapter = load_adapter(tiny_adapters[0])
    assert set(adapter.layers) == {f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")}
    layer = adapter.layers["bert.encoder.layer.0.attention.self.query"]
    assert layer.A.shape == (4, 32) and layer.B.shape == (32, 4)
    assert layer.scaling == pytest.approx(8.0 / 4)
    assert adapter.head_name == "classifier" and set(adapter.head) == {"weight", "bias"}
    assert adapter.num_labels == 2 and adapter.task == "colour"
    assert validate_adapter(adapter, base) == []


def test_delta_matches_peft_merged_weights(tiny_base_dir, tiny_adapters):
    """ΔW = s·B·A as read by us equals what peft itself adds when merging."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    adapter = load_adapter(tiny_adapters[1])
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_base_dir, num_labels=3, ignore_mismatched_sizes=True)
    w0 = plain.bert.encoder.layer[1].attention.self.value.weight.detach().clone()
    merged = PeftModel.from_pretrained(plain, tiny_adapters[1]).merge_and_unload()
    peft_delta = merged.bert.encoder.layer[1].attention.self.value.weight.detach() - w0
    layer = adapter.layers["bert.encoder.layer.1.attention.self.value"]
    ours = layer.delta()
    # both sides round s·B·A in float32 (a length-r reduction each); peft's W0 + ΔW − W0 rounds twice more
    bound = 2 * layer.scaling * matmul_bound(layer.B, layer.A) + 2 * U32 * (2 * w0.double().abs() + ours.double().abs())
    assert_within(ours, peft_delta, bound, "ΔW")
    assert not torch.allclose(ours, 1.01 * peft_delta, rtol=0, atol=float(bound.max()))  # a 1 % scale error is caught


def test_rslora_scaling(tmp_path, tiny_base_dir):
    adapter = load_adapter(make_adapter(tiny_base_dir, tmp_path / "rs", None, 2, rank=4, alpha=8, rslora=True))
    assert next(iter(adapter.layers.values())).scaling == pytest.approx(8 / math.sqrt(4))


def test_rank_and_alpha_patterns(tmp_path, tiny_base_dir):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_base_dir, num_labels=2)
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"],
                        rank_pattern={"value": 2}, alpha_pattern={"value": 6})
    get_peft_model(model, config).save_pretrained(tmp_path / "pat")
    adapter = load_adapter(tmp_path / "pat")
    assert adapter.layers["bert.encoder.layer.0.attention.self.value"].scaling == pytest.approx(6 / 2)
    assert adapter.layers["bert.encoder.layer.0.attention.self.query"].scaling == pytest.approx(8 / 4)
    assert adapter.ranks == [2, 4]


def test_accepts_adapter_config_path(tiny_adapters):
    assert load_adapter(tiny_adapters[0] / "adapter_config.json").path == tiny_adapters[0]


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_missing_config(tmp_path, tiny_adapters):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    (folder / "adapter_config.json").unlink()
    with pytest.raises(OsrmError, match=r"a: not a PEFT adapter folder \(no adapter_config.json\)"):
        load_adapter(folder)


def test_corrupt_config(tmp_path, tiny_adapters):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA", ')
    with pytest.raises(OsrmError, match=r"adapter_config.json: corrupt JSON"):
        load_adapter(folder)


def test_not_lora(tmp_path, tiny_adapters):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    config = json.loads((folder / "adapter_config.json").read_text())
    config["peft_type"] = "IA3"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(OsrmError, match="only LORA"):
        load_adapter(folder)


def test_truncated_safetensors(tmp_path, tiny_adapters):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(OsrmError, match=r"adapter_model.safetensors: corrupt or truncated"):
        load_adapter(folder)


def test_nan_weights(tmp_path, tiny_adapters):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    weights = folder / "adapter_model.safetensors"
    tensors = load_file(weights)
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key][0, 0] = float("nan")
    save_file(tensors, weights)
    with pytest.raises(OsrmError, match="NaN or infinite"):
        load_adapter(folder)


def test_shape_mismatch_with_another_base(tmp_path, other_base_dir, base):
    adapter = load_adapter(make_adapter(other_base_dir, tmp_path / "wide", None, 2))
    with pytest.raises(OsrmError, match=r"expects a \(32 × 32\) weight .* \(trained on another base\?\)"):
        validate_adapter(adapter, base)


def test_missing_target_module(tmp_path, tiny_adapters, base):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    weights = folder / "adapter_model.safetensors"
    tensors = {k.replace("layer.1.", "layer.7."): v for k, v in load_file(weights).items()}
    save_file(tensors, weights)
    with pytest.raises(OsrmError, match=r"layer.7.attention.self.query does not exist"):
        validate_adapter(load_adapter(folder), base)


def test_pickle_with_code_is_refused(tmp_path, tiny_adapters):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    tensors = load_file(folder / "adapter_model.safetensors")
    (folder / "adapter_model.safetensors").unlink()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"tensors": tensors, "payload": Evil()}, folder / "adapter_model.bin")
    with pytest.raises(OsrmError, match=r"adapter_model.bin: refused"):
        load_adapter(folder)


def test_plain_tensor_pickle_loads_with_weights_only(tmp_path, tiny_adapters):
    folder = _copy(tiny_adapters[0], tmp_path / "a")
    tensors = load_file(folder / "adapter_model.safetensors")
    (folder / "adapter_model.safetensors").unlink()
    torch.save(tensors, folder / "adapter_model.bin")
    adapter = load_adapter(folder)
    assert len(adapter.layers) == 4


def test_no_folder(tmp_path):
    with pytest.raises(OsrmError, match="adapter folder not found"):
        load_adapter(tmp_path / "nope")
