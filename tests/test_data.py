"""Synthetic datasets, the feature schema and Dataset validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recourse_sim.data import DATASETS, Dataset, FeatureSchema, Standardizer
from recourse_sim.errors import ConfigError, DataError

SYNTHETIC = ["linearly_separable", "overlapping", "circles", "moons"]


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_datasets_are_balanced_and_seeded(name):
    a = DATASETS[name](1000, np.random.default_rng(42))
    b = DATASETS[name](1000, np.random.default_rng(42))
    assert a.X.shape == (1000, 2) and int(a.y.sum()) == 500
    assert torch.equal(a.X, b.X)
    assert not torch.equal(a.X, DATASETS[name](1000, np.random.default_rng(43)).X)


def test_blob_spreads_match_the_paper():
    for name, std in (("linearly_separable", 0.1), ("overlapping", 0.5)):
        data = DATASETS[name](4000, np.random.default_rng(0))
        for label in (0, 1):
            spread = data.X[data.y == label].std(0)
            assert torch.allclose(spread, torch.full((2,), std), rtol=0.1)


def test_circles_and_moons_geometry():
    circles = DATASETS["circles"](4000, np.random.default_rng(0))
    radius = circles.X.norm(dim=1)
    assert radius[circles.y == 0].mean() < 0.25 and abs(radius[circles.y == 1].mean() - 1.0) < 0.05
    moons = DATASETS["moons"](4000, np.random.default_rng(0))
    # MLJ's moons: label 1 is centred at x = 1 (xshift), label 0 at x = 0.
    assert abs(moons.X[moons.y == 0, 0].mean()) < 0.1 and abs(moons.X[moons.y == 1, 0].mean() - 1.0) < 0.1


def test_stratified_split_is_per_class_floor():
    data = DATASETS["overlapping"](1000, np.random.default_rng(0))
    train, test = data.stratified_split(0.2, np.random.default_rng(0))
    assert (train.n_samples, test.n_samples) == (800, 200)
    assert int(test.y.sum()) == 100


def test_standardizer_round_trip():
    X = torch.randn(50, 3) * torch.tensor([1.0, 10.0, 0.1]) + 5
    scaler = Standardizer.fit(X)
    torch.testing.assert_close(scaler.inverse_transform(scaler.transform(X)), X)
    torch.testing.assert_close(scaler.transform(X).std(0), torch.ones(3))


def test_nan_in_data_is_named():
    X = torch.randn(10, 2)
    X[3, 1] = float("nan")
    with pytest.raises(DataError, match="feature 'x2'.*row 3"):
        Dataset(X, torch.tensor([0, 1] * 5), FeatureSchema.unconstrained(["x1", "x2"]))


@pytest.mark.parametrize("y,match", [([0, 0, 0, 0], "both classes"), ([0, 1, 2, 1], "binary")])
def test_labels_must_be_binary_with_both_classes(y, match):
    with pytest.raises(DataError, match=match):
        Dataset(torch.randn(4, 2), torch.tensor(y), FeatureSchema.unconstrained(["a", "b"]))


def test_constant_column_and_shape_mismatch():
    X = torch.randn(6, 2)
    X[:, 1] = 1.0
    with pytest.raises(DataError, match="constant feature"):
        Dataset(X, torch.tensor([0, 1] * 3), FeatureSchema.unconstrained(["a", "b"]))
    with pytest.raises(DataError, match="schema names 3"):
        Dataset(torch.randn(6, 2), torch.tensor([0, 1] * 3), FeatureSchema.unconstrained(["a", "b", "c"]))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"mutability": ("both", "sideways")}, "schema.mutability"),
        ({"lower": (1.0, 0.0), "upper": (0.0, 1.0)}, "schema.bounds"),
        ({"categorical_groups": ((0,),)}, "schema.categorical_groups"),
    ],
)
def test_schema_errors_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        FeatureSchema(("a", "b"), **kwargs)


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(ConfigError, match="did you mean 'moons'"):
        DATASETS["moon"]


def test_one_hot_group_mutability_must_be_uniform():
    with pytest.raises(ConfigError, match="one-hot group"):
        FeatureSchema(("a", "c0", "c1"), mutability=("both", "increase", "both"), categorical_groups=((1, 2),))
    FeatureSchema(("a", "c0", "c1"), mutability=("both", "none", "none"), categorical_groups=((1, 2),))


def test_data_range_bounds_box_the_rows_and_keep_tighter_schema_bounds():
    schema = FeatureSchema(("a", "b"), lower=(-math.inf, 0.0), upper=(math.inf, 4.0))
    data = Dataset(torch.tensor([[0.0, 0.5], [1.0, 4.0], [3.0, 1.0], [2.0, 0.0]]),
                   torch.tensor([0.0, 1.0, 0.0, 1.0]), schema)
    bounded = data.bounded_to_range()
    assert bounded.schema.lower == (0.0, 0.0) and bounded.schema.upper == (3.0, 4.0)
    assert torch.equal(bounded.X, data.X) and bounded.schema.names == schema.names


def test_scenario_data_range_bounds_the_search_to_the_data():
    """``data.bounds = "data_range"``: ECCCo's counterfactuals stay inside the box of the loaded rows."""
    from recourse_sim.experiments import Scenario
    from recourse_sim.simulation import RecourseDynamics

    raw = {"seed": 3, "rounds": 3, "recourse_share": 0.5, "data": {"name": "moons", "n_samples": 200},
           "models": [{"name": "mlp", "epochs": 20}], "generators": ["eccco"], "vae": {"epochs": 1},
           "metrics": {"evaluate_every": 3, "permutations": 0}, "device": "cpu"}
    unbounded = Scenario.from_dict(raw)
    bounded = Scenario.from_dict({**raw, "data": {**raw["data"], "bounds": "data_range"}})
    assert "bounds" not in unbounded.to_toml()  # unset stays out of the resolved file: sweep cell ids unchanged
    explicit = Scenario.from_dict({**raw, "data": {**raw["data"], "bounds": "schema"}}).load_data()[0]
    assert explicit.schema == unbounded.load_data()[0].schema and math.isinf(explicit.schema.upper[0])
    train, test = bounded.load_data()
    box = torch.cat([train.X, test.X])
    assert train.schema.lower == tuple(box.min(0).values.tolist()) == test.schema.lower
    assert train.schema.upper == tuple(box.max(0).values.tolist())
    runs = {}
    for name, scenario in (("unbounded", unbounded), ("bounded", bounded)):
        model = RecourseDynamics(scenario.build(), seed=3)
        model.run()
        runs[name] = model.population.X[0]
    lower, upper = torch.tensor(train.schema.lower), torch.tensor(train.schema.upper)
    assert ((runs["bounded"] >= lower) & (runs["bounded"] <= upper)).all()
    # Without the box ECCCo's energy pulls some movers past the data (the overshoot the option is for).
    assert not ((runs["unbounded"] >= lower) & (runs["unbounded"] <= upper)).all()
