"""The Dataset container and the standardiser used by the counterfactual search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from recourse_sim.data.schema import FeatureSchema
from recourse_sim.errors import DataError

if TYPE_CHECKING:  # the annotation is all this module needs of it
    from recourse_sim.data.truth import TruthModel


@dataclass(frozen=True)
class Dataset:
    """Binary classification data: ``X`` (n, d) float32, ``y`` (n,) float32 in {0, 1}; 1 = the good outcome.

    Validated on construction: shapes agree with each other and with the schema, no NaN/inf, binary labels
    with both classes present, no constant feature (except in a part of a dataset, ``is_part``: a rare one-hot
    level may be absent from a 20 % test split, which is no fault of the data).

    ``truth``: the true ``P(y = 1 | x)`` where it is known (the synthetic generators attach their exact one; real
    data has none until an oracle is fitted, :func:`recourse_sim.data.truth.fit_oracle`); every part of the
    dataset (``subset`` and what goes through it) keeps it.
    """

    X: torch.Tensor
    y: torch.Tensor
    schema: FeatureSchema
    name: str = "custom"
    is_part: bool = field(default=False, repr=False, compare=False)
    truth: TruthModel | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        X = torch.as_tensor(self.X, dtype=torch.float32)
        y = torch.as_tensor(self.y, dtype=torch.float32).reshape(-1)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        if X.ndim != 2:
            raise DataError(f"dataset {self.name!r}: X must be 2-D (n, d); got shape {tuple(X.shape)}")
        if X.shape[0] != y.shape[0]:
            raise DataError(
                f"dataset {self.name!r}: X has {X.shape[0]} rows but y has {y.shape[0]}; they must match"
            )
        if X.shape[1] != self.schema.n_features:
            raise DataError(
                f"dataset {self.name!r}: X has {X.shape[1]} columns but the schema names "
                f"{self.schema.n_features} features"
            )
        bad = ~torch.isfinite(X)
        if bad.any():
            row, col = (int(v) for v in bad.nonzero()[0])
            raise DataError(
                f"dataset {self.name!r}: feature {self.schema.names[col]!r} has a non-finite value "
                f"({X[row, col].item()}) at row {row}; NaN and inf are not allowed"
            )
        labels = set(torch.unique(y).tolist())
        if not labels <= {0.0, 1.0} or len(labels) < 2:
            raise DataError(
                f"dataset {self.name!r}: target must be binary 0/1 with both classes present; "
                f"got values {sorted(labels)}"
            )
        if X.shape[0] > 1 and not self.is_part:
            constant = (X.max(0).values == X.min(0).values).nonzero().flatten().tolist()
            if constant:
                names = [self.schema.names[j] for j in constant]
                raise DataError(
                    f"dataset {self.name!r}: constant feature(s) {names}; drop them (they carry no signal "
                    "and break standardisation)"
                )

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, target: str, schema: FeatureSchema | None = None, name: str = "custom"
    ) -> Dataset:
        """Build a Dataset from a DataFrame with numeric feature columns and a 0/1 ``target`` column."""
        if target not in frame.columns:
            raise DataError(
                f"dataset {name!r}: target column {target!r} is missing; columns are {list(frame.columns)}"
            )
        if len(frame) == 0:
            raise DataError(f"dataset {name!r}: no data rows (only a header with columns {list(frame.columns)})")
        features = frame.drop(columns=[target])
        non_numeric = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
        if non_numeric:
            raise DataError(
                f"dataset {name!r}: non-numeric feature columns {non_numeric}; one-hot encode them first "
                "and declare the groups in schema.categorical_groups"
            )
        if frame[target].isna().any():
            raise DataError(f"dataset {name!r}: target column {target!r} has missing values")
        if not pd.api.types.is_numeric_dtype(frame[target]):
            values = sorted(map(str, frame[target].unique()))[:5]
            raise DataError(f"dataset {name!r}: target column {target!r} must hold 0/1 (1 = the good outcome); got "
                            f"values {values}: map them to 0/1 first, e.g. frame[{target!r}].map({{...: 1, ...: 0}})")
        schema = schema or FeatureSchema.unconstrained([str(c) for c in features.columns])
        if tuple(schema.names) != tuple(str(c) for c in features.columns):
            raise DataError(
                f"dataset {name!r}: schema names {list(schema.names)} do not match the feature columns "
                f"{list(features.columns)}"
            )
        return cls(
            X=torch.tensor(features.to_numpy(dtype=np.float32)),
            y=torch.tensor(frame[target].to_numpy(dtype=np.float32)),
            schema=schema,
            name=name,
        )

    def to_frame(self, target: str = "y") -> pd.DataFrame:
        frame = pd.DataFrame(self.X.cpu().numpy(), columns=list(self.schema.names))
        frame[target] = self.y.cpu().numpy().astype(int)
        return frame

    def subset(self, index: np.ndarray | torch.Tensor) -> Dataset:
        index = torch.as_tensor(index, dtype=torch.long)
        return Dataset(self.X[index], self.y[index], self.schema, self.name, is_part=True, truth=self.truth)

    def shuffled(self, rng: np.random.Generator) -> Dataset:
        """The same rows in a random order drawn from ``rng``."""
        return self.subset(rng.permutation(self.n_samples))

    def bounded_to_range(self) -> Dataset:
        """The same rows with every feature bounded to the range its values span here (a bound the schema already
        sets more tightly stays). ECCCo's experiments clamp the counterfactual search to the data's range this way;
        without it an unbounded model's energy keeps pulling counterfactuals past the data ("overshoot")."""
        lower, upper = self.X.min(0).values.tolist(), self.X.max(0).values.tolist()
        bounds = {name: (max(lo, schema_lo), min(hi, schema_hi)) for name, lo, hi, schema_lo, schema_hi
                  in zip(self.schema.names, lower, upper, self.schema.lower, self.schema.upper)}
        return Dataset(self.X, self.y, self.schema.with_updates(bounds=bounds), self.name, self.is_part, self.truth)

    def stratified_split(self, test_share: float, rng: np.random.Generator) -> tuple[Dataset, Dataset]:
        """Stratified train/test split with ``floor(test_share * n_c)`` test rows per class ``c``.

        AlgorithmicRecourseDynamics.jl v0.1.2 takes ``floor(0.2 * N / 2)`` per class of the balanced data
        (synthetic: 800/200). Both parts come back in a random order: batch-1 training without shuffling
        visits rows in order, so no order (e.g. one class after the other) may survive the split.
        """
        y = self.y.numpy()
        test = []
        for label in (0.0, 1.0):
            members = np.flatnonzero(y == label)
            n_test = int(np.floor(test_share * members.size))
            test.append(rng.choice(members, size=n_test, replace=False))
        test_index = np.concatenate(test)
        train_index = np.setdiff1d(np.arange(self.n_samples), test_index)
        return self.subset(rng.permutation(train_index)), self.subset(rng.permutation(test_index))

    def balanced_subsample(self, n_samples: int, rng: np.random.Generator) -> Dataset:
        """Random undersample to ``n_samples`` rows with equal classes (fewer if a class is too small), in a
        random order."""
        y = self.y.numpy()
        per_class = min(n_samples // 2, *(int((y == c).sum()) for c in (0.0, 1.0)))
        index = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in (0.0, 1.0)])
        return self.subset(rng.permutation(index))


@dataclass(frozen=True)
class Standardizer:
    """Z-score transform ``z = (x - mean) / scale``, fitted once on the initial data.

    CounterfactualExplanations.jl v0.1.5 runs feature-space searches in this space (``data.dt``), never
    refitted as the population moves.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def fit(cls, X: torch.Tensor) -> Standardizer:
        scale = X.std(0, unbiased=True)
        return cls(mean=X.mean(0), scale=torch.where(scale > 0, scale, torch.ones_like(scale)))

    @classmethod
    def identity(cls, n_features: int) -> Standardizer:
        return cls(mean=torch.zeros(n_features), scale=torch.ones(n_features))

    def to(self, device: torch.device) -> Standardizer:
        return Standardizer(self.mean.to(device), self.scale.to(device))

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        return (X - self.mean) / self.scale

    def inverse_transform(self, Z: torch.Tensor) -> torch.Tensor:
        return Z * self.scale + self.mean
