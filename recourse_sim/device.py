"""Torch device selection: ``"auto"`` picks CUDA when present, else CPU."""

from __future__ import annotations

import torch

from recourse_sim.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a concrete ``torch.device`` for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError("device", device, '"auto", "cpu", "cuda" or "cuda:N"') from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", device, '"auto" or "cpu" (no CUDA device is available here)')
    return resolved
