"""The true outcome model ``P(y = 1 | x)`` of every dataset: exact for the synthetic ones, an oracle for real data.

Issue 14 ("gaming vs improvement") asks whether a counterfactual moved an individual's *true* chance of the good
outcome or only the classifier's opinion of it. That needs the truth, which a :class:`TruthModel` supplies:
``proba(X (..., d)) -> (...)``, float32 on ``X``'s device, finite and in [0, 1] everywhere.

Synthetic data (:mod:`recourse_sim.data.synthetic`) has a known generative process, so its truth is exact
(``name = "exact"``). Every generator draws ``n // 2`` rows of class 0 and the rest of class 1, so both class
priors are 1/2 (for even n; an odd n shifts them by 1/(2n), which the truth ignores) and the posterior log-odds
equal the log-likelihood ratio ``log p(x | 1) - log p(x | 0)``. The truths compute it in float64 and in log space,
with every term that both classes share (``||x||^2``, the normalising constants) cancelled analytically rather
than numerically, so it stays finite far from the data.

Real data has no known process: :func:`fit_oracle` fits one fixed, stronger classifier on all rows once and lets
it stand in for the truth (a semi-synthetic design, ``name = "oracle"``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.special import roots_legendre

from recourse_sim.errors import DataError

if TYPE_CHECKING:
    from recourse_sim.models.base import StackedClassifier

#: Rows x quadrature nodes per block of :class:`MoonsTruth` (200,000 rows at 512 nodes would otherwise need an
#: 800 MiB temporary). On the CPU a block that stays in cache (2^17 float64 = 1 MiB) is 8x faster than a 32 MiB one
#: (0.7 s against 5.6 s for 200,000 rows, one thread); a GPU wants few, large blocks.
_CPU_BLOCK_ELEMENTS, _GPU_BLOCK_ELEMENTS = 1 << 17, 1 << 24
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


class TruthModel(ABC):
    """The true ``P(y = 1 | x)`` of a dataset; ``name`` says how it is known (``"exact"`` or ``"oracle"``)."""

    name: str

    @abstractmethod
    def proba(self, X: torch.Tensor) -> torch.Tensor:
        """``P(y = 1 | x)`` for ``X`` (..., d) -> (...), float32 on ``X``'s device, in [0, 1], no autograd."""


class ExactTruth(TruthModel):
    """A truth derived from the generative process: ``proba = sigmoid(log_odds)`` with class priors 1/2.

    A subclass provides ``_log_odds`` in float64; the sigmoid of a finite float64 number is finite and in
    [0, 1] (it saturates to exactly 0 or 1 beyond |log-odds| ~ 37 in float32).
    """

    name = "exact"
    n_features: int

    def proba(self, X: torch.Tensor) -> torch.Tensor:
        X = torch.as_tensor(X)
        with torch.no_grad():
            return torch.sigmoid(self.log_odds(X)).to(torch.float32)

    def log_odds(self, X: torch.Tensor) -> torch.Tensor:
        """``log p(x | 1) - log p(x | 0)`` (= the posterior log-odds at priors 1/2): (..., d) -> (...), float64."""
        X = torch.as_tensor(X)
        if X.shape[-1] != self.n_features:
            raise DataError(f"{type(self).__name__}: X has {X.shape[-1]} features; the truth is defined on "
                            f"{self.n_features}")
        with torch.no_grad():
            # The simulation's tensors are float32; within that range every log-odds below is finite in float64
            # (the largest intermediate, ||x||^2 / s^2 ~ 1e77 / 0.01, is far below 1.8e308). Wider float64 input is
            # clamped into it: out there the posterior has long saturated.
            return self._log_odds(X.to(torch.float64).clamp(-_FLOAT32_MAX, _FLOAT32_MAX))

    @abstractmethod
    def _log_odds(self, X: torch.Tensor) -> torch.Tensor:
        """:meth:`log_odds` for validated float64 ``X``."""


class GaussianBlobsTruth(ExactTruth):
    """Two isotropic Gaussians ``N(c_k, std^2 I)`` (``linearly_separable``: std 0.1, ``overlapping``: 0.5).

    ``P(y = 1 | x) = sigmoid((||x - c0||^2 - ||x - c1||^2) / (2 std^2))``, computed as the linear function
    ``x . (c1 - c0) / std^2 + (||c0||^2 - ||c1||^2) / (2 std^2)`` it equals: the ``||x||^2`` terms cancel exactly
    instead of in floating point, which matters far from the data.
    ``centres`` (2, d) are the centres the generator drew (row k = class k).
    """

    def __init__(self, centres: torch.Tensor | np.ndarray, std: float) -> None:
        centres = torch.as_tensor(centres, dtype=torch.float64)
        if centres.ndim != 2 or centres.shape[0] != 2:
            raise DataError(f"GaussianBlobsTruth: centres must have shape (2, d); got {tuple(centres.shape)}")
        if not std > 0:
            raise DataError(f"GaussianBlobsTruth: std must be > 0; got {std}")
        self.centres, self.std = centres, float(std)
        self.n_features = centres.shape[1]
        variance = self.std**2
        self._weight = (centres[1] - centres[0]) / variance
        self._bias = float((centres[0].square().sum() - centres[1].square().sum()) / (2 * variance))

    def _log_odds(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self._weight.to(X.device) + self._bias


class CirclesTruth(ExactTruth):
    """Class 0: a ring of radius ``factor``, class 1: the unit circle; uniform angle, plus ``N(0, noise^2 I)``.

    A ring of radius R blurred by isotropic noise s has the exact density (average the Gaussian over the angle)

        p_R(x) = exp(-(r^2 + R^2) / (2 s^2)) I0(r R / s^2) / (2 pi s^2),    r = ||x||,

    with I0 the modified Bessel function. The log-odds ``log p_1 - log p_0`` lose the common ``r^2`` and
    ``2 pi s^2`` terms, and ``log I0(z) = log i0e(z) + z`` (``i0e`` is the exponentially scaled I0) stays finite
    where ``I0`` overflows (``r R / s^2 > 713``, i.e. r > 16 at the paper's s = 0.15).
    """

    n_features = 2

    def __init__(self, noise: float, factor: float) -> None:
        if not noise > 0 or not factor >= 0:
            raise DataError(f"CirclesTruth: need noise > 0 and factor >= 0; got noise={noise}, factor={factor}")
        self.noise, self.factor = float(noise), float(factor)

    def _log_odds(self, X: torch.Tensor) -> torch.Tensor:
        r = X.norm(dim=-1)
        s2 = self.noise**2
        radius0, radius1 = self.factor, 1.0
        return (radius0**2 - radius1**2) / (2 * s2) + _log_i0(r * radius1 / s2) - _log_i0(r * radius0 / s2)


def _log_i0(z: torch.Tensor) -> torch.Tensor:
    """``log I0(z)`` for ``z >= 0``, finite for every finite ``z`` (i0e(z) ~ 1 / sqrt(2 pi z) never underflows)."""
    return torch.log(torch.special.i0e(z)) + z


class MoonsTruth(ExactTruth):
    """Class 0 on ``(cos t, sin t)``, class 1 on ``(xshift + cos t, yshift - sin t)``, t ~ U(0, pi), plus
    ``N(0, noise^2 I)``.

    No closed form: the class density ``p_k(x) = (1/pi) int_0^pi N(x; m_k(t), s^2 I) dt`` is integrated by
    ``n_nodes``-point Gauss-Legendre quadrature on [0, pi] as a logsumexp in float64. Writing
    ``||x - m||^2 = ||x||^2 - 2 x.m + ||m||^2``, the ``||x||^2`` term and every constant are common to both
    classes and dropped, so the log-odds are ``LSE_j(log w_j + (2 x.m_1(t_j) - ||m_1(t_j)||^2) / (2 s^2)) - (the
    same for class 0)``.

    Accuracy, measured against ``scipy.integrate.quad`` (relative tolerance 1e-13 on 64-256 pieces of [0, pi]) at the
    paper's parameters: 512 nodes give max |error in P| = 2.8e-13 over 200 uniform points in [-1.5, 2.5] x
    [-1, 1.5], and 1.0e-12 (1.4e-11 in log-odds) over 100 points in [-4, 4]^2; already 128 nodes reach 1e-12.
    Gauss-Legendre rather than a midpoint rule because the integrand is not periodic in t: the 512-point midpoint
    rule errs by up to 5.1e-4 in P on the first set of points (the trapezoid rule by 1.0e-3), converging only as
    1/n^2. ``tests/test_truth.py`` checks 512 against 4,096 nodes (< 1e-6) and against adaptive quadrature.
    """

    n_features = 2

    def __init__(
        self, noise: float, xshift: float = 1.0, yshift: float = 0.3, n_nodes: int = 512
    ) -> None:
        if not noise > 0 or not (isinstance(n_nodes, int) and n_nodes >= 2):
            raise DataError(f"MoonsTruth: need noise > 0 and an integer n_nodes >= 2; got noise={noise}, "
                            f"n_nodes={n_nodes}")
        self.noise, self.xshift, self.yshift, self.n_nodes = float(noise), float(xshift), float(yshift), n_nodes
        t, log_w = _gauss_legendre(n_nodes)
        # (2, 2, n_nodes): class k, coordinate, node.
        self._arcs = torch.stack([
            torch.stack([torch.cos(t), torch.sin(t)]),
            torch.stack([self.xshift + torch.cos(t), self.yshift - torch.sin(t)]),
        ])
        two_s2 = 2 * self.noise**2
        self._offsets = log_w - self._arcs.square().sum(1) / two_s2  # (2, n_nodes): log w_j - ||m_k(t_j)||^2 / 2s^2

    def _log_odds(self, X: torch.Tensor) -> torch.Tensor:
        flat = X.reshape(-1, 2)
        scaled_arcs = self._arcs.to(X.device) / self.noise**2  # x . m / s^2 = x @ (m / s^2)
        offsets = self._offsets.to(X.device)
        block_elements = _CPU_BLOCK_ELEMENTS if X.device.type == "cpu" else _GPU_BLOCK_ELEMENTS
        rows = max(1, block_elements // self.n_nodes)
        out = torch.empty(flat.shape[0], dtype=torch.float64, device=X.device)
        for start in range(0, flat.shape[0], rows):
            block = flat[start : start + rows]
            log_density = [torch.logsumexp(torch.addmm(offsets[k], block, scaled_arcs[k]), dim=-1) for k in (0, 1)]
            out[start : start + rows] = log_density[1] - log_density[0]
        return out.reshape(X.shape[:-1])


@lru_cache(maxsize=8)
def _gauss_legendre(n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes on [0, pi] and log weights (up to the factor pi/2, which cancels in the log-odds), float64."""
    u, w = roots_legendre(n_nodes)
    return torch.as_tensor((u + 1.0) * math.pi / 2), torch.as_tensor(np.log(w))


#: The oracle's settings for :class:`recourse_sim.models.DeepEnsemble` (see :func:`fit_oracle` for the numbers).
ORACLE_SETTINGS: Mapping[str, object] = MappingProxyType({
    "hidden_sizes": (32, 32), "n_members": 5, "dropout": 0.1, "epochs": 100, "batch_size": 128,
    "learning_rate": 1e-3, "shuffle": True,
})


class OracleTruth(TruthModel):
    """A fitted classifier standing in for the unknown truth of real data: ``proba`` = its p(y = 1 | x).

    The model is fitted once (by :func:`fit_oracle`) and never retrained: it is the world, not a system.
    Finite for all inputs whose hidden activations do not overflow float32 (checked at |x| = 1e3 and 1e6).
    """

    name = "oracle"

    def __init__(self, model: StackedClassifier) -> None:
        self.model = model

    def proba(self, X: torch.Tensor) -> torch.Tensor:
        X = torch.as_tensor(X)
        p = self.model.proba_positive(X.reshape(-1, X.shape[-1]))  # (n,): the model holds one system
        return p.reshape(X.shape[:-1]).to(device=X.device, dtype=torch.float32)


def fit_oracle(
    X: torch.Tensor, y: torch.Tensor, seed: int, device: str | torch.device = "auto"
) -> OracleTruth:
    """Fit the real-data oracle once on all given rows (the simulation passes train + test rows).

    A :class:`~recourse_sim.models.DeepEnsemble` of 5 ReLU MLPs ``d-32-32-1``, dropout 0.1, 100 epochs of
    shuffled mini-batches of 128, Adam(1e-3) (:data:`ORACLE_SETTINGS`); ``p = `` the mean member sigmoid.
    Inputs are used as given (the shipped real data is already z-scored); bit-identical for one ``seed`` on one
    device.

    Chosen by pooled 5-fold cross-validation on each shipped dataset ``DATASETS[name](5000, default_rng(0))``
    (folds ``default_rng(1).permutation(n) % 5``, model seed = fold index, 1 torch thread), held-out accuracy /
    log-loss (standard error of an accuracy ~0.0065; n = 3,910 for give_me_some_credit, whose minority class is
    small):

    ====================  ===============  ===============  ================  ===============
    dataset               logistic regr.   default mlp      paper's real mlp  this oracle
    ====================  ===============  ===============  ================  ===============
    credit_default        0.670 / 0.613    0.674 / 0.675    0.697 / 0.580     0.701 / 0.570
    give_me_some_credit   0.771 / 0.488    0.761 / 0.516    0.769 / 0.487     0.769 / 0.480
    california_housing    0.836 / 0.380    0.856 / 0.344    0.860 / 0.331     0.861 / 0.323
    ====================  ===============  ===============  ================  ===============

    ("paper's real mlp": 64-64, dropout 0.1, batch 500, one network.) No other setting tried was better on all
    three: more fitting helps california_housing and hurts credit_default (64-64 at batch 64: 0.314 and 0.606;
    32-32 for 200 epochs: 0.314 and 0.574; 128-128 at batch 128, dropout 0.2: 0.320 and 0.596 at 5-11x the fit
    time); 10 members instead of 5 changed log-losses by < 0.007 either way. The real data is noisy
    (credit_default's best held-out accuracy is ~0.70), so the oracle's edge is in calibration (log-loss) more
    than in accuracy.
    Fit time on all rows, one CPU core of a 2-core machine under light load: 1.8-2.0 s for credit_default's 5,000
    rows (29 features), 1.6-1.9 s for california_housing's 5,000, 1.1-1.4 s for give_me_some_credit's 3,910
    (compiled training; the default mlp takes 0.1-0.4 s on 4,000 rows).
    """
    # Imported here: the models layer sits above the data layer.
    from recourse_sim.models import DeepEnsemble

    X = torch.as_tensor(X, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.float32)
    model = DeepEnsemble(**ORACLE_SETTINGS, seed=seed, device=device).fit(X, y)
    return OracleTruth(model)
