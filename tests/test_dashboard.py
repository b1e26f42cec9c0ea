"""The interactive tooling: plotting helpers, search-path tracing, the dashboard's model and CLI, and the
dashboard itself driven in a real (headless) Chromium.

The browser test needs the ``viz`` extra (solara), the ``browser`` extra (playwright) and a Chromium binary
(Debian's ``chromium`` at /usr/bin/chromium, or ``$RECOURSE_SIM_CHROMIUM``); it skips, saying which is
missing, where one is not installed. It saves a screenshot under the test's tmp dir.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import typing
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from typer.testing import CliRunner

from recourse_sim import DATASETS, GENERATORS, GeneratorSpec, SimulationConfig, generate_counterfactuals
from recourse_sim.cli import app
from recourse_sim.metrics import metric_label
from recourse_sim.models import MODELS, JEMClassifier, MLPClassifier
from recourse_sim.reporting import (
    Projection,
    plot_generator_grid,
    plot_population_snapshot,
    plot_trajectory_grid,
)
from recourse_sim.reporting.style import PALETTE
from recourse_sim.training import CounterfactualTraining
from recourse_sim.viz import compare_generators, trace_search
from recourse_sim.viz.agent_controls import group_options
from recourse_sim.viz.dashboard_figures import (
    COST_METRICS,
    acted_text,
    costs_figure,
    groups_figure,
    has_groups,
    metrics_figure,
    plot_costs,
    population_figure,
)
from recourse_sim.viz.dashboard_model import DashboardDynamics, rebuild
from recourse_sim.viz.scenario_controls import (
    FAST_BATCH,
    SCENARIO_CONTROLS,
    all_generator_keywords,
    base_scenario,
    controls_for_generator,
    dashboard_scenario,
    generator_controls,
    generator_keys,
    generator_parameters,
    generator_text,
    initial_values,
    model_config,
    model_keys,
    model_params,
    model_text,
    offered_datasets,
    scenario_notes,
)

HAS_VIZ = importlib.util.find_spec("solara") is not None
needs_viz = pytest.mark.skipif(not HAS_VIZ, reason="the dashboard needs the viz extra: pip install -e '.[viz]'")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


# --------------------------------------------------------------------------------------------- plotting
def test_projection_is_identity_in_2d_and_pca_otherwise():
    X2 = np.random.default_rng(0).normal(size=(50, 2))
    p2 = Projection.fit(X2, ["a", "b"])
    assert p2.is_identity and p2.labels == ("a", "b")
    np.testing.assert_allclose(p2.transform(X2), X2)
    X5 = np.random.default_rng(1).normal(size=(200, 5)) @ np.diag([3.0, 2.0, 0.1, 0.1, 0.1])
    p5 = Projection.fit(X5)
    Z = p5.transform(X5)
    assert Z.shape == (200, 2) and "PC1" in p5.labels[0]
    # the first two components carry almost all the variance, so the lift back is close
    assert np.abs(p5.inverse_transform(Z) - X5).mean() < 0.2


def tidy_frame() -> pd.DataFrame:
    rows = []
    for dataset in ("overlapping", "moons"):
        for generator in ("generic", "claproar"):
            for rep in range(3):
                for rnd in range(0, 11, 5):
                    for metric in ("domain_mmd", "model_mmd", "f1"):
                        rows.append({"system": f"lr/{generator}/rep{rep}", "model": "lr", "generator": generator,
                                     "repetition": rep, "round": rnd, "metric": metric, "dataset": dataset,
                                     "value": rnd * 0.01 + rep * 0.001 + (generator == "generic") * 0.02})
    return pd.DataFrame(rows)


def test_trajectory_grid_rows_by_any_column_with_ci_bands(tmp_path):
    frame = tidy_frame()
    fig = plot_trajectory_grid(frame, ["domain_mmd", "model_mmd", "f1", "not_there"], row="dataset",
                               path=tmp_path / "grid.png")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 6  # 2 datasets x 3 present metrics
    assert "dataset: moons" in axes[3].get_title()
    bands = [patch for patch in axes[0].patches if isinstance(patch, Polygon)]
    assert len(bands) == 2  # one CI band per generator, around its mean line
    for band, line in zip(bands, axes[0].get_lines()):
        low, high = band.get_xy()[:, 1].min(), band.get_xy()[:, 1].max()
        assert low <= line.get_ydata().min() and line.get_ydata().max() <= high
    assert (tmp_path / "grid.png").stat().st_size > 0
    wrapped = plot_trajectory_grid(frame[frame.dataset == "moons"], ["domain_mmd", "model_mmd", "f1"], row=None,
                                   col_wrap=2, figure=Figure())
    assert sum(ax.axison for ax in wrapped.axes) == 3
    empty = plot_trajectory_grid(frame.iloc[:0], ["validity"], row=None, figure=Figure())
    assert "no data yet" in [t.get_text() for t in empty.axes[0].texts]
    assert metric_label("domain_mmd_pvalue").startswith("p-value") and metric_label("x_y") == "X y"


def test_population_snapshot_2d_and_pca(overlapping, fitted_lr, four_d, fitted_mlp_4d):
    rounds = np.full(len(overlapping.X), -1)
    rounds[:10], rounds[10:20] = 3, 1
    fig = plot_population_snapshot(overlapping.X.numpy(), overlapping.y.numpy(), fitted_lr.proba_positive,
                                   recourse_round=rounds, current_round=3, feature_names=overlapping.schema.names,
                                   figure=Figure())
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels[:3] == ["no recourse", "recourse, earlier round", "recourse, this round"]
    assert fig.axes[0].get_xlabel() == "x1"
    fig4 = plot_population_snapshot(four_d.X, four_d.y, fitted_mlp_4d.proba_positive, figure=Figure())
    assert fig4.axes[0].get_xlabel().startswith("PC1")


# ------------------------------------------------------------------------------------- paths and quality
def test_trace_search_path_equals_searches_capped_at_each_step(overlapping, fitted_lr):
    """Independent truth for the recorded path: the engine is deterministic for a seed and the state after t
    iterations does not depend on the cap, so a search capped at t ends where the recorded path is at t. (The
    recording observes the torch loop, so the capped searches run it too.)"""
    factuals = overlapping.X[fitted_lr.predict(overlapping.X) == 0][:3]
    for name in ("generic", "gravitational", "greedy"):
        recorded, result = trace_search(fitted_lr, factuals, name, overlapping, every=10)
        assert recorded.shape[1:] == (3, 5, 2)
        np.testing.assert_allclose(recorded[-1], result.counterfactuals.numpy(), atol=1e-6)
        spec = GENERATORS[name]()
        for frame, t in enumerate(range(0, 10 * (len(recorded) - 1), 10)):
            capped = generate_counterfactuals(fitted_lr, factuals, dataclasses.replace(spec, max_steps=t),
                                              overlapping, seed=0, backend="torch")
            np.testing.assert_allclose(recorded[frame], capped.counterfactuals.numpy(), atol=1e-5,
                                       err_msg=f"{name} at iteration {t}")


def test_compare_generators_covers_the_registry_and_survives_failures(overlapping, fitted_lr, tmp_path):
    factuals = overlapping.X[fitted_lr.predict(overlapping.X) == 0][:2]
    broken = ("broken", GeneratorSpec("broken", strategy="no_such_strategy"))
    comparison = compare_generators(fitted_lr, factuals, overlapping,
                                    generators=["generic", "greedy", "claproar", broken])
    assert list(comparison.table.index) == ["generic", "greedy", "claproar", "broken"]
    assert comparison.table.loc["generic", "validity"] == 1.0
    assert "no_such_strategy" in comparison.table.loc["broken", "error"]
    fig = plot_generator_grid(comparison.panels, fitted_lr.proba_positive, overlapping.X, overlapping.y, ncols=2,
                              path=tmp_path / "generators.png")
    assert (tmp_path / "generators.png").exists() and len(fig.axes) == 4
    everything = compare_generators(fitted_lr, factuals[:1], overlapping, trace=False)
    assert set(everything.table.index) == set(GENERATORS)  # new generators appear automatically


# --------------------------------------------------------------------------------- the dashboard's model
@pytest.fixture(scope="module")
def dashboard_module():
    if not HAS_VIZ:
        pytest.skip("the dashboard needs the viz extra: pip install -e '.[viz]'")
    from recourse_sim.viz import dashboard

    return dashboard


def tiny_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent("""
        name = "tiny"
        seed = 3
        rounds = 10
        device = "cpu"
        [data]
        name = "overlapping"
        n_samples = 200
        [[models]]
        name = "logistic_regression"
        epochs = 20
        [[generators]]
        name = "gravitational"
        lambda_extcost = 2.0
        [metrics]
        grid_points = 100
    """))
    return path


def test_dashboard_model_steps_and_draws(tmp_path):
    params = model_params(base_scenario(tiny_scenario(tmp_path)))
    values = initial_values(params)
    assert values["generator"] == "gravitational" and values["lambda_extcost"] == 2.0 and values["rounds"] == 10
    assert params["generator"]["values"][0] == "gravitational" and set(params["generator"]["values"]) == set(GENERATORS)
    model = DashboardDynamics(**(values | {"scenario": str(tiny_scenario(tmp_path))}))
    assert model.error is None and model.round == 0
    model.step()
    model.step()
    assert model.round == 2 and model.steps == 2
    frame = model.results()
    assert {"domain_mmd", "model_mmd", "accuracy", "validity"} <= set(frame["metric"])
    assert sorted(frame[frame.metric == "model_mmd"]["round"].unique()) == [0, 1, 2]  # every round
    assert "lambda_extcost = 2 · n_neighbours = 50" in model.settings_line()
    assert len(population_figure(model).axes) == 2
    assert len(metrics_figure(model).axes) == 4


def test_dashboard_falls_back_when_the_controls_cannot_be_built():
    model = DashboardDynamics(threshold=1.0, n_samples=100, rounds=2, fast_retraining=True)
    assert "could not build" in model.error and "generic generator instead" in model.error
    assert model.controls["threshold"] == 0.5 and model.system.generator.startswith("generic")


def numeric_defaults(name: str) -> dict:
    """Generator ``name``'s numeric keyword defaults, read from its factory's signature (their one home)."""
    return {keyword: p.default for keyword, p in inspect.signature(GENERATORS[name]).parameters.items()
            if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)}


def test_every_generator_keyword_default_is_reachable_from_the_dashboard():
    """For every registered generator, every numeric keyword of its factory has a control that starts at the
    signature's default, and both ends of the control's range reach the generator the scenario builds."""
    base = base_scenario()
    start = initial_values(model_params(base))
    start.pop("scenario")
    assert numeric_defaults("eccco").keys() >= {"lambda_energy", "lambda_set_size", "coverage", "temperature"}
    assert "n_neighbours" in numeric_defaults("gravitational")
    for name in GENERATORS:
        defaults = numeric_defaults(name)
        offered = generator_controls(base, name)  # the sliders the page shows for it
        assert list(offered) == list(defaults), name
        controls = controls_for_generator(base, start, name)  # what picking it does
        for keyword, default in defaults.items():
            spec = offered[keyword]
            assert controls[keyword] == default and spec["value"] == default, (name, keyword)
            assert spec["type"] == ("SliderInt" if isinstance(default, int) else "SliderFloat"), (name, keyword)
            assert spec["min"] <= default <= spec["max"] and spec["step"] > 0, (name, keyword)
            for value in {spec["min"], spec["max"]} - {default}:
                scenario = dashboard_scenario(base, **(controls | {keyword: value}))
                (entry,) = scenario.generators
                # every numeric keyword is passed, each at its control's value
                assert entry.name == name and entry.params == defaults | {keyword: value}, (name, keyword)
                built = entry.build()
                assert built == GENERATORS[name](**{keyword: value}), (name, keyword, value)
                assert built != GENERATORS[name](), (name, keyword, value)  # the value makes a difference
        assert generator_parameters(name, controls) == defaults
    # spot checks against the spec's fields
    eccco = dashboard_scenario(base, **(controls_for_generator(base, start, "eccco")
                                        | {"lambda_set_size": 0.3, "threshold": 0.7}))
    spec = eccco.generators[0].build()
    assert spec.threshold == 0.7 and [weight for weight, _ in spec.extcosts] == [0.5, 0.3]
    # no generator keyword shadows one of the dashboard's own controls; a typo is refused
    assert not all_generator_keywords() & set(SCENARIO_CONTROLS)
    with pytest.raises(TypeError, match="lamda_cost"):
        dashboard_scenario(base, **(start | {"lamda_cost": 0.2}))


def test_the_model_takes_any_generator_keyword_and_shows_every_one_it_passes():
    model = DashboardDynamics(generator="eccco", lambda_set_size=0.3, n_samples=100, rounds=1,
                              fast_retraining=True)
    assert model.error is None and model.controls["lambda_set_size"] == 0.3
    (spec,) = model.config.generators.values()
    assert spec == GENERATORS["eccco"](**(numeric_defaults("eccco") | {"lambda_set_size": 0.3}))
    line = model.settings_line()
    for keyword, default in numeric_defaults("eccco").items():
        shown = {"threshold": "γ", "lambda_cost": "λ₁"}.get(keyword, keyword)
        assert f"{shown} = {0.3 if keyword == 'lambda_set_size' else default:g}" in line, (keyword, line)
    # picking another generator loads its own defaults and drops ECCCo's keywords; its own keywords apply
    gravitational = rebuild(model, generator="gravitational")
    assert "lambda_set_size" not in gravitational.controls and gravitational.controls["n_neighbours"] == 50
    moved = rebuild(gravitational, n_neighbours=7)
    (spec,) = moved.config.generators.values()
    assert spec.extcosts[0][1].n_neighbours == 7 and "n_neighbours = 7" in moved.settings_line()


def test_the_dashboard_starts_from_the_settings_homes():
    """No default is re-typed: dynamics from the embedded default scenario and SimulationConfig, generator
    values from the factory's signature."""
    from recourse_sim.experiments import Scenario
    from recourse_sim.scenarios import embedded

    default = Scenario.from_toml(embedded("default"))
    rounds = next(f.default for f in dataclasses.fields(SimulationConfig) if f.name == "rounds")
    model = DashboardDynamics(n_samples=100, fast_retraining=True)
    c = model.controls
    assert (c["rounds"], c["recourse_share"], c["seed"]) == (rounds, default.recourse_share, default.seed)
    assert (c["model"], c["generator"]) == (default.models[0].name, default.generators[0].name)
    assert {k: c[k] for k in numeric_defaults("generic")} == numeric_defaults("generic")


def test_dashboard_on_higher_dimensional_data_uses_pca():
    model = DashboardDynamics(dataset="california_housing", n_samples=200, rounds=3, seed=0,
                              fast_retraining=True)
    assert not model.projection.is_identity
    model.step()
    fig = population_figure(model)
    assert fig.axes[0].get_xlabel().startswith("PC1")


# ------------------------------------------------------------------------------------------- side by side
def labelled_panels(figure) -> dict[str, list[str]]:
    """``panel title -> labels of its lines`` of a trajectory figure (its visible panels)."""
    return {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in figure.axes if ax.axison}


def label_points(ax, label: str) -> np.ndarray:
    """The 2-D positions a population panel draws for ``label`` (``"y = 1"``...)."""
    (points,) = [c for c in ax.collections if c.get_label() == label]
    return np.asarray(points.get_offsets())


def test_two_generators_step_together_on_the_same_people(tmp_path):
    """Generic next to gravitational: one population replicated per system, the same recipients each round, each
    system moving them its own way; a panel and a trajectory line per system."""
    model = DashboardDynamics(scenario=str(tiny_scenario(tmp_path)), compare_generators=["generic"],
                              fast_retraining=True)
    assert model.error is None and [s.generator for s in model.systems] == ["gravitational", "generic"]
    start = model.population.X.clone()
    assert torch.equal(start[0], model.config.train.X) and torch.equal(start[1], start[0])
    for round_ in (1, 2):
        model.step()
        frame = model.results()
        n_recourse = frame[(frame.metric == "n_recourse") & (frame["round"] == round_)].set_index("generator")["value"]
        assert n_recourse["gravitational"] == n_recourse["generic"] > 0, round_
        recipients = model.population.recourse_round == round_
        assert torch.equal(recipients[0], recipients[1]), round_  # the same individuals, in both systems
        assert int(recipients[0].sum()) == n_recourse["generic"], round_
    X = model.population.X
    ever = (model.population.recourse_round >= 0)[0]
    assert torch.equal(X[0][~ever], X[1][~ever]) and torch.equal(X[0][~ever], start[0][~ever])  # nobody else moved
    assert not torch.equal(X[0][ever], start[0][ever]) and not torch.equal(X[1][ever], start[1][ever])
    assert (X[0][ever] - X[1][ever]).abs().max() > 0.1  # the generators move the recipients differently
    assert model.title().endswith("gravitational vs generic")
    assert "max_steps = 100 · vs generic (defaults) · μ = 0.05" in model.settings_line()
    # one population panel per system, each drawing its own system's population
    figure = population_figure(model)
    assert [ax.get_title() for ax in figure.axes] == ["gravitational", "generic"]
    for i, ax in enumerate(figure.axes):
        positives = model.population.y[i] == 1
        np.testing.assert_allclose(label_points(ax, "y = 1"), X[i][positives].numpy(), atol=1e-6)
    # one trajectory line per system, through that system's values
    panels = labelled_panels(metrics_figure(model))
    assert panels[metric_label("domain_mmd")] == ["gravitational", "generic"]
    domain = frame[frame.metric == "domain_mmd"]
    for line in metrics_figure(model).axes[0].get_lines():
        expected = domain[domain.generator == line.get_label()].sort_values("round")["value"]
        np.testing.assert_allclose(line.get_ydata(), expected.to_numpy(), rtol=1e-6)
    assert not np.allclose(*[line.get_ydata() for line in metrics_figure(model).axes[0].get_lines()])


def test_adding_none_gives_a_control_whose_population_never_moves(tmp_path):
    model = DashboardDynamics(scenario=str(tiny_scenario(tmp_path)), compare_generators=["generic"],
                              fast_retraining=True)
    model = rebuild(model, compare_generators=["generic", "none"])  # what the picker does
    assert model.round == 0 and [s.generator for s in model.systems] == ["gravitational", "generic", "none"]
    train = model.config.train
    for _ in range(3):
        model.step()
    pop = model.population
    assert torch.equal(pop.X[2], train.X) and torch.equal(pop.y[2], train.y)  # the control: nobody moved
    assert (pop.recourse_round[2] == -1).all() and (pop.recourse_round[1] >= 0).sum() > 0
    assert not torch.equal(pop.X[1], train.X)
    frame = model.results()
    n_recourse = frame[frame.metric == "n_recourse"].pivot(index="round", columns="generator", values="value")
    assert (n_recourse["none"] == n_recourse["generic"]).all() and (n_recourse["none"] > 0).all()  # still chosen
    assert frame[(frame.metric == "validity") & (frame.generator == "none")]["value"].isna().all()
    assert model.title().endswith("gravitational vs generic vs none (no recourse, control)")
    assert "vs generic (defaults) · vs none (no recourse, control) · μ" in model.settings_line()
    # three panels wrap onto a second row; the control's panel says what it is
    figure = population_figure(model)
    assert [ax.get_title() for ax in figure.axes] == ["gravitational", "generic", "none (no recourse, control)"]
    assert [ax.get_subplotspec().rowspan.start for ax in figure.axes] == [0, 0, 1]
    # the control's line: no recourse quality (validity, cost), but its shift metrics
    panels = labelled_panels(costs_figure(model))
    assert panels[metric_label("validity")] == ["gravitational", "generic"]
    assert panels[metric_label("recourse_cost")] == ["gravitational", "generic"]
    assert labelled_panels(metrics_figure(model))[metric_label("model_mmd")] == \
        ["gravitational", "generic", "none"]


def test_the_hidden_costs_figure_shows_the_cost_metrics_that_exist():
    rows = [{"generator": g, "round": r, "metric": m, "value": v}
            for g in ("generic", "none") for r in (1, 2)
            for m, v in (("lender_loss", 0.1 * r), ("validity", 1.0 if g == "generic" else np.nan), ("f1", 0.9))]
    frame = pd.DataFrame(rows).assign(system=lambda f: f.generator, model="lr", repetition=0)
    panels = labelled_panels(plot_costs(frame, "generator", legend=True))
    # in COST_METRICS' order, only those present; a metric outside COST_METRICS (f1) is not a cost
    assert list(panels) == [metric_label("lender_loss"), metric_label("validity")]
    assert panels[metric_label("lender_loss")] == ["generic", "none"]
    assert panels[metric_label("validity")] == ["generic"]
    assert {"recourse_cost", "validity", "collateral_rejections", "collateral_approvals", "lender_loss",
            "truth_accuracy", "approval_rate", "acted_share"} <= set(COST_METRICS)
    nothing = plot_costs(frame[frame.metric == "f1"], "generator", legend=False)
    assert not nothing.axes and "Nothing measured yet" in nothing.texts[0].get_text()
    assert nothing._suptitle.get_text() == "Hidden costs of recourse"


def test_two_models_side_by_side_are_named_model_slash_generator(tmp_path):
    model = DashboardDynamics(scenario=str(tiny_scenario(tmp_path)),
                              compare_models=["logistic_regression", "mlp"], rounds=1,
                              fast_retraining=True)
    assert model.error is None and model.controls["compare_models"] == ["mlp"]  # the main model runs anyway
    assert model.system_names() == ["logistic_regression / gravitational", "mlp / gravitational"]
    assert "logistic_regression vs mlp · gravitational" in model.title()
    assert "models: logistic_regression vs mlp" in model.settings_line()
    model.step()
    recipients = model.population.recourse_round == 1
    assert recipients[0].any() and torch.equal(recipients[0], recipients[1])  # paired across models too
    figure = metrics_figure(model)
    assert labelled_panels(figure)[metric_label("accuracy")] == model.system_names()
    assert figure.legends[0].get_title().get_text() == "model / generator"


def test_a_comparison_that_cannot_be_built_leaves_the_main_system_running(tmp_path):
    model = DashboardDynamics(scenario=str(tiny_scenario(tmp_path)),
                              compare_generators=["no_such_generator"], rounds=1)
    assert "no_such_generator" in model.error and "without the comparison systems" in model.error
    assert model.controls["compare_generators"] == [] and len(model.systems) == 1
    assert model.controls["generator"] == "gravitational" and model.controls["lambda_extcost"] == 2.0


# ------------------------------------------------------------------------------ the JEM and Counterfactual Training
def models_scenario(tmp_path: Path) -> Path:
    """The fast tiny scenario with a small MLP and a small JEM listed after its logistic regression."""
    path = fast_scenario(tmp_path)
    path.write_text(path.read_text() + textwrap.dedent("""
        [[models]]
        name = "mlp"
        hidden_sizes = [16]
        epochs = 10
        batch_size = 16
        retrain_epochs = 1
        [[models]]
        name = "jem"
        hidden_sizes = [16, 16]
        epochs = 3
        sgld_steps = 5
        retrain_epochs = 1
    """))
    return path


def test_the_model_pickers_offer_the_jem_and_counterfactual_training():
    base = base_scenario()
    params = model_params(base)
    start = {k: v for k, v in initial_values(params).items() if k != "scenario"}
    offered = params["model"]["values"]
    assert offered == params["compare_models"]["values"]
    assert offered[:len(MODELS)] == list(MODELS) and "jem" in offered  # every registered model, the JEM included
    trained_with_ct = offered[len(MODELS):]
    assert "mlp+ct" in trained_with_ct and "jem+ct" not in trained_with_ct  # CT trains the package's networks only
    for key in trained_with_ct:  # each is the scenario entry {name = ..., training = "ct"} and builds CT
        (entry,) = dashboard_scenario(base, **(start | {"model": key})).models
        assert entry.key == key and entry.training == "ct", key
        assert isinstance(entry.build("cpu"), CounterfactualTraining), key
    (jem,) = dashboard_scenario(base, **(start | {"model": "jem"})).models
    assert jem.key == "jem" and isinstance(jem.build("cpu"), JEMClassifier)
    assert model_text("mlp+ct") == "mlp+ct (Counterfactual Training)"
    assert model_text("jem") == "jem"


def test_a_jem_steps_in_the_dashboard(tmp_path):
    """The JEM runs at the scenario's (small) settings: picking a model uses the scenario's entry of it."""
    model = DashboardDynamics(scenario=str(models_scenario(tmp_path)), model="jem", rounds=2,
                              fast_retraining=True)
    assert model.error is None and list(model.config.models) == ["jem"]
    jem = model.config.models["jem"]
    assert isinstance(jem, JEMClassifier) and (jem.epochs, jem.sgld_steps) == (3, 5)
    assert jem.retrain_batch_size == FAST_BATCH
    model.step()
    model.step()
    assert model.error is None and model.round == 2
    frame = model.results()
    assert sorted(frame[frame.metric == "model_mmd"]["round"].unique()) == [0, 1, 2]
    assert (frame[(frame.metric == "n_recourse") & (frame["round"] > 0)]["value"] > 0).all()
    assert frame[frame.metric == "validity"]["value"].notna().all()
    assert len(population_figure(model).axes) == 2


def test_counterfactual_training_reaches_the_simulation(tmp_path):
    """mlp+ct next to mlp: the scenario's MLP (its architecture and epochs), once trained conventionally and once
    with Counterfactual Training, on the same people with the same recipients."""
    model = DashboardDynamics(scenario=str(models_scenario(tmp_path)), model="mlp",
                              compare_models=["mlp+ct"], rounds=1, fast_retraining=True)
    assert model.error is None
    assert model.system_names() == ["mlp / gravitational", "mlp+ct / gravitational"]
    assert "models: mlp vs mlp+ct" in model.settings_line()
    plain, ct = model.config.models["mlp"], model.config.models["mlp+ct"]
    assert isinstance(plain, MLPClassifier) and not isinstance(plain, CounterfactualTraining)
    assert isinstance(ct, CounterfactualTraining) and ct.objective == "full" and isinstance(ct.model, MLPClassifier)
    assert ct.model.hidden_sizes == plain.hidden_sizes == (16,) and ct.model.epochs == plain.epochs == 10
    assert ct.model.retrain_batch_size == plain.retrain_batch_size == FAST_BATCH
    X = model.config.train.X
    assert np.abs(np.asarray(model.scorer(0)(X)) - np.asarray(model.scorer(1)(X))).max() > 1e-3  # trained otherwise
    model.step()
    recipients = model.population.recourse_round == 1
    assert model.error is None and recipients[0].any() and torch.equal(recipients[0], recipients[1])
    # picked as the main model, it runs alone under its key
    alone = rebuild(model, model="mlp+ct", compare_models=[])
    assert alone.error is None and list(alone.config.models) == ["mlp+ct"] and alone.system.model == "mlp+ct"
    assert isinstance(alone.config.models["mlp+ct"], CounterfactualTraining)


def test_a_scenario_trained_with_ct_starts_the_picker_at_its_key(tmp_path):
    path = tmp_path / "ct.toml"
    path.write_text(tiny_scenario(tmp_path).read_text().replace(
        'name = "logistic_regression"\nepochs = 20', 'name = "mlp"\ntraining = "ct"\nhidden_sizes = [8]\nepochs = 3'))
    base = base_scenario(path)
    assert base.models[0].key == "mlp+ct"
    assert initial_values(model_params(base))["model"] == "mlp+ct"
    raw = base.model_dump(mode="json", exclude_none=True)
    assert model_config(raw, "mlp+ct", False) == raw["models"][0]
    plain = model_config(raw, "mlp", False)  # the same MLP, trained conventionally
    assert plain == {k: v for k, v in raw["models"][0].items() if k != "training"} and plain["epochs"] == 3


# ------------------------------------------------------------------------------------------------ the agents
def agents_scenario(tmp_path: Path, agents: str) -> Path:
    """The tiny scenario with an ``[agents]`` table."""
    path = tiny_scenario(tmp_path)
    path.write_text(path.read_text() + "[agents]\n" + textwrap.dedent(agents))
    return path


def test_the_agent_controls_start_at_agent_settings_defaults():
    """Without a scenario file every agent control starts at AgentSettings' own default (read here from the
    dataclass, not re-typed: changing a default there moves the control with it), the pickers offer what the
    fields' Literal types allow, and the run is the reference protocol: nothing about agents in the settings."""
    from recourse_sim.simulation import agents

    defaults = agents.AgentSettings()
    params = model_params(base_scenario())
    values = initial_values(params)
    for name in ("outcome", "choice", "compliance", "cost_aversion", "move_fraction", "over_budget"):
        assert values[name] == getattr(defaults, name), name
        assert params[name]["agents"], name
    assert values["budget_on"] is (defaults.budget is not None)
    assert values["groups"] == (defaults.groups or "none")
    for name in ("compliance", "cost_aversion", "move_fraction"):
        assert params[name]["min"] <= values[name] <= params[name]["max"], name
    assert (params["compliance"]["min"], params["compliance"]["max"]) == (0.0, 1.0)
    assert (params["move_fraction"]["min"], params["move_fraction"]["max"]) == (0.1, 1.0)
    for name, kind in (("outcome", agents.Outcome), ("choice", agents.Choice), ("over_budget", agents.OverBudget)):
        assert tuple(params[name]["options"]) == typing.get_args(kind), name
    model = DashboardDynamics(**(values | {"n_samples": 100, "rounds": 1, "fast_retraining": True}))
    assert model.error is None and model.scenario.agents == defaults
    assert "agents" not in model.settings_line()
    # an option that differs is named, and only that one
    cheapest = rebuild(model, choice="cheapest")
    assert cheapest.scenario.agents == dataclasses.replace(defaults, choice="cheapest")
    assert cheapest.settings_line().endswith("· agents: choice = cheapest")


def test_a_scenario_agents_table_starts_the_controls_and_a_distribution_is_kept(dashboard_module, tmp_path):
    path = agents_scenario(tmp_path, """
        choice = "cheapest"
        cost_aversion = 0.5
        compliance = {distribution = "beta", mean = 0.6, concentration = 4}
        budget = 3.0
        over_budget = "partial"
    """)
    model = DashboardDynamics(scenario=str(path), rounds=1, fast_retraining=True)
    c = model.controls
    assert model.error is None
    assert (c["choice"], c["cost_aversion"], c["budget_on"], c["budget"], c["over_budget"]) == \
        ("cheapest", 0.5, True, 3.0, "partial")
    table = {"distribution": "beta", "mean": 0.6, "concentration": 4}
    assert c["compliance"] is None and model.scenario.agents.compliance == table  # kept, not flattened
    line = model.settings_line()
    assert "compliance = beta(mean 0.6, concentration 4) from the scenario (its slider replaces it)" in line
    assert "choice = cheapest" in line and "budget = 3" in line and "over_budget = partial" in line
    # the slider sits at the distribution's mean and says what it stands for
    value, note = dashboard_module.trait_slider(model, "compliance")
    assert value == 0.6 and "beta" in note
    # another control leaves the table alone; moving its own slider replaces it
    moved = rebuild(model, move_fraction=0.5)
    assert moved.scenario.agents.compliance == table and moved.scenario.agents.move_fraction == 0.5
    replaced = rebuild(moved, compliance=0.3)
    assert replaced.scenario.agents.compliance == 0.3 and "beta" not in replaced.settings_line()
    assert "compliance = 0.3" in replaced.settings_line()
    assert rebuild(replaced, budget_on=False).scenario.agents.budget is None


def test_the_agent_controls_reach_the_simulation():
    """Compliance 0: recipients are chosen but nobody moves; half the way: the movers' share is 0.5; outcome
    "unchanged": the recorded labels never change although people move (and do change under the paper's rule)."""
    common = {"n_samples": 200, "rounds": 3, "fast_retraining": True}
    nobody = DashboardDynamics(compliance=0.0, **common)
    for _ in range(2):
        nobody.step()
    frame = nobody.results()
    train = nobody.config.train
    assert frame[frame.metric == "n_recourse"]["value"].min() > 0  # recipients were chosen...
    assert torch.equal(nobody.population.X[0], train.X) and (nobody.population.recourse_round == -1).all()
    assert (frame[frame.metric == "acted_share"]["value"] == 0).all()  # ...and none acted
    assert acted_text(nobody) == "Round 2: recipients who acted on their recourse: generic 0%"

    half = DashboardDynamics(move_fraction=0.5, **common)
    half.step()
    frame = half.results()
    assert frame[frame.metric == "move_fraction"]["value"].tolist() == [0.5]

    labels = {}
    for outcome in ("unchanged", "model"):
        model = DashboardDynamics(outcome=outcome, **common)
        for _ in range(3):
            model.step()
        assert (model.population.recourse_round >= 0).any() and not torch.equal(model.population.X[0], train.X)
        labels[outcome] = model.population.y[0]
    assert torch.equal(labels["unchanged"], train.y)
    assert not torch.equal(labels["model"], train.y)


def test_groups_are_reported_and_drawn_per_system_and_group():
    model = DashboardDynamics(groups="random", compare_generators=["none"], n_samples=200,
                              rounds=3, fast_retraining=True)
    assert model.error is None and has_groups(model)
    assert "agents: groups = random" in model.settings_line()
    for _ in range(2):
        model.step()
    frame = model.results()
    assert acted_text(model) == ""  # groups alone change nobody's behaviour: no acted share
    for metric in ("approval_rate", "validity"):
        for group in ("group_a", "group_b"):
            rows = frame[frame.metric == f"{metric}[{group}]"]
            assert sorted(rows["round"].unique()) == [1, 2], (metric, group)
    panels = labelled_panels(groups_figure(model))
    assert panels[metric_label("approval_rate")] == ["generic · group_a", "none · group_a", "generic · group_b",
                                                      "none · group_b"]
    assert panels[metric_label("validity")] == ["generic · group_a", "generic · group_b"]  # the control has none
    # each line runs through its system's values for its group
    axes = {ax.get_title(): ax for ax in groups_figure(model).axes if ax.axison}
    for line in axes[metric_label("approval_rate")].get_lines():
        generator, group = line.get_label().split(" · ")
        expected = frame[(frame.metric == f"approval_rate[{group}]") & (frame.generator == generator)]
        np.testing.assert_allclose(line.get_ydata(), expected.sort_values("round")["value"], rtol=1e-6)
    # one system: a line per group, named by the group
    alone = rebuild(model, compare_generators=[])
    alone.step()
    assert labelled_panels(groups_figure(alone))[metric_label("approval_rate")] == \
        ["group_a", "group_b"]
    assert not has_groups(rebuild(alone, groups="none"))


def test_the_groups_picker_offers_the_datas_attributes():
    from recourse_sim.simulation.agents import AgentSettings

    rng = np.random.default_rng(0)
    two_d = list(group_options(DATASETS["overlapping"](100, rng), AgentSettings()))
    assert two_d == ["none", "random", "x1", "x2"]
    credit = group_options(DATASETS["credit_default"](200, rng), AgentSettings())
    assert {"SEX", "EDUCATION", "MARRIAGE"} <= set(credit) and not any("_" in key for key in credit)
    model = DashboardDynamics(groups="x1", n_samples=100, rounds=1, fast_retraining=True)
    assert model.error is None and len(model.people.group_names) == 2
    assert model.people.group_names[0].startswith("x1<")
    # a grouping by the data's features does not carry over to other data; a random split does
    assert rebuild(model, dataset="moons").controls["groups"] == "none"
    random = rebuild(model, groups="random")
    assert rebuild(random, dataset="moons").controls["groups"] == "random"


def test_a_bad_agent_combination_falls_back_and_says_why(tmp_path):
    path = agents_scenario(tmp_path, 'truth = "none"\n')
    model = DashboardDynamics(scenario=str(path), outcome="truth", compare_generators=["generic"],
                              rounds=1, fast_retraining=True)
    assert "could not build" in model.error and "agents.truth" in model.error
    assert "agent settings the page started with" in model.error
    assert model.controls["outcome"] == "model" and len(model.systems) == 2  # the comparison stays
    model.step()
    assert model.error.startswith("could not build") and model.round == 1
    again = rebuild(model, outcome="truth")  # what the picker does
    assert "agents.truth" in again.error and again.controls["outcome"] == "model"


def test_cli_dashboard_help_and_bad_scenario(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0 and "--port" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('rounds = "many"\nmodels = ["mlp"]\ngenerators = ["generic"]\n')
    result = runner.invoke(app, ["dashboard", str(bad)])
    assert result.exit_code == 2


# ------------------------------------------------------------------------------- the page, without a browser
def render_page(dashboard_module, scenario_path: Path):
    """The dashboard page rendered into widgets (no server, no browser); returns (render context, model)."""
    import solara

    params, first = dashboard_module.initial_state(str(scenario_path))
    box, rc = solara.render(solara.AppLayout(children=[dashboard_module.Dashboard(params, first)]),
                            handle_error=False)
    return rc


def page_text(rc, css_class: str) -> str:
    import ipyvuetify as v

    return " ".join(str(c) for w in rc.find(v.Html, class_=css_class).widgets for c in w.children)


def settle(rc, done, timeout: float = 120.0) -> None:
    """Wait until ``done()`` holds (the play loop renders from its own thread, so a page catches up with a click
    a little later on a busy machine); the caller asserts the outcome."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)


def fast_scenario(tmp_path: Path) -> Path:
    path = tiny_scenario(tmp_path)
    path.write_text(path.read_text().replace("rounds = 10", "rounds = 3").replace("epochs = 20", "epochs = 5"))
    return path


def test_a_changed_control_applies_at_once_and_the_page_shows_what_runs(dashboard_module, tmp_path):
    import ipyvuetify as v

    rc = render_page(dashboard_module, fast_scenario(tmp_path))
    try:
        assert "gravitational" in page_text(rc, "recourse-settings")
        rc.find(v.Btn, children=["Step"]).widget.click()
        assert page_text(rc, "recourse-status") == "Round 1 of 3 (running)"
        # the user picks ClaPROAR: it runs from round 0 at once (no Reset), and the settings line says so
        rc.find(v.Select, label="Generator").widget.v_model = "claproar"
        assert page_text(rc, "recourse-settings").startswith("claproar · γ = 0.5")
        assert page_text(rc, "recourse-status") == "Round 0 of 3 (running)"
        # a slider applies when released; while dragged its label says the value is not applied yet
        gamma = rc.find(v.Slider, label="γ: decision threshold = 0.50").widget
        gamma.v_model = 0.7
        assert rc.find(v.Slider, label="γ: decision threshold = 0.70 (release to apply)").widget is gamma
        assert "γ = 0.5 " in page_text(rc, "recourse-settings")
        gamma.fire_event("change", 0.7)
        assert "γ = 0.7 " in page_text(rc, "recourse-settings")
        assert rc.find(v.Slider, label="γ: decision threshold = 0.70").widget.v_model == 0.7
        # ECCCo: its own sliders appear at its defaults, and its set-size weight applies at once
        rc.find(v.Select, label="Generator").widget.v_model = "eccco"
        labels = [w.label for w in rc.find(v.Slider).widgets]
        assert {"lambda_energy = 0.50", "lambda_set_size = 0.10", "coverage = 0.95",
                "temperature = 0.10"} <= set(labels)
        assert not any(label.startswith("lambda_extcost") for label in labels)
        rc.find(v.Slider, label="lambda_set_size = 0.10").widget.fire_event("change", 0.3)
        assert "lambda_set_size = 0.3 · coverage = 0.95" in page_text(rc, "recourse-settings")
        assert rc.find(v.Slider, label="lambda_set_size = 0.30").widget.v_model == 0.3
        # the no-recourse control: offered under a name that says what it is; it has no sliders of its own
        generator = rc.find(v.Select, label="Generator").widget
        assert "none (no recourse, control)" in generator.items
        generator.v_model = "none (no recourse, control)"
        assert page_text(rc, "recourse-settings").startswith("none (no recourse, control) · μ = 0.05")
        labels = [w.label for w in rc.find(v.Slider).widgets]
        assert not any(label.startswith(("γ", "λ", "lambda", "step_size")) for label in labels)
        assert "has no settings of its own" in page_text(rc, "recourse-no-keywords")
    finally:
        rc.close()


def test_the_comparison_pickers_add_systems_at_once(dashboard_module, tmp_path):
    import ipyvuetify as v

    rc = render_page(dashboard_module, fast_scenario(tmp_path))
    try:
        generators = rc.find(v.Select, label="Compare with generators").widget
        assert {"text": "none (no recourse, control)", "value": "none"} in generators.items
        assert {item["value"] for item in generators.items} == set(GENERATORS)
        models = rc.find(v.Select, label="Compare with models").widget
        assert [item["value"] for item in models.items] == [m for m in model_keys()
                                                            if m != "logistic_regression"]
        assert {"text": "mlp+ct (Counterfactual Training)", "value": "mlp+ct"} in models.items
        assert "same people" in page_text(rc, "recourse-compare-note")
        rc.find(v.Btn, children=["Step"]).widget.click()
        generators.v_model = ["generic", "none"]  # applies at once: a fresh run, every system named
        assert page_text(rc, "recourse-status") == "Round 0 of 3 (running)"
        assert "· vs generic (defaults) · vs none (no recourse, control) · μ" in page_text(rc, "recourse-settings")
        assert rc.find(v.Select, label="Compare with generators").widget.v_model == ["generic", "none"]
        rc.find(v.Btn, children=["Step"]).widget.click()
        assert page_text(rc, "recourse-status") == "Round 1 of 3 (running)"
        rc.find(v.Select, label="Compare with models").widget.v_model = ["mlp"]
        assert "models: logistic_regression vs mlp" in page_text(rc, "recourse-settings")
        rc.find(v.Select, label="Compare with generators").widget.v_model = []
        rc.find(v.Select, label="Compare with models").widget.v_model = []
        assert " vs " not in page_text(rc, "recourse-settings")  # back to one system
    finally:
        rc.close()


def test_the_model_picker_offers_the_jem_and_runs_a_ct_trained_model_at_once(dashboard_module, tmp_path):
    import ipyvuetify as v

    rc = render_page(dashboard_module, models_scenario(tmp_path))
    try:
        picker = rc.find(v.Select, label="Model").widget
        assert {"text": "jem", "value": "jem"} in picker.items
        assert {"text": "mlp+ct (Counterfactual Training)", "value": "mlp+ct"} in picker.items
        rc.find(v.Btn, children=["Step"]).widget.click()
        picker.v_model = "mlp+ct"  # applies at once: a fresh run of the scenario's MLP trained with CT
        assert rc.find(v.Select, label="Model").widget.v_model == "mlp+ct"
        assert page_text(rc, "recourse-status") == "Round 0 of 3 (running)"
        rc.find(v.Btn, children=["Step"]).widget.click()
        assert page_text(rc, "recourse-status") == "Round 1 of 3 (running)"
        assert rc.find(v.Alert, class_="recourse-error").widgets == []
    finally:
        rc.close()


def test_the_agents_card_applies_each_control_at_once(dashboard_module, tmp_path):
    import ipyvuetify as v
    import ipywidgets

    rc = render_page(dashboard_module, fast_scenario(tmp_path))
    try:
        assert "agents" not in page_text(rc, "recourse-settings")  # the reference protocol
        outcome = rc.find(v.Select, label="Outcome of a move").widget
        assert [item["value"] for item in outcome.items] == ["model", "truth", "unchanged"]
        outcome.v_model = "unchanged"
        assert page_text(rc, "recourse-settings").endswith("agents: outcome = unchanged")
        rc.find(v.Slider, label="Compliance: chance of acting = 1.00").widget.fire_event("change", 0.0)
        assert "agents: outcome = unchanged, compliance = 0" in page_text(rc, "recourse-settings")
        rc.find(v.Btn, children=["Step"]).widget.click()
        assert page_text(rc, "recourse-acted") == "Round 1: recipients who acted on their recourse: gravitational 0%"
        # the budget: its amount and rule appear once switched on
        assert not [w for w in rc.find(v.Slider).widgets if w.label.startswith("Budget")]
        rc.find(v.Switch, label="A budget per person").widget.v_model = True
        assert "budget = 1" in page_text(rc, "recourse-settings")
        rc.find(v.Select, label="Over budget").widget.v_model = "partial"
        assert "over_budget = partial" in page_text(rc, "recourse-settings")
        assert rc.find(v.Slider, label="Budget (cost units: SDs moved) = 1.0").widget.max == 10.0
        # groups: the 2-D data's features are offered; a grouping adds the per-group figure
        groups = rc.find(v.Select, label="Groups (metrics per group)").widget
        assert [item["value"] for item in groups.items] == ["none", "random", "x1", "x2"]
        figures = len(rc.find(ipywidgets.Image).widgets)  # population, trajectories, hidden costs
        groups.v_model = "x1"
        assert "groups = x1" in page_text(rc, "recourse-settings")
        assert page_text(rc, "recourse-status") == "Round 0 of 3 (running)"
        assert len(rc.find(ipywidgets.Image).widgets) == figures + 1  # and recourse by group
        groups = rc.find(v.Select, label="Groups (metrics per group)").widget
        assert groups.v_model == "x1" and [item["value"] for item in groups.items] == ["none", "random", "x1", "x2"]
    finally:
        rc.close()


def test_play_runs_to_the_end_and_reset_restarts(dashboard_module, tmp_path):
    import ipyvuetify as v

    rc = render_page(dashboard_module, fast_scenario(tmp_path))
    try:
        rc.find(v.Btn, children=["▶"]).widget.click()
        # finished, and the play loop over (its button back to ▶): the page settles before Reset
        settle(rc, lambda: "finished" in page_text(rc, "recourse-status") and rc.find(v.Btn, children=["▶"]).widgets)
        assert page_text(rc, "recourse-status") == "Round 3 of 3 (finished)"
        rc.find(v.Btn, children=["Reset"]).widget.click()
        settle(rc, lambda: page_text(rc, "recourse-status") == "Round 0 of 3 (running)")
        assert page_text(rc, "recourse-status") == "Round 0 of 3 (running)"
    finally:
        rc.close()


def test_sliders_show_their_values_and_mesa_internals_are_hidden(dashboard_module, tmp_path):
    import ipyvuetify as v

    spec = {"type": "SliderFloat", "label": "μ: share", "step": 0.01}
    assert dashboard_module.slider_label(spec, 0.05) == "μ: share = 0.05"
    assert dashboard_module.slider_label({"type": "SliderInt", "label": "Rounds", "step": 1}, 10) == "Rounds = 10"
    rc = render_page(dashboard_module, fast_scenario(tmp_path))
    try:
        labels = [w.label for w in rc.find(v.Slider).widgets]
        assert "lambda_extcost = 2.0" in labels and "n_neighbours = 50" in labels
        assert "Rounds = 3" in labels and "Samples (n) = 200" in labels
        assert all(" = " in label for label in labels)
        # nothing from Mesa's SolaraViz that a user cannot act on: page tabs, threads, play/render intervals
        assert rc.find(v.Tab).widgets == []
        assert [w.label for w in rc.find(v.Checkbox).widgets] == [f"Fast retraining (batches of "
                                                                  f"{FAST_BATCH})"]
        assert not any("Interval" in label for label in labels)
    finally:
        rc.close()


def test_every_offered_dataset_runs_at_the_dashboard_defaults():
    params = model_params(base_scenario())
    offered = params["dataset"]["values"]
    assert set(offered) == set(DATASETS)
    for name in offered:
        model = DashboardDynamics(**(initial_values(params)
                                     | {"dataset": name, "rounds": 1, "fast_retraining": True}))
        assert model.error is None and model.controls["dataset"] == name, (name, model.error)
        model.step()
        assert model.error is None and model.round == 1, (name, model.error)
    # what cannot load at the starting sample size is not offered
    assert offered_datasets(base_scenario(), n_samples=4) == []


def test_a_scenario_with_several_generators_offers_all_of_them():
    from recourse_sim.scenarios import embedded

    base = base_scenario(embedded("default"))  # generic, generic_gamma0.9, ..., none
    keys = generator_keys(base)
    assert keys[:5] == ["generic", "generic_gamma0.9", "gravitational", "claproar", "none"]
    assert set(keys) == set(GENERATORS) | {"generic_gamma0.9"}
    (note,) = scenario_notes(base)
    assert "5 generators" in note and "starts with the first, generic" in note
    controls = initial_values(model_params(base))
    chosen = controls_for_generator(base, controls, "generic_gamma0.9")
    assert chosen["generator"] == "generic_gamma0.9" and chosen["threshold"] == 0.9
    scenario = dashboard_scenario(base, **{k: v for k, v in chosen.items() if k != "scenario"})
    assert scenario.generators[0].name == "generic" and scenario.generators[0].params["threshold"] == 0.9
    assert generator_text(base, "none") == "none (no recourse, control)"
    assert scenario_notes(base_scenario()) == []


@needs_viz
def test_cli_dashboard_port_0_prints_the_real_port(monkeypatch):
    import subprocess as subprocess_module

    import recourse_sim.viz.assets as assets

    calls = []
    monkeypatch.setattr(assets, "ensure_assets", lambda quiet=True: None)
    monkeypatch.setattr(subprocess_module, "call", lambda command, env=None: calls.append(command) or 0)
    result = CliRunner().invoke(app, ["dashboard", "--port", "0", "--host", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    (command,) = calls
    port = int(command[command.index("--port") + 1])
    assert port > 0 and f"http://127.0.0.1:{port}/" in result.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # it was free


# ------------------------------------------------------------------------------------------- in a browser
def _chromium() -> str | None:
    for candidate in (os.environ.get("RECOURSE_SIM_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the dashboard server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the dashboard server did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


#: Counts the pixels of an image (by CSS selector) within ``tolerance`` of an RGB colour, at its natural size.
COUNT_COLOUR_JS = """([selector, rgb, tolerance]) => {
    const img = document.querySelector(selector);
    if (!img || !img.complete || !img.naturalWidth) return -1;
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
        if ([0, 1, 2].every(c => Math.abs(data[i + c] - rgb[c]) <= tolerance)) n++;
    }
    return n;
}"""


def _rgb(colour: str) -> list[int]:
    return [int(colour[i:i + 2], 16) for i in (1, 3, 5)]


def test_dashboard_in_headless_chromium(tmp_path):
    if not HAS_VIZ:
        pytest.skip("the dashboard needs the viz extra: pip install -e '.[viz]'")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the browser test needs playwright: pip install -e '.[browser]'")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; or set RECOURSE_SIM_CHROMIUM)")
    from recourse_sim.viz.assets import ensure_assets

    try:
        ensure_assets(quiet=True)  # Solara's front-end files, fetched once with npm where no CDN is reachable
    except RuntimeError as error:
        pytest.skip(f"Solara's front-end assets are unavailable: {error}")
    from playwright.sync_api import sync_playwright

    port = _free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "recourse_sim.cli", "dashboard", str(tiny_scenario(tmp_path)),
               "--port", str(port), "--host", "127.0.0.1"]
    with open(log, "w") as handle:
        # its own process group, so the CLI and the solara server it starts are stopped together
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=os.environ | {"MPLBACKEND": "Agg"})
    screenshot = tmp_path / "dashboard.png"
    try:
        _wait_for(f"http://127.0.0.1:{port}/", server, 120, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
                page.locator(".recourse-status").get_by_text("Round 0 of 10").wait_for(timeout=60_000)
                page.locator(".recourse-metrics img").first.wait_for(timeout=60_000)
                step = page.get_by_role("button", name="Step")
                for n in range(1, 4):
                    step.click()
                    page.locator(".recourse-status").get_by_text(f"Round {n} of 10").wait_for(timeout=60_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('.recourse-metrics img, .recourse-population img')]"
                    ".every(img => img.complete && img.naturalWidth > 0)", timeout=30_000)
                page.screenshot(path=str(screenshot), full_page=True)
                metrics = page.locator(".recourse-metrics img")
                assert metrics.count() >= 1 and metrics.first.is_visible()
                assert page.locator(".recourse-population img").first.is_visible()
                assert "lambda_extcost = 2" in page.locator(".recourse-settings").first.inner_text()
                assert page.get_by_text("Use Threads").count() == 0 and page.get_by_text("Page 0").count() == 0
                assert page.get_by_text("lambda_extcost = 2.0").count() == 1  # sliders show their values
                # every keyword of the generator has its own slider
                assert page.get_by_text("n_neighbours = 50", exact=True).count() == 1
                # side by side: one system draws its trajectories in the first palette colour only; adding a
                # comparison generator through its picker adds a line in the second colour
                second = [_rgb(PALETTE[1]), 40]
                assert page.evaluate(COUNT_COLOUR_JS, [".recourse-metrics img", *second]) == 0
                assert page.locator(".recourse-costs img").first.is_visible()
                page.locator(".recourse-control-compare_generators .v-input__slot").click()
                page.locator(".menuable__content__active").get_by_text("generic", exact=True).click()
                page.keyboard.press("Escape")
                page.locator(".recourse-settings").get_by_text("vs generic (defaults)").wait_for(timeout=60_000)
                page.locator(".recourse-status").get_by_text("Round 0 of 10").wait_for(timeout=60_000)
                step.click()
                page.locator(".recourse-status").get_by_text("Round 1 of 10").wait_for(timeout=60_000)
                page.wait_for_function(f"(args) => ({COUNT_COLOUR_JS})(args) > 30",
                                       arg=[".recourse-metrics img", *second], timeout=60_000)
                assert page.locator(".recourse-control-compare_generators .v-chip").all_inner_texts() == ["generic"]
                page.screenshot(path=str(tmp_path / "dashboard_side_by_side.png"), full_page=True)
                # an agent control through the page: compliance to its minimum (the slider's Home key), then a round
                # in which both systems' recipients are chosen but none acts on the recourse
                assert page.locator(".recourse-acted").count() == 0  # the reference protocol: everyone acts
                compliance = page.locator(".recourse-control-compliance [role=slider]")
                compliance.scroll_into_view_if_needed()
                compliance.press("Home")
                page.locator(".recourse-settings").get_by_text("agents: compliance = 0").wait_for(timeout=60_000)
                page.locator(".recourse-status").get_by_text("Round 0 of 10").wait_for(timeout=60_000)
                step.click()
                page.locator(".recourse-status").get_by_text("Round 1 of 10").wait_for(timeout=60_000)
                acted = page.locator(".recourse-acted").first
                acted.wait_for(timeout=60_000)
                assert acted.inner_text() == ("Round 1: recipients who acted on their recourse: gravitational 0%, "
                                              "generic 0%")
                assert page.get_by_text("Compliance: chance of acting = 0.00").count() == 1
                page.screenshot(path=str(tmp_path / "dashboard_agents.png"), full_page=True)
            finally:
                browser.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
    assert screenshot.stat().st_size > 10_000
    print(f"dashboard screenshot: {screenshot}")

