"""Interactive dashboard: Mesa's SolaraViz on the recourse dynamics (needs the ``viz`` extra).

Run it with ``recourse-sim dashboard [SCENARIO] [--port 8765]`` (which runs ``solara run`` on this module), or
``solara run recourse_sim.viz.dashboard``. A scenario file, when given (``RECOURSE_SIM_SCENARIO`` environment
variable), sets the starting values of the controls and every setting the controls do not cover (model
architecture, search settings, metric settings).

- Controls (sidebar, "Model Parameters"): dataset, sample size, model, generator, gamma (decision threshold),
  lambda1 (cost weight), lambda2 (the generator's second weight: external cost for gravitational/ClaPROAR,
  diversity for DiCE, energy for ECCCo; ignored by generators without one), mu (share of the negatively
  classified given recourse each round), rounds, seed, and fast retraining (mini-batches of 32 instead of the
  paper's batch size 1). Mesa's "Controls" card has Reset (rebuild with the current controls), play/pause and
  Step.
- Views: the population in 2-D (PCA for d > 2) coloured by label and by received recourse, with the current
  decision boundary; metric trajectories (domain MMD, model MMD, test accuracy, validity) updated every round.

The model is :class:`DashboardDynamics`, a :class:`~recourse_sim.simulation.RecourseDynamics` built from the
controls (one model x one generator x one repetition), with shift metrics every round and no permutation test
(p-values are skipped to keep a round interactive).
"""

from __future__ import annotations

import inspect
import os
import traceback

import solara
from matplotlib.figure import Figure
from mesa.visualization import SolaraViz

from recourse_sim.data import DATASETS
from recourse_sim.experiments import Scenario
from recourse_sim.generators import GENERATORS
from recourse_sim.models import MODELS
from recourse_sim.plotting import Projection, plot_population_snapshot, plot_trajectory_grid
from recourse_sim.scenarios import embedded
from recourse_sim.simulation import RecourseDynamics

SCENARIO_ENV = "RECOURSE_SIM_SCENARIO"
DASHBOARD_METRICS = ("domain_mmd", "model_mmd", "accuracy", "validity")
#: The generator keyword that the "lambda2" control sets, in order of preference.
SECOND_WEIGHTS = ("lambda_extcost", "lambda_diversity", "lambda_energy")
FAST_BATCH = 32


def base_scenario(path: str | os.PathLike | None = None) -> Scenario:
    """The scenario the controls start from: ``path``, else ``$RECOURSE_SIM_SCENARIO``, else a small default
    (overlapping data, 400 samples, logistic regression, generic recourse, 50 rounds)."""
    path = path or os.environ.get(SCENARIO_ENV) or None
    if path:
        return Scenario.from_toml(path)
    default = Scenario.from_toml(embedded("default"))
    raw = default.model_dump(mode="json", exclude_none=True)
    raw.update(name="dashboard", rounds=50, data={**raw["data"], "n_samples": 400},
               models=[{"name": "logistic_regression"}], generators=[{"name": "generic"}])
    return Scenario.from_dict(raw)


def generator_parameters(name: str, threshold: float, lambda_cost: float, lambda_extcost: float) -> dict:
    """The controls' values as keywords of generator ``name``'s factory (those it does not take are dropped)."""
    accepted = inspect.signature(GENERATORS[name]).parameters
    params = {}
    if "threshold" in accepted:
        params["threshold"] = float(threshold)
    if "lambda_cost" in accepted:
        params["lambda_cost"] = float(lambda_cost)
    second = next((p for p in SECOND_WEIGHTS if p in accepted), None)
    if second is not None:
        params[second] = float(lambda_extcost)
    return params


def dashboard_scenario(
    base: Scenario,
    *,
    dataset: str,
    n_samples: int,
    model: str,
    generator: str,
    threshold: float,
    lambda_cost: float,
    lambda_extcost: float,
    recourse_share: float,
    rounds: int,
    seed: int,
    fast_retraining: bool,
) -> Scenario:
    """One model x one generator x one repetition from the controls; everything else from ``base``."""
    raw = base.model_dump(mode="json", exclude_none=True)
    data = dict(raw["data"]) if dataset == base.data.name else {"name": dataset}
    data["n_samples"] = int(n_samples)
    model_cfg = dict(next((m for m in raw["models"] if m["name"] == model), {"name": model}))
    model_cfg.pop("label", None)
    if fast_retraining:
        model_cfg["retrain_batch_size"] = FAST_BATCH
    gen_cfg = dict(next((g for g in raw["generators"] if g["name"] == generator), {"name": generator}))
    gen_cfg.pop("label", None)
    gen_cfg.update(generator_parameters(generator, threshold, lambda_cost, lambda_extcost))
    raw.update(
        name="dashboard", seed=int(seed), rounds=int(rounds), repetitions=1, recourse_share=float(recourse_share),
        data=data, models=[model_cfg], generators=[gen_cfg],
        metrics={**raw["metrics"], "evaluate_every": 1, "permutations": 0},
    )
    return Scenario.from_dict(raw, source="dashboard")


class DashboardDynamics(RecourseDynamics):
    """The simulation behind the dashboard: a :class:`RecourseDynamics` built from the dashboard's controls.

    Every keyword is a control (see the module docstring); ``scenario`` (a TOML path, fixed) supplies the rest.
    A configuration that cannot be built falls back to the generic generator with gamma = 0.5, then to the
    starting setup (``self.error`` says why, and the page shows it); an error in a round stops the run and is
    shown instead of crashing the page.
    """

    def __init__(
        self,
        dataset: str = "overlapping",
        n_samples: int = 400,
        model: str = "logistic_regression",
        generator: str = "generic",
        threshold: float = 0.5,
        lambda_cost: float = 0.1,
        lambda_extcost: float = 5.0,
        recourse_share: float = 0.05,
        rounds: int = 50,
        seed: int = 42,
        fast_retraining: bool = False,
        scenario: str | None = None,
    ) -> None:
        base = base_scenario(scenario)
        controls = dict(dataset=dataset, n_samples=n_samples, model=model, generator=generator, threshold=threshold,
                        lambda_cost=lambda_cost, lambda_extcost=lambda_extcost, recourse_share=recourse_share,
                        rounds=rounds, seed=seed, fast_retraining=fast_retraining)
        self.error: str | None = None
        default = base_scenario(None)
        fallbacks = [  # (what the page says, base scenario, controls)
            ("", base, controls),
            ("showing the generic generator instead", base, controls | {"generator": "generic", "threshold": 0.5}),
            ("showing the default setup instead", default,
             {k: v for k, v in initial_values(model_params(default)).items() if k in controls}),
        ]
        for note, source, candidate in fallbacks:
            try:
                self.scenario = dashboard_scenario(source, **candidate)
                config = self.scenario.build()
            except Exception as error:  # noqa: BLE001 - show it on the page, fall back to something that runs
                self.error = self.error or f"could not build {generator!r} on {dataset!r}: {error}"
                continue
            self.controls = candidate
            if note:
                self.error = f"{self.error}; {note}"
            break
        else:
            raise RuntimeError(self.error)
        super().__init__(config, seed=int(self.controls["seed"]))
        self.projection = Projection.fit(config.train.X, config.train.schema.names)

    def step(self) -> None:
        if not self.running:
            return
        try:
            super().step()
        except Exception as error:  # noqa: BLE001
            traceback.print_exc()
            self.error = f"round {self.round} failed: {type(error).__name__}: {error}"
            self.running = False

    @property
    def system(self):
        return self.systems[0]

    def settings_line(self) -> str:
        """The values behind the controls, e.g. ``gamma = 0.5 · lambda1 = 0.1 · mu = 0.05 · seed 42``."""
        c = self.controls
        used = generator_parameters(c["generator"], c["threshold"], c["lambda_cost"], c["lambda_extcost"])
        parts = []
        if "threshold" in used:
            parts.append(f"γ = {used['threshold']:g}")
        if "lambda_cost" in used:
            parts.append(f"λ₁ = {used['lambda_cost']:g}")
        second = next((p for p in SECOND_WEIGHTS if p in used), None)
        if second is not None:
            parts.append(f"λ₂ ({second.removeprefix('lambda_')}) = {used[second]:g}")
        parts += [f"μ = {c['recourse_share']:g}", f"seed {c['seed']}",
                  "retraining: " + (f"batches of {FAST_BATCH}" if c["fast_retraining"] else "paper (batch 1)")]
        return " · ".join(parts)

    def title(self) -> str:
        s = self.system
        data = self.config.train
        n = data.n_samples + self.config.test.n_samples
        return f"{data.name} (n = {n}, d = {data.n_features}) · {s.model} · {self.controls['generator']}"


# ------------------------------------------------------------------------------------------------ views
def population_figure(model: DashboardDynamics) -> Figure:
    pop = model.population
    return plot_population_snapshot(
        pop.X[0].cpu().numpy(), pop.y[0].cpu().numpy(), model.scorer(0),
        recourse_round=pop.recourse_round[0].cpu().numpy(), current_round=model.round,
        projection=model.projection, title=f"Round {model.round}: {model.title()}",
        figure=Figure(figsize=(7.6, 3.6)),
    )


def metrics_figure(model: DashboardDynamics) -> Figure:
    frame = model.results()
    figure = Figure(figsize=(7.0, 5.0), layout="constrained")
    return plot_trajectory_grid(frame, DASHBOARD_METRICS, row=None, hue="generator", figure=figure, col_wrap=2,
                                legend=False)


def PopulationView(model: DashboardDynamics):
    """The population in 2-D by label and by received recourse, with the current decision boundary."""
    figure = solara.use_memo(lambda: population_figure(model), [id(model), model.round])
    with solara.Column(classes=["recourse-population"]) as view:
        solara.FigureMatplotlib(figure, format="png", dpi=90, dependencies=[id(model), model.round])
    return view


def MetricsView(model: DashboardDynamics):
    """Round counter and metric trajectories (domain MMD, model MMD, accuracy, validity)."""
    figure = solara.use_memo(lambda: metrics_figure(model), [id(model), model.round])
    with solara.Column(classes=["recourse-metrics"]) as view:
        status = "finished" if not model.running else "running"
        solara.Text(f"Round {model.round} of {model.config.rounds} ({status})", classes=["recourse-round"],
                    style={"font-weight": "bold", "font-size": "1.1em"})
        solara.Text(model.settings_line(), classes=["recourse-settings"], style={"font-size": "0.85em"})
        if model.error:
            solara.Warning(model.error)
        solara.FigureMatplotlib(figure, format="png", dpi=90, dependencies=[id(model), model.round])
    return view


def model_params(base: Scenario, scenario_path: str | None = None) -> dict:
    """SolaraViz controls, starting from ``base``'s values."""
    model0, generator0 = base.models[0], base.generators[0]
    extras = generator0.params

    def second_weight() -> float:
        for name in SECOND_WEIGHTS:
            if name in extras:
                return float(extras[name])
        for name in SECOND_WEIGHTS:
            parameter = inspect.signature(GENERATORS[generator0.name]).parameters.get(name)
            if parameter is not None:
                return float(parameter.default)
        return 5.0

    datasets = list(DATASETS) + (["csv"] if base.data.name == "csv" else [])
    return {
        "dataset": {"type": "Select", "value": base.data.name, "values": datasets, "label": "Dataset"},
        "n_samples": {"type": "SliderInt", "value": int(base.data.n_samples or 400), "min": 100, "max": 5000,
                      "step": 100, "label": "Samples (n)"},
        "model": {"type": "Select", "value": model0.name, "values": list(MODELS), "label": "Model"},
        "generator": {"type": "Select", "value": generator0.name, "values": list(GENERATORS), "label": "Generator"},
        "threshold": {"type": "SliderFloat", "value": float(extras.get("threshold", 0.5)), "min": 0.05, "max": 0.95,
                      "step": 0.05, "label": "γ: decision threshold"},
        "lambda_cost": {"type": "SliderFloat", "value": float(extras.get("lambda_cost", 0.1)), "min": 0.0,
                        "max": 2.0, "step": 0.05, "label": "λ₁: cost weight"},
        "lambda_extcost": {"type": "SliderFloat", "value": second_weight(), "min": 0.0, "max": 10.0, "step": 0.1,
                           "label": "λ₂: second weight"},
        "recourse_share": {"type": "SliderFloat", "value": float(base.recourse_share), "min": 0.01, "max": 0.5,
                           "step": 0.01, "label": "μ: share given recourse per round"},
        "rounds": {"type": "SliderInt", "value": int(base.rounds), "min": 1, "max": 200, "step": 1,
                   "label": "Rounds"},
        "seed": {"type": "SliderInt", "value": int(base.seed), "min": 0, "max": 1000, "step": 1, "label": "Seed"},
        "fast_retraining": {"type": "Checkbox", "value": False,
                            "label": f"Fast retraining (batches of {FAST_BATCH})"},
        "scenario": scenario_path,
    }


def initial_values(params: dict) -> dict:
    return {k: (v["value"] if isinstance(v, dict) else v) for k, v in params.items()}


COMPONENTS = [(PopulationView, 0), (MetricsView, 0)]
TITLE = "recourse_sim · endogenous recourse dynamics"


def initial_state(scenario_path: str | None = None) -> tuple[dict, DashboardDynamics]:
    """The controls for ``scenario_path`` (or ``$RECOURSE_SIM_SCENARIO``, or the small default) and the first
    simulation built from them."""
    scenario_path = scenario_path or os.environ.get(SCENARIO_ENV) or None
    params = model_params(base_scenario(scenario_path), scenario_path)
    return params, DashboardDynamics(**initial_values(params))


@solara.component
def Page():
    """The app ``solara run`` serves: one simulation per browser session, built on first render."""
    params, model = solara.use_memo(initial_state, [])
    return SolaraViz(model, components=COMPONENTS, model_params=params, name=TITLE)
