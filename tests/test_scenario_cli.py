"""Scenarios from TOML, the CLI, output files, and one clear error (and no output) for each bad input."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recourse_sim.cli import app
from recourse_sim.errors import ConfigError
from recourse_sim.experiments import Scenario
from recourse_sim.scenarios import embedded

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

TINY = """
name = "tiny"
rounds = 2
device = "cpu"
[data]
name = "overlapping"
n_samples = 120
[[models]]
name = "logistic_regression"
epochs = 5
[[generators]]
name = "generic"
[[generators]]
name = "gravitational"
[metrics]
evaluate_every = 1
permutations = 5
grid_points = 20
"""


def write(tmp_path: Path, text: str, name: str = "scenario.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_cli_run_writes_every_output(tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(write(tmp_path, TINY)), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"results.parquet", "results.csv", "summary.csv", "scenario.toml", "run.json",
                     "trajectories.png", "hidden_costs.csv", "hidden_costs.png", "population_logistic_regression.png"}
    parquet, csv = pd.read_parquet(out / "results.parquet"), pd.read_csv(out / "results.csv")
    assert len(parquet) == len(csv) > 0
    # The resolved scenario reproduces the run's configuration.
    assert Scenario.from_toml(out / "scenario.toml") == Scenario.from_toml(tmp_path / "scenario.toml")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging leftovers


def test_rerun_replaces_previous_outputs(tmp_path):
    """A second run into the same directory replaces the first run's outputs as a whole: the tables hold the
    second scenario's rows only (its model and its 3 rounds), its resolved scenario is written, and files only
    the first run produced (its model's population plot) are gone. Margin: exact (names, row sets)."""
    out = tmp_path / "out"
    first = write(tmp_path, TINY, "first.toml")
    second = write(tmp_path, TINY.replace("rounds = 2", "rounds = 3").replace(
        'name = "logistic_regression"\nepochs = 5', 'name = "mlp"\nhidden_sizes = [4]\nepochs = 2'), "second.toml")
    assert runner.invoke(app, ["run", str(first), "--out", str(out), "-q"]).exit_code == 0
    assert (out / "population_logistic_regression.png").exists()
    result = runner.invoke(app, ["run", str(second), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert "population_mlp.png" in names and "population_logistic_regression.png" not in names
    for frame in (pd.read_parquet(out / "results.parquet"), pd.read_csv(out / "results.csv")):
        assert set(frame["model"]) == {"mlp"}
        assert sorted(frame["round"].unique()) == [0, 1, 2, 3]
    assert Scenario.from_toml(out / "scenario.toml") == Scenario.from_toml(second)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging or retired leftovers


def test_embedded_default_matches_the_repository_copy():
    assert embedded("default").read_text() == (ROOT / "scenarios" / "default.toml").read_text()
    Scenario.from_toml(embedded("default"))


@pytest.mark.parametrize("path", sorted(path for folder in ("", "agents/", "faithful/")
                                         for path in (ROOT / "scenarios").glob(f"{folder}*.toml")),
                         ids=lambda p: p.relative_to(ROOT / "scenarios").as_posix())
def test_shipped_scenarios_validate(path):
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output


BAD = {
    "unknown generator": (TINY.replace('name = "gravitational"', 'name = "gravitatonal"'), "did you mean 'gravitational'"),
    "unknown dataset": (TINY.replace('name = "overlapping"', 'name = "overlaping"'), "did you mean 'overlapping'"),
    "unknown model": (TINY.replace('name = "logistic_regression"', 'name = "svm"'), "models.0.name: got 'svm'"),
    "negative rounds": (TINY.replace("rounds = 2", "rounds = -1"), "rounds"),
    "mu zero": (TINY.replace("rounds = 2", "rounds = 2\nrecourse_share = 0"), "recourse_share"),
    "mu above one": (TINY.replace("rounds = 2", "rounds = 2\nrecourse_share = 1.5"), "recourse_share"),
    "threshold out of range": (TINY.replace('name = "generic"', 'name = "generic"\nthreshold = 1.2'), "threshold"),
    "compliance above one": (TINY + "\n[agents]\ncompliance = 1.5\n", "agents.compliance: got 1.5"),
    "negative budget": (TINY + "\n[agents]\nbudget = -2.0\n", "agents.budget: got -2.0"),
    "unknown outcome model": (TINY + '\n[agents]\noutcome = "causal"\n', "agents.outcome: got 'causal'"),
    "missing group column": (TINY + '\n[agents]\ngroups = "income"\n', "agents.groups: got 'income'"),
    "negative lambda": (TINY.replace('name = "generic"', 'name = "generic"\nlambda_cost = -1'), "weight"),
    "unknown generator parameter": (TINY.replace('name = "generic"', 'name = "generic"\nthreshhold = 0.9'),
                                    "did you mean 'threshold'"),
    "unknown top-level key": (TINY.replace("rounds = 2", "roundz = 2"), "did you mean 'rounds'"),
    "unknown data bounds": (TINY.replace("n_samples = 120", 'n_samples = 120\nbounds = "range"'),
                            "data.bounds: got 'range'; allowed: Input should be 'schema' or 'data_range'"),
    "wrong type": (TINY.replace("rounds = 2", 'rounds = "many"'), "rounds"),
    "empty generators": (TINY.split("[[generators]]")[0] + "generators = []\n[metrics]\npermutations = 5\n", "generators"),
    "malformed toml": ("name = [unclosed", "valid TOML"),
    "duplicate labels": (TINY.replace('name = "gravitational"', 'name = "generic"'), "duplicate labels"),
    "negative vae epochs": (TINY + "[vae]\nepochs = -1\n", "vae.epochs"),
    "unknown vae key": (TINY + "[vae]\nepoch = 250\n", "did you mean 'epochs'"),
}


def test_vae_table_reaches_the_latent_generators_cache():
    """``[vae]`` sets the VAE of REVISE/CLUE; omitted, the VAE's defaults (100 epochs) apply."""
    from recourse_sim.simulation.model import RecourseDynamics

    assert Scenario.from_toml(embedded("satml/credit_default")).vae["epochs"] == 250  # the reference's real-data setting
    assert Scenario.from_toml(embedded("satml/moons")).vae["epochs"] == 100
    scenario = Scenario.from_dict(tomllib.loads(TINY + "[vae]\nepochs = 7\nlatent_dim = 2\n"))
    params = RecourseDynamics(scenario.build(), seed=0).context.vae.vae_params
    assert params["epochs"] == 7 and params["latent_dim"] == 2 and params["hidden_size"] == 32


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenarios_fail_with_one_clear_error_and_write_nothing(tmp_path, case):
    text, message = BAD[case]
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(write(tmp_path, text)), "--out", str(out), "-q"])
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_missing_scenario_file(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "an existing TOML file" in result.output
    assert not (tmp_path / "out").exists()


def test_nan_in_csv_data_is_refused(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,y\n1,2,0\n3,,1\n5,6,0\n7,8,1\n")
    text = TINY.replace('[data]\nname = "overlapping"\nn_samples = 120',
                        f'[data]\nname = "csv"\npath = "{csv}"\ntarget = "y"')
    result = runner.invoke(app, ["run", str(write(tmp_path, text)), "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 2 and "non-finite" in result.output
    assert not (tmp_path / "out").exists()


def test_output_path_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("")
    result = runner.invoke(app, ["run", str(write(tmp_path, TINY)), "--out", str(target), "-q"])
    assert result.exit_code == 2 and "existing file" in result.output


def test_failure_mid_run_leaves_no_partial_output(tmp_path, monkeypatch):
    import recourse_sim.experiments.runner as runner_module

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runner_module, "plot_trajectories", explode)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        runner_module.run_scenario(Scenario.from_toml(write(tmp_path, TINY)), out=out)
    assert not out.exists()
    # Issue 16: the finished rounds are kept in the staging directory (and nothing else is left behind).
    (staging,) = [p for p in tmp_path.iterdir() if p.name != "scenario.toml"]
    assert staging.name.startswith(".out.") and staging.name.endswith(".partial")
    assert (staging / "results.csv").exists()


def test_python_api_returns_a_dataframe():
    from recourse_sim import run_scenario

    scenario = Scenario(models=["logistic_regression"], generators=["generic"], rounds=1, device="cpu",
                        data={"n_samples": 100}, metrics={"permutations": 0, "grid_points": 10})
    frame = run_scenario(scenario).results
    assert isinstance(frame, pd.DataFrame) and set(frame["round"]) == {0, 1}


def test_list_command_shows_registries():
    result = runner.invoke(app, ["list", "generators"])
    assert result.exit_code == 0 and "gravitational" in result.output and "claproar" in result.output


def test_config_error_message_names_field_value_and_allowed():
    with pytest.raises(ConfigError) as info:
        Scenario.from_dict({"models": ["mlp"], "generators": ["generic"], "recourse_share": 2})
    assert "recourse_share" in str(info.value) and "2" in str(info.value)


def test_data_seed_fixes_the_dataset_across_scenario_seeds():
    def data(seed, data_seed=None):
        raw = {"seed": seed, "models": ["mlp"], "generators": ["generic"], "data": {"n_samples": 100}}
        if data_seed is not None:
            raw["data"]["seed"] = data_seed
        return Scenario.from_dict(raw).load_data()[0].X

    assert not (data(1) == data(2)).all()
    assert (data(1, data_seed=7) == data(2, data_seed=7)).all()


def test_the_readme_scenario_format_is_a_valid_scenario():
    """The annotated scenario in the README (every table, [agents] included) reads as a scenario."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Scenario format", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    scenario = Scenario.from_dict(tomllib.loads(block))
    assert scenario.agents.outcome == "model" and scenario.search.n_counterfactuals == 5
