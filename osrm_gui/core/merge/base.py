"""Shared types of the merge engine.

Every method works on one LoRA-targeted layer at a time, on the task vectors
``ΔW_t = s_t · B_t A_t`` of the adapters that target that layer, so a merge of a
large model never holds more than one layer's dense task vectors at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator

import torch

from osrm_gui.core.progress import Progress


@dataclass(frozen=True)
class LoraDelta:
    """One adapter's low-rank update of one layer: ``ΔW = scaling · B @ A``.

    ``A`` is (r × d_in), ``B`` is (d_out × r). ``index`` is the adapter's
    position in the merge (it selects the coefficient).
    """

    index: int
    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    def dense(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.scaling * (self.B.to(dtype) @ self.A.to(dtype))


@dataclass(frozen=True)
class Param:
    """A method parameter as the CLI and the app present it."""

    name: str
    default: float | int | str
    doc: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    min_exclusive: bool = False  # the minimum itself is not allowed, e.g. density in (0, 1]
    label: str | None = None  # what the app shows; by default the name in words ("majority sign method")

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def kind(self) -> type:
        if self.choices is not None:
            return str
        return type(self.default)

    def validate(self, value):
        """Return ``value`` coerced to this parameter's type, or raise ValueError."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        try:
            value = self.kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be a {self.kind.__name__}, got {value!r}") from None
        if value != value:  # NaN passes every comparison below
            raise ValueError(f"{self.name} must be a number, got {value}")
        if self.minimum is not None and self.min_exclusive and value <= self.minimum:
            raise ValueError(f"{self.name} must be > {self.minimum}, got {value}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be ≥ {self.minimum}, got {value}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be ≤ {self.maximum}, got {value}")
        return value


@dataclass(frozen=True)
class LayerContext:
    """What a method may need beyond the layer's deltas.

    ``coefficients`` holds one coefficient per adapter in the merge (also those
    that do not target this layer); ``lam`` is the global λ; ``seed`` is already
    mixed with the layer name so random methods differ per layer yet replay.
    """

    name: str
    coefficients: tuple[float, ...]
    lam: float
    params: dict
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # per adapter index: the Gram matrix HᵀH of its task's inputs to this layer (methods with needs_grams)
    grams: dict[int, torch.Tensor] | None = None
    # per adapter index: the diagonal Fisher (d_out × d_in) of this layer's dense weight under that
    # adapter's own model, and the Frobenius norm of its Fisher over every layer it adapts (needs_fisher)
    fishers: dict[int, torch.Tensor] | None = None
    fisher_norms: dict[int, float] | None = None


@dataclass
class LayerResult:
    """A merged layer: a dense ``delta`` (d_out × d_in), or low-rank factors
    with ``delta == B @ A`` (no further scaling). ``truncation_error`` is the
    relative Frobenius error of a compression, when the method compresses."""

    delta: torch.Tensor | None = None
    A: torch.Tensor | None = None
    B: torch.Tensor | None = None
    truncation_error: float | None = None
    # Methods that give each task its own update (EMR: a shared update under a per-task mask and
    # scale): per adapter index, the dense update that adapter's task runs with. ``delta`` then
    # holds the shared part, for display and analysis.
    task_deltas: dict[int, torch.Tensor] | None = None

    def dense(self, task: int | None = None) -> torch.Tensor:
        """The merged update, or (``task`` = an adapter index) the one that adapter's task runs with."""
        if task is not None and self.task_deltas is not None:
            shared = self.delta if self.delta is not None else self.B @ self.A
            return self.task_deltas.get(task, torch.zeros_like(shared))
        if self.delta is not None:
            return self.delta
        return self.B @ self.A


@dataclass(frozen=True)
class MergeMethod:
    name: str
    label: str
    doc: str
    params: tuple[Param, ...]
    merge_layer: Callable[[list[LoraDelta], LayerContext], LayerResult]
    low_rank: bool = False  # result comes as factors (exportable as a PEFT adapter as is)
    needs_grams: bool = False  # needs each adapter's task feature statistics (RegMean)
    needs_fisher: bool = False  # needs each adapter's diagonal Fisher of its layers' dense weights (Fisher merging)
    # For methods whose merge is exactly Σ_t w_t ΔW_t: the weights w_t from (coefficients, λ, params).
    # Such a merge can be evaluated with the adapters left as LoRA factors (see core/lora_sum.py).
    adapter_weights: Callable[[tuple[float, ...], float, dict], list[float]] | None = None
    # For methods whose merge spans the whole model (OPCM's global rescale): called instead of the layer
    # engine as merge_model(adapters' factors, coefficients, λ, params, seed, device), a generator that
    # yields Progress and returns {layer name: LayerResult}.
    merge_model: Callable[..., Generator[Progress, None, dict[str, LayerResult]]] | None = None

    @property
    def needs_data(self) -> bool:
        """Whether the merge reads each adapter's task data (its result depends on it)."""
        return self.needs_grams or self.needs_fisher

    def resolve_params(self, given: dict | None) -> dict:
        """Defaults filled in, each value validated; unknown names are an error."""
        given = dict(given or {})
        unknown = set(given) - {p.name for p in self.params}
        if unknown:
            raise ValueError(f"method {self.name!r} has no parameter {', '.join(sorted(unknown))}")
        return {p.name: p.validate(given.get(p.name, p.default)) for p in self.params}
