"""One home for every setting: the scenario schema reads its defaults and checks from the settings dataclasses
and the constructors' signatures, so an empty scenario, a Python user and a TOML file agree (issue 15)."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from pathlib import Path

import pytest

from recourse_sim.errors import ConfigError
from recourse_sim.experiments import Scenario
from recourse_sim.generators import GENERATORS, GeneratorSpec, SearchSettings
from recourse_sim.models import MODELS
from recourse_sim.models.vae import VAE
from recourse_sim.simulation.config import DEFAULT_SEED, MetricSettings, SimulationConfig

MINIMAL = {"models": ["logistic_regression"], "generators": ["generic"]}
PACKAGE = Path(__file__).resolve().parents[1] / "recourse_sim"


def test_a_scenario_without_options_is_exactly_the_dataclass_defaults():
    scenario = Scenario(**MINIMAL)
    assert scenario.metrics == MetricSettings()
    assert scenario.search == SearchSettings()
    dynamics = {f.name: f.default for f in dataclasses.fields(SimulationConfig) if f.default is not dataclasses.MISSING}
    assert dynamics  # rounds, repetitions, recourse_share, pairing, device
    for name, default in dynamics.items():
        assert getattr(scenario, name) == default, name
    assert scenario.rounds == 50  # the paper's; the embedded default scenario asks for 20 itself
    assert scenario.seed == DEFAULT_SEED
    vae_defaults = {k: p.default for k, p in inspect.signature(VAE).parameters.items()
                    if k not in ("device", "seed") and p.default is not None}
    assert scenario.vae == vae_defaults
    # what the scenario builds carries the same objects
    built = scenario.build()
    assert built.metrics == MetricSettings() and built.search == SearchSettings()
    assert built.rounds == SimulationConfig.__dataclass_fields__["rounds"].default


def test_the_resolved_scenario_reads_back_identically():
    scenario = Scenario(**MINIMAL, metrics={"permutations": 7}, search={"standardize": False}, vae={"epochs": 3})
    again = Scenario.from_dict(scenario.model_dump(mode="json", exclude_none=True))
    assert again == scenario
    assert again.metrics.permutations == 7 and again.search.standardize is False and again.vae["epochs"] == 3


@pytest.mark.parametrize("table, make, field, shown", [
    ({"metrics": {"permutations": "3"}}, lambda: MetricSettings(permutations="3"), "metrics.permutations", "'3'"),
    ({"metrics": {"permutations": -1}}, lambda: MetricSettings(permutations=-1), "metrics.permutations", "-1"),
    ({"metrics": {"length_scale": 0}}, lambda: MetricSettings(length_scale=0), "metrics.length_scale", "0"),
    ({"metrics": {"definitions": "papers"}}, lambda: MetricSettings(definitions="papers"), "metrics.definitions",
     "'papers'"),
    ({"search": {"n_counterfactuals": 0}}, lambda: SearchSettings(n_counterfactuals=0), "search.n_counterfactuals",
     "0"),
    ({"search": {"standardize": 1}}, lambda: SearchSettings(standardize=1), "search.standardize", "1"),
    ({"vae": {"epochs": -1}}, lambda: VAE(epochs=-1), "vae.epochs", "-1"),
    ({"vae": {"learning_rate": "fast"}}, lambda: VAE(learning_rate="fast"), "vae.learning_rate", "'fast'"),
])
def test_python_users_get_the_same_error_as_scenario_files(table, make, field, shown):
    with pytest.raises(ConfigError) as from_python:
        make()
    with pytest.raises(ConfigError) as from_file:
        Scenario.from_dict(MINIMAL | table, source="s.toml")
    assert str(from_file.value) == f"s.toml: {from_python.value}"
    assert from_python.value.field == field and f"got {shown};" in str(from_python.value)


def test_model_keywords_are_checked_by_the_model_itself():
    with pytest.raises(ConfigError) as from_python:
        MODELS["mlp"](epochs=0)
    with pytest.raises(ConfigError) as from_file:
        Scenario.from_dict({**MINIMAL, "models": [{"name": "mlp", "epochs": 0}]}, source="s.toml")
    assert from_python.value.allowed == from_file.value.allowed
    assert from_file.value.field == "s.toml: models.0.epochs"
    with pytest.raises(ConfigError, match=r"models\.0\.epoch: .*did you mean 'epochs'"):
        Scenario.from_dict({**MINIMAL, "models": [{"name": "mlp", "epoch": 3}]})


def _changed(value):
    """A valid value different from a default (probabilities stay in (0, 1))."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value / 2 if 0 < value < 1 else value * 2 + 0.5


@pytest.mark.parametrize("name", list(GENERATORS))
def test_every_generator_default_is_reachable_from_a_scenario(name):
    """Each keyword of each factory (its signature is the one home of the default) can be written in a TOML
    generator table, and reaches the built spec; unset, the spec is the factory's default spec."""
    factory = GENERATORS[name]
    default_spec = factory()
    assert Scenario(**MINIMAL | {"generators": [name]}).build().generators[name] == default_spec
    for keyword, parameter in inspect.signature(factory).parameters.items():
        if parameter.default is None:  # an alias (greedy's step_size for epsilon)
            continue
        written = Scenario(**MINIMAL | {"generators": [{"name": name, keyword: parameter.default}]})
        assert next(iter(written.build().generators.values())) == default_spec, keyword
        new = _changed(parameter.default)
        spec = next(iter(Scenario(**MINIMAL | {"generators": [{"name": name, keyword: new}]}).build()
                         .generators.values()))
        assert spec == factory(**{keyword: new}) and spec != default_spec, keyword


def test_common_generator_options_have_one_home_in_the_spec():
    """gamma, the step size and the cap: GeneratorSpec's defaults, added to every search generator's keywords
    (ECCCo departs from the step size, and says so in its own signature)."""
    spec_defaults = {f.name: f.default for f in dataclasses.fields(GeneratorSpec)}
    for name in GENERATORS:
        parameters = inspect.signature(GENERATORS[name]).parameters
        if not parameters:  # the no-recourse control searches nothing
            continue
        for option in ("threshold", "max_steps"):
            assert parameters[option].default == spec_defaults[option], (name, option)
    assert inspect.signature(GENERATORS["eccco"]).parameters["step_size"].default == 0.05
    assert GENERATORS["generic"]().step_size == spec_defaults["step_size"]


def test_no_settings_module_retypes_a_numeric_default():
    """The literals the issue found repeated: the 0.5 decision threshold, lambda1 = 0.1 and mu = 0.05 appear as
    a default once (their home), not in every signature."""
    threshold = re.compile(r"threshold: float = 0\.5\b")
    lambda_cost = re.compile(r"lambda_cost: float = 0\.1\b")
    share = re.compile(r"recourse_share(: float)? = (Field\(default=)?0\.05\b")
    hits = {pattern.pattern: [] for pattern in (threshold, lambda_cost, share)}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for pattern in hits:
            hits[pattern] += [path.name] * len(re.findall(pattern, text))
    assert hits[threshold.pattern] == []
    assert hits[lambda_cost.pattern] == []
    assert hits[share.pattern] == ["config.py"]


def test_settings_values_are_checked_strictly():
    with pytest.raises(ConfigError, match="metrics.evaluate_every"):
        MetricSettings(evaluate_every=True)  # a bool is not an integer
    with pytest.raises(ConfigError, match="a finite number"):
        MetricSettings(length_scale=math.inf)
    assert MetricSettings(domain_length_scale=2).domain_length_scale == 2  # an integer is a fine number
