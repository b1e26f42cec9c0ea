"""Shared fixtures: small datasets and fitted models, built once per session to keep the suite fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recourse_sim.data import DATASETS, Dataset, FeatureSchema
from recourse_sim.models import LogisticRegression, MLPClassifier


@pytest.fixture(scope="session")
def overlapping() -> Dataset:
    return DATASETS["overlapping"](400, np.random.default_rng(0))


@pytest.fixture(scope="session")
def fitted_lr(overlapping) -> LogisticRegression:
    return LogisticRegression(epochs=30, seed=0, device="cpu").fit(overlapping.X, overlapping.y)


@pytest.fixture(scope="session")
def four_d() -> Dataset:
    """4-D data whose label depends on every feature, for constraint tests."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4)).astype(np.float32)
    y = (X @ np.array([1.0, -1.0, 0.5, 0.8]) > 0).astype(np.float32)
    return Dataset(torch.tensor(X), torch.tensor(y), FeatureSchema.unconstrained(["a", "b", "c", "d"]), "four_d")


@pytest.fixture(scope="session")
def fitted_mlp_4d(four_d) -> MLPClassifier:
    return MLPClassifier(hidden_sizes=(16,), epochs=30, batch_size=16, seed=0, device="cpu").fit(four_d.X, four_d.y)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The tests use small tensors; one intra-op thread avoids OpenMP synchronisation costs (see
    recourse_sim.device.torch_threads), which dominate on 2-core CI machines."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
