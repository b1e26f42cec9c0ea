"""Scenarios embedded in the package (so ``recourse-sim run`` works without any file), and the names of the
SaTML 2023 experiments they hold (``satml/<name>.toml``)."""

from importlib.resources import files
from pathlib import Path


def embedded(name: str = "default") -> Path:
    """Path of an embedded scenario file."""
    return Path(str(files(__name__) / f"{name}.toml"))


#: The SaTML 2023 experiments, one embedded scenario each: the synthetic datasets, then the real ones in the
#: order the full grid queues them (longest first, measured, so two workers finish close together).
SATML_SYNTHETIC = ("overlapping", "linearly_separable", "circles", "moons")
SATML_REAL = ("credit_default", "california_housing", "give_me_some_credit")
#: The experiment label of a real dataset run without its data card's constraints (an ablation).
UNCONSTRAINED_SUFFIX = "_unconstrained"
