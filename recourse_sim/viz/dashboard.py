"""Interactive dashboard: a Solara page on the recourse dynamics (a Mesa model; needs the ``viz`` extra).

Run it with ``recourse-sim dashboard [SCENARIO] [--port 8765]`` (which runs ``solara run`` on this module), or
``solara run recourse_sim.viz.dashboard``. A scenario file, when given (``RECOURSE_SIM_SCENARIO`` environment
variable), sets the starting values of the controls and every setting the controls do not cover (model
architecture, search settings, metric settings).

- Controls (sidebar, "Settings"): dataset, sample size, model, generator, gamma (decision threshold),
  lambda1 (cost weight), lambda2 (the generator's second weight: external cost for gravitational/ClaPROAR,
  diversity for DiCE, energy for ECCCo), mu (share of the negatively classified given recourse each round),
  rounds, seed, and fast retraining (mini-batches of 32 instead of the paper's batch size 1). **A change
  applies at once**: the simulation is rebuilt with it and restarts at round 0 (a slider applies when it is
  released), so the page always shows the setup that runs. Each slider shows its value in its label; a
  slider the chosen generator does not use is disabled and says so.
- The generator picker offers a scenario's own entries first (under their labels, e.g. ``generic_gamma0.9``;
  picking one loads its gamma/lambda values into the sliders), then the other registered generators. The
  no-recourse control ``none`` is offered as "none (no recourse, control)": recipients are chosen but do not
  move, so its trajectories show what retraining alone does. One generator runs at a time; a note names
  the scenario's other models/generators.
- Datasets are offered only where their data loads at the dashboard's starting sample size.
- "Simulation" card: Reset (rebuild with the same settings), play/pause and Step, and the round counter.
- Views: the population in 2-D (PCA for d > 2) coloured by label and by received recourse, with the current
  decision boundary; metric trajectories (domain MMD, model MMD, test accuracy, validity) updated every round.

The page is built from Solara components rather than Mesa's ``SolaraViz`` (whose Reset-only parameter
handling, page tabs and threading switches a user cannot act on changed from one Mesa release to the next);
the model is :class:`DashboardDynamics`, a Mesa model (:class:`~recourse_sim.simulation.RecourseDynamics`)
built from the controls (one model x one generator x one repetition), with shift metrics every round and no
permutation test (p-values are skipped to keep a round interactive).
"""

from __future__ import annotations

import inspect
import os
import time
import traceback
from functools import lru_cache

import reacton.ipyvuetify as rv
import solara
from matplotlib.figure import Figure

from recourse_sim.data import DATASETS
from recourse_sim.experiments import Scenario
from recourse_sim.generators import GENERATORS
from recourse_sim.generators.control import CONTROL
from recourse_sim.models import MODELS
from recourse_sim.plotting import Projection, plot_population_snapshot, plot_trajectory_grid
from recourse_sim.scenarios import embedded
from recourse_sim.simulation import RecourseDynamics

SCENARIO_ENV = "RECOURSE_SIM_SCENARIO"
DASHBOARD_METRICS = ("domain_mmd", "model_mmd", "accuracy", "validity")
#: The generator keyword that the "lambda2" control sets, in order of preference.
SECOND_WEIGHTS = ("lambda_extcost", "lambda_diversity", "lambda_energy")
#: The controls that set a generator keyword, and the keyword (``lambda_extcost`` stands for any second weight).
GENERATOR_CONTROLS = {"threshold": "threshold", "lambda_cost": "lambda_cost", "lambda_extcost": "lambda_extcost"}
FAST_BATCH = 32
CONTROL_TEXT = " (no recourse, control)"  # how the picker shows the no-recourse control
PLAY_PAUSE_S = 0.05  # breathing time between rounds while playing, so the page can redraw


def base_scenario(path: str | os.PathLike | None = None) -> Scenario:
    """The scenario the controls start from: ``path``, else ``$RECOURSE_SIM_SCENARIO``, else a small default
    (overlapping data, 400 samples, logistic regression, generic recourse, 50 rounds)."""
    path = path or os.environ.get(SCENARIO_ENV) or None
    if path:
        return Scenario.from_toml(path)
    return _default_scenario()


@lru_cache(maxsize=1)
def _default_scenario() -> Scenario:
    default = Scenario.from_toml(embedded("default"))
    raw = default.model_dump(mode="json", exclude_none=True)
    raw.update(name="dashboard", rounds=50, data={**raw["data"], "n_samples": 400},
               models=[{"name": "logistic_regression"}], generators=[{"name": "generic"}])
    return Scenario.from_dict(raw)


# --------------------------------------------------------------------------------------------- generators
def entry_keys(base: Scenario) -> list[str]:
    """How the picker names ``base``'s generator entries: the label, else the name (the name with its
    parameters where two unlabelled entries share a name)."""
    short = [g.label or g.name for g in base.generators]
    return [key if short.count(key) == 1 else g.key for key, g in zip(short, base.generators)]


def generator_keys(base: Scenario) -> list[str]:
    """What the generator picker offers: ``base``'s entries (see :func:`entry_keys`), then every registered
    generator not already listed under its name."""
    keys = entry_keys(base)
    return keys + [name for name in GENERATORS if name not in keys]


def generator_entry(base: Scenario, key: str) -> dict:
    """The generator configuration behind picker entry ``key``: ``base``'s entry with that key, else the
    registered generator ``key`` with its defaults."""
    for entry_key, g in zip(entry_keys(base), base.generators):
        if entry_key == key:
            return g.model_dump(mode="json", exclude_none=True)
    if key not in GENERATORS:
        raise KeyError(f"unknown generator {key!r}; one of {', '.join(generator_keys(base))}")
    return {"name": key}


def generator_text(base: Scenario, key: str) -> str:
    """How the picker shows ``key``: the no-recourse control says what it is."""
    try:
        name = generator_entry(base, key)["name"]
    except KeyError:
        return key
    return key + CONTROL_TEXT if name == CONTROL else key


def _second_weight(name: str) -> str | None:
    accepted = inspect.signature(GENERATORS[name]).parameters
    return next((p for p in SECOND_WEIGHTS if p in accepted), None)


def generator_parameters(name: str, threshold: float, lambda_cost: float, lambda_extcost: float) -> dict:
    """The controls' values as keywords of generator ``name``'s factory (those it does not take are dropped)."""
    accepted = inspect.signature(GENERATORS[name]).parameters
    params = {}
    if "threshold" in accepted:
        params["threshold"] = float(threshold)
    if "lambda_cost" in accepted:
        params["lambda_cost"] = float(lambda_cost)
    second = _second_weight(name)
    if second is not None:
        params[second] = float(lambda_extcost)
    return params


def generator_slider_values(base: Scenario, key: str) -> dict:
    """The gamma/lambda slider values of picker entry ``key``: the entry's own values, else its factory's
    defaults; sliders the generator does not use are left out."""
    entry = generator_entry(base, key)
    name = entry["name"]
    accepted = inspect.signature(GENERATORS[name]).parameters
    values = {}
    for control, keyword in GENERATOR_CONTROLS.items():
        keyword = _second_weight(name) if keyword == "lambda_extcost" else keyword
        if keyword is not None and keyword in accepted:
            values[control] = float(entry.get(keyword, accepted[keyword].default))
    return values


def unused_controls(base: Scenario, key: str) -> set[str]:
    """The gamma/lambda controls that generator entry ``key`` does not use (the page disables them)."""
    return set(GENERATOR_CONTROLS) - set(generator_slider_values(base, key))


def controls_for_generator(base: Scenario, controls: dict, key: str) -> dict:
    """``controls`` with generator ``key`` chosen and its own gamma/lambda values in the sliders."""
    return controls | {"generator": key} | generator_slider_values(base, key)


def scenario_notes(base: Scenario) -> list[str]:
    """What the page says about a scenario with several models or generators (one of each runs at a time)."""
    notes = []
    for kind, entries in (("model", [m.key for m in base.models]), ("generator", entry_keys(base))):
        if len(entries) > 1:
            notes.append(f"The scenario lists {len(entries)} {kind}s ({', '.join(entries)}); the dashboard runs one "
                         f"at a time and starts with the first, {entries[0]}. Pick another under "
                         f"{kind.capitalize()}.")
    return notes


# ------------------------------------------------------------------------------------------ the scenario
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
    """One model x one generator x one repetition from the controls; everything else from ``base``.
    ``generator`` is a picker entry (see :func:`generator_keys`)."""
    raw = base.model_dump(mode="json", exclude_none=True)
    data = dict(raw["data"]) if dataset == base.data.name else {"name": dataset}
    data["n_samples"] = int(n_samples)
    model_cfg = dict(next((m for m in raw["models"] if m["name"] == model), {"name": model}))
    model_cfg.pop("label", None)
    if fast_retraining:
        model_cfg["retrain_batch_size"] = FAST_BATCH
    gen_cfg = generator_entry(base, generator)
    gen_cfg.pop("label", None)  # the sliders may have moved away from what the label says
    gen_cfg.update(generator_parameters(gen_cfg["name"], threshold, lambda_cost, lambda_extcost))
    raw.update(
        name="dashboard", seed=int(seed), rounds=int(rounds), repetitions=1, recourse_share=float(recourse_share),
        data=data, models=[model_cfg], generators=[gen_cfg],
        metrics={**raw["metrics"], "evaluate_every": 1, "permutations": 0},
    )
    return Scenario.from_dict(raw, source="dashboard")


def offered_datasets(base: Scenario, n_samples: int | None = None) -> list[str]:
    """The datasets whose data loads (and splits) at ``n_samples`` (default: ``base``'s) with ``base``'s
    settings: the dashboard offers only these. ``csv`` only when ``base`` reads one."""
    n = int(n_samples or base.data.n_samples or 400)
    names = list(DATASETS) + (["csv"] if base.data.name == "csv" else [])
    return [name for name in names if _loads(base, name, n)]


def _loads(base: Scenario, dataset: str, n_samples: int) -> bool:
    raw = base.model_dump(mode="json", exclude_none=True)
    data = dict(raw["data"]) if dataset == base.data.name else {"name": dataset}
    try:
        Scenario.from_dict(raw | {"data": data | {"n_samples": n_samples}}).load_data()
    except Exception:  # noqa: BLE001 - any failure means: do not offer it
        return False
    return True


# ----------------------------------------------------------------------------------------------- the model
class DashboardDynamics(RecourseDynamics):
    """The simulation behind the dashboard: a :class:`RecourseDynamics` built from the dashboard's controls.

    Every keyword is a control (see the module docstring); ``scenario`` (a TOML path, fixed) supplies the rest.
    A configuration that cannot be built falls back to the generic generator with its default gamma, then to
    the starting setup (``self.error`` says why, ``self.controls`` holds what runs, and the page shows both);
    an error in a round stops the run and is shown instead of crashing the page.
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
        self.scenario_path = scenario
        self.base = base
        controls = dict(dataset=dataset, n_samples=n_samples, model=model, generator=generator, threshold=threshold,
                        lambda_cost=lambda_cost, lambda_extcost=lambda_extcost, recourse_share=recourse_share,
                        rounds=rounds, seed=seed, fast_retraining=fast_retraining)
        self.error: str | None = None
        default = base_scenario(None)
        fallbacks = [  # (what the page says, base scenario, controls)
            ("", base, controls),
            ("showing the generic generator instead", base,
             controls | {"generator": "generic", "threshold": generator_slider_values(base, "generic")["threshold"]}),
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
            self.base = source
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
        """The values behind the controls, e.g. ``generic · γ = 0.5 · λ₁ = 0.1 · μ = 0.05 · seed 42``."""
        c = self.controls
        used = generator_parameters(self.scenario.generators[0].name, c["threshold"], c["lambda_cost"],
                                    c["lambda_extcost"])
        parts = [generator_text(self.base, c["generator"])]
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
        return (f"{data.name} (n = {n}, d = {data.n_features}) · {s.model} · "
                f"{generator_text(self.base, self.controls['generator'])}")

    def status(self) -> str:
        """``Round 3 of 50 (running)``."""
        return f"Round {self.round} of {self.config.rounds} ({'running' if self.running else 'finished'})"


def rebuild(model: DashboardDynamics, **changes) -> DashboardDynamics:
    """A fresh simulation (round 0) with ``model``'s controls and ``changes``: what a control change and Reset
    do. Choosing a generator also loads its gamma/lambda values into the sliders."""
    controls = dict(model.controls)
    if "generator" in changes and changes["generator"] != controls["generator"]:
        controls = controls_for_generator(model.base, controls, changes["generator"])
        changes = {k: v for k, v in changes.items() if k not in GENERATOR_CONTROLS}
    return DashboardDynamics(**(controls | changes), scenario=model.scenario_path)


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


@solara.component
def PopulationView(model: DashboardDynamics, round_: int):
    """The population in 2-D by label and by received recourse, with the current decision boundary."""
    figure = solara.use_memo(lambda: population_figure(model), [id(model), round_])
    with solara.Column(classes=["recourse-population"]) as view:
        solara.FigureMatplotlib(figure, format="png", dpi=90, dependencies=[id(model), round_])
    return view


@solara.component
def MetricsView(model: DashboardDynamics, round_: int):
    """Round counter, settings and metric trajectories (domain MMD, model MMD, accuracy, validity)."""
    figure = solara.use_memo(lambda: metrics_figure(model), [id(model), round_])
    with solara.Column(classes=["recourse-metrics"]) as view:
        solara.Text(model.status(), classes=["recourse-round"], style={"font-weight": "bold", "font-size": "1.1em"})
        solara.Text(model.settings_line(), classes=["recourse-settings"], style={"font-size": "0.85em"})
        solara.FigureMatplotlib(figure, format="png", dpi=90, dependencies=[id(model), round_])
    return view


# --------------------------------------------------------------------------------------------- controls
def model_params(base: Scenario, scenario_path: str | None = None) -> dict:
    """The controls (Mesa's ``model_params`` format: ``type``, ``value``, range, ``label``), starting from
    ``base``'s values; ``scenario`` is the fixed path."""
    model0 = base.models[0]
    sliders = {"threshold": 0.5, "lambda_cost": 0.1, "lambda_extcost": 5.0}  # for generators without them
    sliders |= generator_slider_values(base, entry_keys(base)[0])
    return {
        "dataset": {"type": "Select", "value": base.data.name, "values": offered_datasets(base), "label": "Dataset"},
        "n_samples": {"type": "SliderInt", "value": int(base.data.n_samples or 400), "min": 100, "max": 5000,
                      "step": 100, "label": "Samples (n)"},
        "model": {"type": "Select", "value": model0.name, "values": list(MODELS), "label": "Model"},
        "generator": {"type": "Select", "value": entry_keys(base)[0], "values": generator_keys(base),
                      "label": "Generator"},
        "threshold": {"type": "SliderFloat", "value": sliders["threshold"], "min": 0.05, "max": 0.95,
                      "step": 0.05, "label": "γ: decision threshold"},
        "lambda_cost": {"type": "SliderFloat", "value": sliders["lambda_cost"], "min": 0.0,
                        "max": 2.0, "step": 0.05, "label": "λ₁: cost weight"},
        "lambda_extcost": {"type": "SliderFloat", "value": sliders["lambda_extcost"], "min": 0.0, "max": 10.0,
                           "step": 0.1, "label": "λ₂: second weight"},
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


def slider_label(spec: dict, value, unused_by: str | None = None) -> str:
    """A slider's label with its value, e.g. ``γ: decision threshold = 0.50``; ``unused_by`` a generator that
    does not take it."""
    digits = max(0, -int(f"{float(spec['step']):e}".split("e")[1])) if spec["type"] == "SliderFloat" else 0
    text = f"{spec['label']} = {float(value):.{digits}f}"
    return f"{text} (not used by {unused_by})" if unused_by else text


@solara.component
def Slider(name: str, spec: dict, value, on_apply, unused_by: str | None = None):
    """A slider that shows its value and applies it when released (dragging only moves the shown value)."""
    cast = int if spec["type"] == "SliderInt" else float
    shown, set_shown = solara.use_state(value, key=f"{name}-{value}")  # restarts when the applied value changes
    label = slider_label(spec, shown, unused_by)
    if cast(shown) != cast(value):
        label += " (release to apply)"
    slider = rv.Slider(v_model=shown, on_v_model=lambda v: set_shown(cast(v)), label=label, min=spec["min"],
                       max=spec["max"], step=spec["step"], thumb_label=True, hide_details=True,
                       disabled=unused_by is not None, class_=f"recourse-control recourse-control-{name}")
    rv.use_event(slider, "change", lambda _widget, _event, data: on_apply(name, cast(data)))
    return slider


@solara.component
def Controls(params: dict, model: DashboardDynamics, on_apply):
    """The settings; every value shown is the one that runs (a change is applied at once)."""
    c = model.controls
    base = model.base
    unused = unused_controls(base, c["generator"])
    generator_name = generator_entry(base, c["generator"])["name"]
    with solara.Column(classes=["recourse-controls"]) as column:
        for name, spec in params.items():
            if not isinstance(spec, dict):
                continue
            if spec["type"] == "Select" and name == "generator":
                texts = {generator_text(base, key): key for key in spec["values"]}
                if c[name] not in texts.values():
                    texts[generator_text(base, c[name])] = c[name]
                solara.Select(spec["label"], values=list(texts), value=generator_text(base, c[name]),
                              on_value=lambda text, texts=texts: on_apply("generator", texts[text]))
            elif spec["type"] == "Select":
                values = spec["values"] if c[name] in spec["values"] else [*spec["values"], c[name]]
                solara.Select(spec["label"], values=values, value=c[name],
                              on_value=lambda value, name=name: on_apply(name, value))
            elif spec["type"] == "Checkbox":
                solara.Checkbox(label=spec["label"], value=bool(c[name]),
                                on_value=lambda value, name=name: on_apply(name, bool(value)))
            else:
                Slider(name, spec, c[name], on_apply, unused_by=generator_name if name in unused else None)
    return column


COMPONENTS = [PopulationView, MetricsView]
TITLE = "recourse_sim · endogenous recourse dynamics"


def initial_state(scenario_path: str | None = None) -> tuple[dict, DashboardDynamics]:
    """The controls for ``scenario_path`` (or ``$RECOURSE_SIM_SCENARIO``, or the small default) and the first
    simulation built from them."""
    scenario_path = scenario_path or os.environ.get(SCENARIO_ENV) or None
    params = model_params(base_scenario(scenario_path), scenario_path)
    return params, DashboardDynamics(**initial_values(params))


@solara.component
def Dashboard(params: dict, first: DashboardDynamics):
    """The page: "Simulation" (Reset, play/pause, Step, round) and "Settings" in the sidebar, views in the main
    area. ``first`` is the simulation to show first."""
    model = solara.use_reactive(first)
    playing = solara.use_reactive(False)
    tick = solara.use_reactive(0)  # bumped after each round: the model changes in place
    busy = solara.use_reactive(False)
    notes = solara.use_memo(lambda: scenario_notes(base_scenario(params.get("scenario"))), [])
    current = model.value
    _ = tick.value

    def apply(name: str | None = None, value=None) -> None:
        """Rebuild at round 0 with one control changed (``name=None``: Reset)."""
        playing.set(False)
        busy.set(True)
        try:
            model.set(rebuild(model.value, **({name: value} if name else {})))
        finally:
            busy.set(False)

    def step_once() -> None:
        model.value.step()
        tick.set(tick.value + 1)

    def play() -> None:
        while playing.value and model.value.running:
            step_once()
            time.sleep(PLAY_PAUSE_S)
        playing.set(False)

    solara.lab.use_task(play, dependencies=[playing.value, id(current)], prefer_threaded=True)

    with solara.AppBar():
        solara.AppBarTitle(TITLE)
    with solara.Sidebar(), solara.Column():
        with solara.Card("Simulation"):
            with solara.Row(justify="space-between"):
                solara.Button(label="Reset", color="primary", on_click=lambda: apply(), disabled=busy.value)
                solara.Button(label="❚❚" if playing.value else "▶", color="primary",
                              on_click=lambda: playing.set(not playing.value),
                              disabled=busy.value or not current.running)
                solara.Button(label="Step", color="primary", on_click=step_once,
                              disabled=busy.value or playing.value or not current.running)
            solara.Text(current.status(), classes=["recourse-status"])
        with solara.Card("Settings"):
            solara.Text("A change applies at once and restarts the simulation at round 0.",
                        style={"font-size": "0.85em"})
            Controls(params, current, apply)
    with solara.Column():
        for note in notes:
            solara.Info(note, classes=["recourse-note"])
        if current.error:
            solara.Warning(current.error, classes=["recourse-error"])
        with solara.Row(style={"flex-wrap": "wrap"}):
            for view in COMPONENTS:
                view(current, current.round)


@solara.component
def Page():
    """The app ``solara run`` serves: one simulation per browser session, built on first render."""
    params, first = solara.use_memo(initial_state, [])
    Dashboard(params, first)
