"""Shipped real datasets (GMSC, UCI credit default, California Housing) and ``load_csv``."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import torch

from recourse_sim.data import DATASETS, Dataset, FeatureSchema, load_csv, real
from recourse_sim.errors import ConfigError, DataError

# name -> (loader, d after preprocessing, rows of a balanced sample of 5,000 requested)
CASES = {
    "give_me_some_credit": (real.give_me_some_credit, 10, 3910),
    "credit_default": (real.credit_default, 29, 5000),
    "california_housing": (real.california_housing, 8, 5000),
}
PROVENANCE_SHA256 = {
    "give_me_some_credit.csv.gz": "43709ea5677370e0a35ba7b4efeacfedffab09654ce268d724c94604a922677b",
    "credit_default.csv.gz": "88dfb4cfc9a8057095b96eb5fd5320937c7536ce5c3620876b30d3c65bd2a700",
    "california_housing.csv.gz": "dd226f82db6264ad85a0a90c04c1bd4afe0374cd273f5599a838f3d79f953ea9",
}


def _load(name: str, n: int | None = 5000, seed: int = 42, **kwargs) -> Dataset:
    return CASES[name][0](n, np.random.default_rng(seed), **kwargs)


def _continuous(data: Dataset) -> list[int]:
    one_hot = {j for group in data.schema.categorical_groups for j in group}
    return [j for j in range(data.n_features) if j not in one_hot]


def test_shipped_files_match_provenance_checksums():
    files = resources.files("recourse_sim.data") / "files"
    for filename, digest in PROVENANCE_SHA256.items():
        assert hashlib.sha256((files / filename).read_bytes()).hexdigest() == digest, filename
        assert (files / filename.replace(".csv.gz", ".md")).is_file(), f"data card for {filename}"
    assert real.SHA256 == PROVENANCE_SHA256
    assert real.verify_checksums() == dict.fromkeys(PROVENANCE_SHA256, True)


def test_loaders_are_registered():
    for name, (loader, _, _) in CASES.items():
        assert DATASETS[name] is loader


@pytest.mark.parametrize("name", CASES)
def test_shape_and_exact_class_balance(name):
    _, d, n = CASES[name]
    data = _load(name)
    assert data.X.dtype == torch.float32 and data.name == name
    assert data.X.shape == (n, d) and data.schema.n_features == d
    assert int(data.y.sum()) == n // 2 == int((data.y == 0).sum())


def test_gmsc_caps_at_twice_its_minority_class_without_warning(recwarn):
    data = _load("give_me_some_credit", n=10_000)
    assert data.n_samples == 3910
    assert len(recwarn) == 0
    small = _load("give_me_some_credit", n=1001)
    assert small.n_samples == 1000 and int(small.y.sum()) == 500


@pytest.mark.parametrize("name", CASES)
def test_continuous_columns_standardised_and_one_hot_groups_valid(name):
    data = _load(name)
    Z = data.X[:, _continuous(data)].double()
    assert torch.allclose(Z.mean(0), torch.zeros(Z.shape[1], dtype=torch.float64), atol=1e-5)
    assert torch.allclose(Z.std(0, unbiased=True), torch.ones(Z.shape[1], dtype=torch.float64), atol=1e-5)
    for group in data.schema.categorical_groups:
        block = data.X[:, list(group)]
        assert set(block.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(block.sum(1), torch.ones(data.n_samples))
        assert all(data.schema.lower[j] == 0.0 and data.schema.upper[j] == 1.0 for j in group)


@pytest.mark.parametrize("name", CASES)
def test_data_lie_within_standardised_bounds(name):
    data = _load(name, n=None)
    lower, upper = torch.tensor(data.schema.lower), torch.tensor(data.schema.upper)
    assert bool((data.X >= lower - 1e-5).all() and (data.X <= upper + 1e-5).all())


def test_credit_default_columns_and_groups():
    data = _load("credit_default")
    names = data.schema.names
    groups = [[names[j] for j in g] for g in data.schema.categorical_groups]
    assert groups == [
        ["SEX_male", "SEX_female"],
        ["EDUCATION_graduate_school", "EDUCATION_university", "EDUCATION_high_school", "EDUCATION_others"],
        ["MARRIAGE_married", "MARRIAGE_single", "MARRIAGE_others"],
    ]
    assert len(_continuous(data)) == 20 and "ID" not in names
    # Undocumented EDUCATION 0/5/6 (345 rows) and MARRIAGE 0 (54 rows) are folded into "others".
    full = _load("credit_default", n=None)
    assert int(full.X[:, names.index("EDUCATION_others")].sum()) == 123 + 345
    assert int(full.X[:, names.index("MARRIAGE_others")].sum()) == 323 + 54
    assert int(full.y.sum()) == 23_364  # 1 = no default (the flipped target)
    # SEX: code 1 = male (11,888 rows), 2 = female (18,112), per the data card; a swap of the codes under the
    # same column names exchanges the totals (tests/test_independent_truth.py recomputes them from the raw CSV).
    assert int(full.X[:, names.index("SEX_male")].sum()) == 11_888
    assert int(full.X[:, names.index("SEX_female")].sum()) == 18_112


def test_gmsc_and_housing_full_targets_match_provenance():
    assert int(_load("give_me_some_credit", n=None).y.sum()) == 26_927  # 1 = no serious delinquency
    assert _load("give_me_some_credit", n=None).n_samples == 28_882
    ge = _load("california_housing", n=None)
    gt = _load("california_housing", n=None, strict_median=True)
    assert ge.n_samples == gt.n_samples == 20_640
    assert int(ge.y.sum()) == 10_325 and int(gt.y.sum()) == 10_317
    assert "MedHouseVal" not in ge.schema.names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "give_me_some_credit",
            {
                "age": "increase",
                "NumberOfTime30-59DaysPastDueNotWorse": "none",
                "NumberOfTime60-89DaysPastDueNotWorse": "none",
                "NumberOfTimes90DaysLate": "none",
                "NumberOfDependents": "none",
                "MonthlyIncome": "both",
                "RevolvingUtilizationOfUnsecuredLines": "both",
            },
        ),
        (
            "credit_default",
            {
                "AGE": "increase",
                "SEX_male": "none",
                "SEX_female": "none",
                **{f"EDUCATION_{v}": "none" for v in ("graduate_school", "university", "high_school", "others")},
                **{f"MARRIAGE_{v}": "none" for v in ("married", "single", "others")},
                **{p: "none" for p in ("PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6")},
                "LIMIT_BAL": "both",
                "BILL_AMT1": "both",
                "PAY_AMT1": "both",
            },
        ),
        (
            "california_housing",
            {"HouseAge": "none", "Latitude": "none", "Longitude": "none", "MedInc": "both", "AveRooms": "both"},
        ),
    ],
)
def test_mutability_choices(name, expected):
    schema = _load(name).schema
    assert {k: schema.mutability[schema.index(k)] for k in expected} == expected
    free = _load(name, constraints=False).schema
    assert set(free.mutability) == {"both"}
    assert free.categorical_groups == schema.categorical_groups


def test_non_negative_raw_quantity_gets_standardised_lower_bound():
    data = real.give_me_some_credit(1000, np.random.default_rng(3))
    raw = real._read("give_me_some_credit.csv.gz")
    chosen = real._balanced_index(raw["SeriousDlqin2yrs"].to_numpy(), 1000, np.random.default_rng(3))
    income = raw["MonthlyIncome"].to_numpy()[chosen]
    mean, std = income.mean(), income.std(ddof=1)
    j = data.schema.index("MonthlyIncome")
    assert data.schema.lower[j] == pytest.approx(-mean / std)
    assert torch.allclose(data.X[:, j].double(), torch.tensor((income - mean) / std), atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_same_seed_same_sample_other_seed_other_sample(name):
    a, b, c = _load(name, seed=7), _load(name, seed=7), _load(name, seed=8)
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y) and a.schema == b.schema
    assert not torch.equal(a.X, c.X)


def test_a_sample_is_a_balanced_draw_of_raw_rows_standardised_on_the_sample():
    """Independent truth from the raw CSV: 500 rows per class drawn from the file (in a random order), each
    feature z-scored with the *sample's* mean and standard deviation (ddof = 1)."""
    sample = real.california_housing(1000, np.random.default_rng(5))
    raw = pd.read_csv(resources.files("recourse_sim.data") / "files" / "california_housing.csv.gz")
    value = raw.pop("MedHouseVal")
    label = (value >= value.median()).to_numpy()
    rows = real._balanced_index(label.astype(int), 1000, np.random.default_rng(5))
    assert sorted(np.bincount(label[rows].astype(int))) == [500, 500]
    picked = raw.iloc[rows]
    expected = ((picked - picked.mean()) / picked.std(ddof=1)).to_numpy(dtype=np.float32)
    np.testing.assert_allclose(sample.X.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(sample.y.numpy(), label[rows].astype(np.float32))
    assert not (np.diff(rows) > 0).all()  # the rows come in a random order, not the file's


@pytest.mark.parametrize("bad", [0, 1, -5, 2.5, True, "5000"])
def test_bad_n_samples_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="n_samples"):
        real.california_housing(bad, np.random.default_rng(0))


def test_too_small_sample_names_the_constant_features():
    with pytest.raises(DataError, match="constant"):
        real.credit_default(2, np.random.default_rng(0))


# --- load_csv ----------------------------------------------------------------------------------------


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"income": [1.0, 2.0, 3.0, 4.0], "debt": [0.5, 0.1, 0.3, 0.2], "ok": [0, 1, 0, 1]})


def test_load_csv_from_path_and_frame(tmp_path):
    path = tmp_path / "mine.csv"
    _frame().to_csv(path, index=False)
    data = load_csv(path, "ok")
    assert data.name == "mine" and data.schema.names == ("income", "debt")
    assert data.X.shape == (4, 2) and data.y.tolist() == [0.0, 1.0, 0.0, 1.0]
    schema = FeatureSchema(("income", "debt"), ("both", "decrease"))
    from_frame = load_csv(_frame(), "ok", schema=schema, name="framed")
    assert from_frame.name == "framed" and from_frame.schema is schema
    assert torch.equal(from_frame.X, data.X)


def test_load_csv_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="nope.csv"):
        load_csv(missing, "ok")


def test_load_csv_missing_target_names_the_column(tmp_path):
    path = tmp_path / "mine.csv"
    _frame().to_csv(path, index=False)
    with pytest.raises(DataError, match="target column 'label' is missing"):
        load_csv(path, "label")


def test_load_csv_nan_is_rejected(tmp_path):
    frame = _frame()
    frame.loc[2, "debt"] = np.nan
    path = tmp_path / "holes.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="'debt'.*non-finite"):
        load_csv(path, "ok")
    frame = _frame().astype({"ok": float})
    frame.loc[1, "ok"] = np.nan
    with pytest.raises(DataError, match="target column 'ok' has missing values"):
        load_csv(frame, "ok")


def test_load_csv_rejects_other_inputs():
    with pytest.raises(DataError, match="CSV path or a pandas DataFrame"):
        load_csv(42, "ok")  # type: ignore[arg-type]
