"""Scenarios embedded in the package (so ``recourse-sim run`` works without any file)."""

from importlib.resources import files
from pathlib import Path


def embedded(name: str = "default") -> Path:
    """Path of an embedded scenario file."""
    return Path(str(files(__name__) / f"{name}.toml"))
