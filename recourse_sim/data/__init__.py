"""Datasets: the feature schema, the Dataset container, synthetic generators, shipped real data and the truth.

``DATASETS`` maps a name to a loader ``loader(n_samples, rng) -> Dataset``; scenarios name datasets by it.
"""

from __future__ import annotations

from recourse_sim.data import real, synthetic
from recourse_sim.data.dataset import Dataset, Standardizer
from recourse_sim.data.real import load_csv
from recourse_sim.data.schema import MUTABILITIES, FeatureSchema, Mutability
from recourse_sim.data.truth import (
    CirclesTruth,
    GaussianBlobsTruth,
    MoonsTruth,
    OracleTruth,
    TruthModel,
    fit_oracle,
)
from recourse_sim.registry import Registry

DATASETS: Registry = Registry("dataset")
DATASETS.register("linearly_separable", synthetic.linearly_separable)
DATASETS.register("overlapping", synthetic.overlapping)
DATASETS.register("circles", synthetic.circles)
DATASETS.register("moons", synthetic.moons)
DATASETS.register("give_me_some_credit", real.give_me_some_credit)
DATASETS.register("credit_default", real.credit_default)
DATASETS.register("california_housing", real.california_housing)

__all__ = [
    "DATASETS", "MUTABILITIES", "CirclesTruth", "Dataset", "FeatureSchema", "GaussianBlobsTruth", "MoonsTruth",
    "Mutability", "OracleTruth", "Standardizer", "TruthModel", "fit_oracle", "load_csv",
]
