"""Device and dtype choice: CUDA when present, else CPU."""

from __future__ import annotations

import torch

from osrm_gui.core.errors import OsrmError

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def pick_device(name: str | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when available, else CPU."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise OsrmError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OsrmError(f"device {name!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__})")
    return device


def pick_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: float32 on CPU, bfloat16 on GPUs that support it."""
    if name in (None, "", "auto"):
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise OsrmError(f"unknown dtype {name!r}; choose one of {', '.join(sorted(DTYPES))}") from None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return "CPU"
