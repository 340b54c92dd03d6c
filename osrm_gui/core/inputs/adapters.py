"""LoRA adapters in PEFT format: loading without unpickling, validation against
a base model, and the per-layer ``(A, B, scaling)`` the merge engine works on."""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.hub import resolve
from osrm_gui.core.inputs.models import BaseModel, is_linear, linear_shape

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"
METADATA_FILE = "osrm_adapter.json"  # our own sidecar: task, labels, init, training settings
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B)(?:\.[^.]+)?\.weight$")
_UNSUPPORTED_PARTS = ("lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector", "lora_E")


@dataclass(frozen=True)
class LoraLayer:
    A: torch.Tensor  # (r × d_in)
    B: torch.Tensor  # (d_out × r)
    scaling: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        return self.scaling * (self.B.float() @ self.A.float())


@dataclass
class Adapter:
    path: Path
    name: str
    config: dict
    layers: dict[str, LoraLayer]
    head: dict[str, torch.Tensor]  # modules_to_save tensors, keys relative to the head module
    head_name: str | None
    metadata: dict
    content_hash: str
    size_bytes: int
    warnings: list[str] = field(default_factory=list)
    hub_id: str | None = None  # org/name@commit when loaded by Hub id

    @property
    def task(self) -> str | None:
        return self.metadata.get("task")

    @property
    def init(self) -> str:
        if self.metadata.get("init"):
            return self.metadata["init"]
        peft_init = self.config.get("init_lora_weights", True)
        return "peft-default" if peft_init is True else str(peft_init)

    @property
    def ranks(self) -> list[int]:
        return sorted({layer.rank for layer in self.layers.values()})

    @property
    def alpha(self) -> float:
        return float(self.config.get("lora_alpha", 8))

    @property
    def targets(self) -> list[str]:
        return sorted({name.rsplit(".", 1)[-1] for name in self.layers})

    @property
    def num_labels(self) -> int | None:
        weights = [t for k, t in self.head.items() if k.endswith("weight") and t.dim() == 2]
        return weights[-1].shape[0] if weights else None

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
        return {name: (layer.A, layer.B, layer.scaling) for name, layer in self.layers.items()}

    def summary(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "task": self.task,
            "init": self.init,
            "rank": "/".join(map(str, self.ranks)),
            "alpha": f"{self.alpha:g}",
            "rslora": bool(self.config.get("use_rslora")),
            "targets": ",".join(self.targets),
            "layers": len(self.layers),
            "head": f"{self.head_name} ({self.num_labels} labels)" if self.head_name else "none",
            "size": f"{self.size_bytes / 1024:.0f} KB",
            "hash": self.content_hash,
        }


def _pattern_value(patterns: dict, module: str, default):
    # The same rule as peft's get_pattern_key: a pattern matches a dotted suffix of the name.
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _read_config(folder: Path) -> dict:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise OsrmError(f"{folder}: not a PEFT adapter folder (no {CONFIG_FILE})")
    config = _read_json_object(config_path)
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise OsrmError(f"{config_path}: peft_type is {config.get('peft_type')!r}, only LORA adapters can be merged")
    if config.get("use_dora"):
        raise OsrmError(f"{config_path}: DoRA adapters are not supported (their magnitude vector does not merge linearly)")
    if config.get("lora_bias"):
        raise OsrmError(f"{config_path}: LoRA adapters with a trained bias (lora_bias) are not supported")
    _check_config_numbers(config, config_path)
    return config


def _positive(value, what: str, where: Path, integer: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (integer and value != int(value)):
        kind = "a positive whole number" if integer else "a positive number"
        raise OsrmError(f"{where}: {what} is {value!r}, expected {kind}")


def _check_config_numbers(config: dict, where: Path) -> None:
    """The numbers ΔW's scale is made of: a word, zero or NaN here would otherwise surface as a
    ZeroDivisionError or silently wrong scores far from the file."""
    if "r" in config:
        _positive(config["r"], "r", where, integer=True)
    if "lora_alpha" in config:
        _positive(config["lora_alpha"], "lora_alpha", where, integer=False)
    for key, integer in (("rank_pattern", True), ("alpha_pattern", False)):
        patterns = config.get(key) or {}
        if not isinstance(patterns, dict):
            raise OsrmError(f"{where}: {key} is {type(patterns).__name__}, expected an object of module patterns")
        for module, value in patterns.items():
            _positive(value, f"{key}[{module!r}]", where, integer)


def _read_metadata(folder: Path) -> dict:
    meta_path = folder / METADATA_FILE
    return _read_json_object(meta_path) if meta_path.is_file() else {}


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise OsrmError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise OsrmError(f"{path}: corrupt JSON ({exc})") from None
    if not isinstance(data, dict):
        raise OsrmError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


# Config fields that say where an adapter came from, not what it computes.
_PROVENANCE_FIELDS = ("base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping")


def adapter_identity(weights_path: Path, config: dict, metadata: dict) -> str:
    """What every result computed from an adapter depends on: its tensors, the config fields that
    scale them or choose its layers and head, and the task, labels and settings it records.
    Run histories, caches and recipes key on this, so editing lora_alpha is a new adapter."""
    digest = hashlib.sha256(weights_path.read_bytes())
    relevant = {k: v for k, v in config.items() if k not in _PROVENANCE_FIELDS}
    digest.update(json.dumps([relevant, metadata], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _read_tensors(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        try:
            return load_file(weights), weights
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise OsrmError(f"{weights}: corrupt or truncated safetensors file ({str(exc).splitlines()[0]})") from None
    pickle = folder / PICKLE_FILE
    if pickle.is_file():
        try:
            # weights_only refuses arbitrary objects: a plain tensor dict loads, code does not run.
            with warnings.catch_warnings():  # torch explains a refusal in many lines; ours is one
                warnings.simplefilter("ignore")
                tensors = torch.load(pickle, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means we refuse the pickle
            raise OsrmError(f"{pickle}: refused: not a plain tensor file ({str(exc).splitlines()[0][:120]})") from None
        if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            raise OsrmError(f"{pickle}: refused: expected a dict of tensors")
        return tensors, pickle
    raise OsrmError(f"{folder}: no {WEIGHTS_FILE} (or {PICKLE_FILE}) next to {CONFIG_FILE}")


def load_adapter(path: str | Path) -> Adapter:
    """Read a PEFT LoRA adapter folder (or its ``adapter_config.json``), or a Hub id's cached snapshot."""
    source = resolve(path, "adapter")
    folder = source.path
    if folder.name == CONFIG_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise OsrmError(f"{folder}: " + (f"not an adapter folder (expected a folder or its {CONFIG_FILE})" if folder.exists() else "adapter folder not found"))
    config = _read_config(folder)
    tensors, weights_path = _read_tensors(folder)

    parts: dict[str, dict[str, torch.Tensor]] = {}
    head: dict[str, torch.Tensor] = {}
    head_roots = [m.rsplit(".", 1)[-1] for m in (config.get("modules_to_save") or [])]
    for key, tensor in tensors.items():
        if any(f".{part}" in key for part in _UNSUPPORTED_PARTS):
            raise OsrmError(f"{weights_path}: tensor {key} is not a plain LoRA linear layer (embedding LoRA/DoRA are not supported)")
        match = _LORA_KEY.match(key)
        if match:
            parts.setdefault(match["module"], {})[match["part"]] = tensor
            continue
        name = key.removeprefix("base_model.model.").replace(".modules_to_save.default", "").replace(".modules_to_save", "")
        if name.split(".", 1)[0] in head_roots or any(name.startswith(root + ".") for root in (config.get("modules_to_save") or [])):
            head[name] = tensor
        else:
            raise OsrmError(f"{weights_path}: unexpected tensor {key}")
    if not parts:
        raise OsrmError(f"{weights_path}: no LoRA tensors (lora_A/lora_B) in the file")

    alpha = float(config.get("lora_alpha", 8))
    rslora = bool(config.get("use_rslora", False))
    alpha_pattern = config.get("alpha_pattern") or {}
    layers: dict[str, LoraLayer] = {}
    for module, pair in sorted(parts.items()):
        if set(pair) != {"lora_A", "lora_B"}:
            raise OsrmError(f"{weights_path}: layer {module} has {', '.join(sorted(pair))} but not both lora_A and lora_B")
        for label, tensor in pair.items():
            if not tensor.is_floating_point():
                raise OsrmError(f"{weights_path}: layer {module} {label} is {str(tensor.dtype).removeprefix('torch.')}, "
                                "not floating point (quantised adapters are not supported)")
        A, B = pair["lora_A"].float(), pair["lora_B"].float()
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise OsrmError(f"{weights_path}: layer {module} has inconsistent shapes A {tuple(A.shape)}, B {tuple(B.shape)}")
        for label, tensor in (("lora_A", A), ("lora_B", B)):
            if not torch.isfinite(tensor).all():
                raise OsrmError(f"{weights_path}: layer {module} {label} contains NaN or infinite values")
        r = A.shape[0]
        declared = _pattern_value(config.get("rank_pattern") or {}, module, config.get("r", r))
        if r == 0 or declared != r:
            raise OsrmError(f"{weights_path}: layer {module} has rank {r} in its tensors but r={declared} in {CONFIG_FILE}")
        layer_alpha = float(_pattern_value(alpha_pattern, module, alpha))
        scaling = layer_alpha / math.sqrt(r) if rslora else layer_alpha / r
        layers[module] = LoraLayer(A=A, B=B, scaling=scaling)
    for key, tensor in head.items():
        if not tensor.is_floating_point():
            raise OsrmError(f"{weights_path}: head tensor {key} is {str(tensor.dtype).removeprefix('torch.')}, not floating point")
        if not torch.isfinite(tensor).all():
            raise OsrmError(f"{weights_path}: head tensor {key} contains NaN or infinite values")

    head_name = None
    head_state: dict[str, torch.Tensor] = {}
    if head:
        roots = sorted({k.split(".", 1)[0] for k in head})
        if len(roots) > 1:
            raise OsrmError(f"{weights_path}: several task-specific modules ({', '.join(roots)}); only one head is supported")
        head_name = roots[0]
        head_state = {k.split(".", 1)[1]: v for k, v in head.items()}

    metadata = _read_metadata(folder)
    return Adapter(
        path=folder,
        name=metadata.get("name") or source.display_name or folder.name,
        config=config,
        layers=layers,
        head=head_state,
        head_name=head_name,
        metadata=metadata,
        content_hash=adapter_identity(weights_path, config, metadata),
        size_bytes=weights_path.stat().st_size,
        hub_id=source.hub_id,
    )


def validate_adapter(adapter: Adapter, base: BaseModel) -> list[str]:
    """Check the adapter fits the base; raise on a hard mismatch, return soft warnings."""
    warnings: list[str] = []
    where = adapter.path / WEIGHTS_FILE
    for name, layer in adapter.layers.items():
        module = base.module(name)
        if module is None or not is_linear(module):
            raise OsrmError(f"{where}: target module {name} does not exist as a linear layer in base {base.name}")
        d_out, d_in = linear_shape(module)
        if layer.A.shape[1] != d_in or layer.B.shape[0] != d_out:
            raise OsrmError(
                f"{where}: layer {name} expects a ({d_out} × {d_in}) weight in base {base.name}, "
                f"the adapter has A {tuple(layer.A.shape)}, B {tuple(layer.B.shape)} (trained on another base?)"
            )
    if adapter.head:
        if adapter.head_name != base.head_name:
            raise OsrmError(f"{where}: its task head is {adapter.head_name!r}, base {base.name} has {base.head_name!r}")
        base.build_head(adapter.head)  # raises on a shape mismatch
    claimed = adapter.config.get("base_model_name_or_path")
    if claimed and Path(str(claimed)).name.lower() not in {base.name.lower(), base.path.name.lower(), str(base.model.config._name_or_path).rsplit("/", 1)[-1].lower()}:
        warnings.append(f"{adapter.name}: trained on {claimed!r}, merging into {base.name!r} (shapes match)")
    adapter.warnings = warnings
    return warnings
