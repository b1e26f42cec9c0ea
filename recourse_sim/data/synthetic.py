"""The four synthetic 2-D datasets of the SaTML 2023 paper, with MLJ's generators' parameters.

Altmeyer et al. (2023) generate 1,000 samples (500 per class) in R^2 with MLJBase 0.21:
- ``linearly_separable``: ``make_blobs(centers=2, center_box=(-2, 2), cluster_std=0.1)``;
- ``overlapping``: the same with ``cluster_std=0.5``;
- ``circles``: ``make_circles(noise=0.15, factor=0.01)``: label 0 at radius 0.01, label 1 on the unit circle;
- ``moons``: MLJ's ``make_moons(noise=0.1, xshift=1, yshift=0.3)`` (not scikit-learn's).

Each dataset carries its exact ``P(y = 1 | x)`` (``Dataset.truth``, :mod:`recourse_sim.data.truth`), built from the
same parameters as the draw (for the blobs: the centres drawn here). Every generator draws ``n // 2`` rows of
class 0 and the rest of class 1: class priors 1/2.

Rows are returned in a random order drawn from ``rng`` (like MLJ's generators, which shuffle): the classes are
never stacked one after the other, because batch-1 training in row order on class-sorted rows biases every
model (Altmeyer et al.'s reference code shuffles too).
"""

from __future__ import annotations

import numpy as np

from recourse_sim.data.dataset import Dataset
from recourse_sim.data.schema import FeatureSchema
from recourse_sim.data.truth import (
    CirclesTruth,
    GaussianBlobsTruth,
    MoonsTruth,
    TruthModel,
)

_SCHEMA_2D = FeatureSchema.unconstrained(("x1", "x2"))


def _two_classes(
    X0: np.ndarray, X1: np.ndarray, name: str, rng: np.random.Generator, truth: TruthModel
) -> Dataset:
    """Both classes in one dataset with its ``truth``, rows in a random order (see the module docstring)."""
    X = np.concatenate([X0, X1]).astype(np.float32)
    y = np.concatenate([np.zeros(len(X0)), np.ones(len(X1))]).astype(np.float32)
    order = rng.permutation(len(y))
    return Dataset(X[order], y[order], _SCHEMA_2D, name, truth=truth)


def _blobs(n_samples: int, rng: np.random.Generator, cluster_std: float, name: str) -> Dataset:
    centres = rng.uniform(-2.0, 2.0, size=(2, 2))
    n0 = n_samples // 2
    X0 = centres[0] + cluster_std * rng.standard_normal((n0, 2))
    X1 = centres[1] + cluster_std * rng.standard_normal((n_samples - n0, 2))
    return _two_classes(X0, X1, name, rng, GaussianBlobsTruth(centres, cluster_std))


def linearly_separable(n_samples: int, rng: np.random.Generator) -> Dataset:
    """Two Gaussian blobs, centres uniform in [-2, 2]^2, standard deviation 0.1."""
    return _blobs(n_samples, rng, 0.1, "linearly_separable")


def overlapping(n_samples: int, rng: np.random.Generator) -> Dataset:
    """Two Gaussian blobs, centres uniform in [-2, 2]^2, standard deviation 0.5."""
    return _blobs(n_samples, rng, 0.5, "overlapping")


def circles(n_samples: int, rng: np.random.Generator, noise: float = 0.15, factor: float = 0.01) -> Dataset:
    """Label 0: a tight blob at radius ``factor``; label 1: the unit circle; plus ``noise * N(0, I)``."""
    n0 = n_samples // 2
    theta = rng.uniform(0.0, 2 * np.pi, size=n_samples)
    ring = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    ring[:n0] *= factor
    ring += noise * rng.standard_normal(ring.shape)
    return _two_classes(ring[:n0], ring[n0:], "circles", rng, CirclesTruth(noise, factor))


def moons(
    n_samples: int, rng: np.random.Generator, noise: float = 0.1, xshift: float = 1.0, yshift: float = 0.3
) -> Dataset:
    """Label 0 on ``(cos t, sin t)``, label 1 on ``(xshift + cos t, yshift - sin t)``, t ~ U(0, pi)."""
    n0 = n_samples // 2
    theta = rng.uniform(0.0, np.pi, size=n_samples)
    X0 = np.stack([np.cos(theta[:n0]), np.sin(theta[:n0])], axis=1)
    X1 = np.stack([xshift + np.cos(theta[n0:]), yshift - np.sin(theta[n0:])], axis=1)
    X = np.concatenate([X0, X1]) + noise * rng.standard_normal((n_samples, 2))
    return _two_classes(X[:n0], X[n0:], "moons", rng, MoonsTruth(noise, xshift, yshift))
