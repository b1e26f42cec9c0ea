"""Interactive dashboard: a Solara page on the recourse dynamics (a Mesa model; needs the ``viz`` extra).

Run it with ``recourse-sim dashboard [SCENARIO] [--port 8765]`` (which runs ``solara run`` on this module), or
``solara run recourse_sim.viz.dashboard``. A scenario file, when given (``RECOURSE_SIM_SCENARIO`` environment
variable), sets the starting values of the controls and every setting the controls do not cover (model
architecture, search settings, metric settings).

- Controls (sidebar, "Settings"): dataset, sample size, model, generator, then **one slider for every numeric
  keyword of the chosen generator's factory**, generated from its signature (γ = ``threshold``, λ₁ =
  ``lambda_cost``, and under their own names the generator's other weights and options, e.g. ``lambda_extcost``
  and ``n_neighbours`` for gravitational, ``lambda_diversity`` for DiCE, ``lambda_energy``,
  ``lambda_set_size``, ``coverage``, ``temperature`` and ``kappa`` for ECCCo, ``epsilon`` and ``n`` for greedy,
  and the search's ``tolerance``, ``step_size`` and ``max_steps``), then mu (share of the negatively classified
  given recourse each round), rounds, seed, and fast retraining (mini-batches of 32 instead of the paper's batch
  size 1). **A change applies at once**: the simulation is rebuilt with it and restarts at round 0 (a slider
  applies when it is released), so the page always shows the setup that runs; the settings line under the
  round counter lists every keyword passed to the generator. Each slider shows its value in its label; slider
  ranges come from :data:`~recourse_sim.viz.scenario_controls.KEYWORD_RANGES` (a keyword not listed there gets
  ``[0, 4 x default]``, integers ``[1, 4 x default]``).
- The model pickers (Model, and "Compare with models") offer every registered model, the JEM (``jem``) included,
  then each model Counterfactual Training can train, trained with it: ``mlp+ct``, shown as "mlp+ct (Counterfactual
  Training)", is the scenario entry ``{name = "mlp", training = "ct"}``
  (:func:`~recourse_sim.viz.scenario_controls.model_keys`). A picked model runs as the scenario's entry of that
  model trained that way, else as its entry of that model (its architecture and epochs, trained as picked), else
  with the model's defaults. The defaults are the papers' (a JEM trains 100 epochs with 30 SGLD steps per optimiser
  step; CT searches counterfactuals every epoch), so building either takes seconds to tens of seconds on a CPU; a
  scenario file with fewer epochs makes them quicker.
- Where a value starts: every default has one home and the dashboard reads it from there. A generator's
  keywords start at the scenario entry's own values, else at its factory's defaults
  (``inspect.signature(GENERATORS[name])``); the dynamics (mu, rounds, seed) and the data come from the
  scenario. Without a scenario file the page starts from the embedded default scenario (its first model and
  generator, its mu and seed) with :class:`~recourse_sim.simulation.config.SimulationConfig`'s default number of
  rounds and the dashboard's own smaller sample (:data:`~recourse_sim.viz.scenario_controls.SAMPLES`).
- The generator picker offers a scenario's own entries first (under their labels, e.g. ``generic_gamma0.9``;
  picking one loads its own values into its sliders), then the other registered generators (picking one loads
  its factory's defaults). The no-recourse control ``none`` is offered as "none (no recourse, control)":
  recipients are chosen but do not move, so its trajectories show what retraining alone does; it has no
  sliders. A note names the scenario's other models/generators.
- Side by side: "Compare with generators" (the same entries, the control included) and "Compare with models"
  (the registered models) add comparison systems, e.g. generic vs gravitational vs none on the same people.
  Every model runs with every generator, all in one :class:`~recourse_sim.simulation.RecourseDynamics`: one
  population replicated per system (row i is the same individual everywhere), stepping together, and the same
  recipients each round (the scenario's ``pairing``; the control does not vote on who the candidates are). A
  comparison generator runs at its scenario entry's values, else at its factory's defaults (the sliders set the
  main generator only; the same generator added as a comparison is labelled "(defaults)" or "(scenario
  values)"). The settings line lists each comparison with its values; the title names every system. Nothing is
  compared at first: the default is one system.
- Agents (sidebar, "Agents"; :mod:`~recourse_sim.viz.agent_controls`): how recipients act on recourse, the
  options of :class:`~recourse_sim.simulation.agents.AgentSettings` (the scenario's ``[agents]``): the outcome
  model (the model's prediction, the truth, unchanged), which of the K counterfactuals is implemented (at random,
  the cheapest valid, the most confident), compliance (0-1), cost aversion, the share of the way moved (0.1-1),
  a budget per person (a switch, then its amount and the over-budget rule: refuse or partial), and the groups
  whose metrics are reported apart (none, a random split, the data's categorical attributes such as ``SEX``, or
  for data without any, e.g. 2-D data, a split of a feature). They apply at once like every other control. They
  start at the scenario's ``[agents]`` values, else at ``AgentSettings``' defaults (read from the dataclass; a
  picker offers what its field's ``Literal`` allows); a trait the scenario sets as a distribution table is kept
  (its slider sits at the table's centre and says so) until its slider is moved. The settings line ends with the
  agent options that differ from the defaults (``agents: compliance = 0.5, groups = random``). A combination
  that cannot be built (outcome "truth" with the scenario's truth "none") falls back to the agent settings the
  page started with, and the page says why. Choosing another dataset drops a grouping by the previous data's
  attributes.
- Datasets are offered only where their data loads at the dashboard's starting sample size.
- "Simulation" card: Reset (rebuild with the same settings), play/pause and Step, and the round counter.
- Views: the population in 2-D (PCA for d > 2) coloured by label and by received recourse, with the current decision
  boundary (several systems: one panel per system, :data:`~recourse_sim.viz.dashboard_figures.POPULATION_COLUMNS` to
  a row, each with its own population, recipients and boundary on shared axes); metric trajectories (domain MMD,
  model MMD, test accuracy, validity) and the "Hidden costs of recourse" (those of
  :data:`~recourse_sim.viz.dashboard_figures.COST_METRICS` the results hold: collateral rejections and approvals,
  lender loss, accuracy against the truth, movers truly improved, approval rate, recipients who acted, movers' own
  cost, cost and validity of recourse), under a line saying which share of the latest round's recipients acted (once
  they act otherwise than in the paper: ``AgentSettings.changes_behaviour``), updated every round, one line per
  system (hue: the generator, or "model / generator" when models differ). With groups, "Recourse by group" adds the
  approval rate, validity, share who acted and lender loss per group, one line per system x group, so that a gap
  recourse opens or widens between groups shows.

The page is built from Solara components rather than Mesa's ``SolaraViz`` (whose Reset-only parameter handling, page
tabs and threading switches a user cannot act on changed from one Mesa release to the next); the model is
:class:`~recourse_sim.viz.dashboard_model.DashboardDynamics`, a Mesa model
(:class:`~recourse_sim.simulation.RecourseDynamics`) built from the controls (the main model x generator, plus any
comparison systems, one repetition; a generator's keywords and the agent controls are keywords of the model too,
``DashboardDynamics(generator="eccco", lambda_set_size=0.2, compare_generators=["generic", "none"], compliance=0.5,
groups="random")``), with shift metrics every round and no permutation test (p-values are skipped to keep a round
interactive).

The code has one module per job; this one holds the page (the Solara components, :func:`Page` the app
``solara run`` serves, and :func:`initial_state`):

- :mod:`~recourse_sim.viz.scenario_controls`: the controls and the scenario they describe (pure functions:
  picker keys, generator keyword sliders, :func:`~recourse_sim.viz.scenario_controls.resolve_controls`,
  :func:`~recourse_sim.viz.scenario_controls.dashboard_scenario`, the control specs);
- :mod:`~recourse_sim.viz.dashboard_model`: :class:`~recourse_sim.viz.dashboard_model.DashboardDynamics` and
  :func:`~recourse_sim.viz.dashboard_model.rebuild`;
- :mod:`~recourse_sim.viz.dashboard_figures`: the figures the views show;
- :mod:`~recourse_sim.viz.agent_controls`: the "Agents" controls.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import reacton.ipyvuetify as rv
import solara

from recourse_sim.viz.agent_controls import AGENTS_TEXT, TRAITS, group_options, trait_centre, trait_text
from recourse_sim.viz.dashboard_figures import (
    acted_text,
    costs_figure,
    groups_figure,
    has_groups,
    metrics_figure,
    population_figure,
)
from recourse_sim.viz.dashboard_model import DashboardDynamics, rebuild
from recourse_sim.viz.scenario_controls import (
    SCENARIO_ENV,
    base_scenario,
    generator_controls,
    generator_text,
    initial_values,
    model_params,
    model_text,
    scenario_notes,
    unique_keys,
)

#: What the page says above the comparison pickers.
COMPARISON_TEXT = ("Side by side: each added generator or model runs on the same people, stepping together, with "
                   "the same recipients each round; an added generator runs at its scenario entry's values, else its "
                   "factory's defaults (the sliders set the main one).")
PLAY_PAUSE_S = 0.05  # breathing time between rounds while playing, so the page can redraw


# ------------------------------------------------------------------------------------------------ views
@solara.component
def PopulationView(model: DashboardDynamics, round_: int):
    """The population in 2-D by label and by received recourse, with the current decision boundary; one panel
    per system when several run."""
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


@solara.component
def CostsView(model: DashboardDynamics, round_: int):
    """The hidden costs of recourse (see :func:`costs_figure`), under a line on who acted on the latest round's
    recourse (once they act otherwise than in the paper)."""
    figure = solara.use_memo(lambda: costs_figure(model), [id(model), round_])
    acted = solara.use_memo(lambda: acted_text(model), [id(model), round_])
    with solara.Column(classes=["recourse-costs"]) as view:
        if acted:
            solara.Text(acted, classes=["recourse-acted"], style={"font-size": "0.85em"})
        solara.FigureMatplotlib(figure, format="png", dpi=90, dependencies=[id(model), round_])
    return view


@solara.component
def GroupsView(model: DashboardDynamics, round_: int):
    """Recourse by group (see :func:`groups_figure`), where the agents fall into groups; nothing otherwise."""
    grouped = has_groups(model)
    figure = solara.use_memo(lambda: groups_figure(model) if grouped else None, [id(model), round_])
    with solara.Column(classes=["recourse-groups"]) as view:
        if figure is not None:
            solara.FigureMatplotlib(figure, format="png", dpi=90, dependencies=[id(model), round_])
    return view


# --------------------------------------------------------------------------------------------- controls
def slider_label(spec: dict, value) -> str:
    """A slider's label with its value, e.g. ``γ: decision threshold = 0.50``."""
    digits = max(0, -int(f"{float(spec['step']):e}".split("e")[1])) if spec["type"] == "SliderFloat" else 0
    return f"{spec['label']} = {float(value):.{digits}f}"


@solara.component
def Slider(name: str, spec: dict, value, on_apply, note: str = ""):
    """A slider that shows its value and applies it when released (dragging only moves the shown value);
    ``note`` follows the value in the label until the slider is moved."""
    cast = int if spec["type"] == "SliderInt" else float
    shown, set_shown = solara.use_state(value, key=f"{name}-{value}")  # restarts when the applied value changes
    label = slider_label(spec, shown)
    if cast(shown) != cast(value):
        label += " (release to apply)"
    elif note:
        label += f" {note}"
    slider = rv.Slider(v_model=shown, on_v_model=lambda v: set_shown(cast(v)), label=label, min=spec["min"],
                       max=spec["max"], step=spec["step"], thumb_label=True, hide_details=True,
                       class_=f"recourse-control recourse-control-{name}")
    rv.use_event(slider, "change", lambda _widget, _event, data: on_apply(name, cast(data)))
    return slider


def comparison_options(model: DashboardDynamics, name: str, offered: Sequence[str]) -> dict[str, str]:
    """What comparison picker ``name`` offers, ``key -> shown text``: ``offered`` and anything already chosen;
    the models without the main one (it runs anyway); the control generator and a CT-trained model say what they
    are."""
    chosen = model.controls[name]
    keys = [key for key in unique_keys([*offered, *chosen])
            if name != "compare_models" or key != model.controls["model"]]
    show = (lambda key: generator_text(model.base, key)) if name == "compare_generators" else model_text
    return {key: show(key) for key in keys}


@solara.component
def MultiPick(name: str, label: str, options: dict, chosen: list, on_apply):
    """A multi-select of ``options`` (``key -> shown text``) as chips; each change applies at once."""
    return rv.Select(v_model=list(chosen), items=[{"text": text, "value": key} for key, text in options.items()],
                     on_v_model=lambda keys: on_apply(name, list(keys)), label=label, multiple=True, chips=True,
                     small_chips=True, deletable_chips=True, hide_details=True,
                     class_=f"recourse-control recourse-control-{name}")


@solara.component
def Pick(name: str, label: str, options: dict, chosen: str, on_apply):
    """A picker of ``options`` (``key -> shown text``, ``chosen`` added at the end if missing); a change applies
    at once."""
    shown = options if chosen in options else options | {chosen: chosen}
    items = [{"text": text, "value": key} for key, text in shown.items()]
    return rv.Select(v_model=chosen, items=items, on_v_model=lambda key: on_apply(name, key), label=label,
                     hide_details=True, class_=f"recourse-control recourse-control-{name}")


def trait_slider(model: DashboardDynamics, name: str) -> tuple[float, str]:
    """Where trait slider ``name`` sits and what its label adds: its number, or, while it keeps the scenario's
    distribution table (control ``None``), the table's centre and a note naming the table."""
    value = model.controls[name]
    if value is not None:
        return value, ""
    table = getattr(model.scenario.agents, name)
    return trait_centre(name, table), f"(scenario: {trait_text(table)}; move to replace)"


@solara.component
def AgentControls(params: dict, model: DashboardDynamics, on_apply):
    """The "Agents" controls (those of ``params`` marked ``agents``): pickers, sliders and the budget switch; the
    budget's amount and rule show while the switch is on, and the groups picker offers the current data's
    attributes (see :func:`~recourse_sim.viz.agent_controls.group_options`)."""
    c = model.controls
    with solara.Column(classes=["recourse-agent-controls"]) as column:
        for name, spec in params.items():
            if not isinstance(spec, dict) or not spec.get("agents"):
                continue
            if name in ("budget", "over_budget") and not c["budget_on"]:
                continue
            if spec["type"] == "Select":
                options = group_options(model.config.train, model.scenario.agents) if name == "groups" \
                    else spec["options"]
                Pick(name, spec["label"], options, c[name], on_apply)
            elif spec["type"] == "Switch":
                solara.Switch(label=spec["label"], value=bool(c[name]), classes=[f"recourse-control-{name}"],
                              on_value=lambda value, name=name: on_apply(name, bool(value)))
            else:
                value, note = trait_slider(model, name) if name in TRAITS else (c[name], "")
                Slider(name, spec, value, on_apply, note).key(f"agent-{name}")
    return column


@solara.component
def Controls(params: dict, model: DashboardDynamics, on_apply):
    """The settings; every value shown is the one that runs (a change is applied at once). After the generator
    picker come the chosen generator's own sliders, one per numeric keyword of its factory, then the comparison
    systems."""
    c = model.controls
    base = model.base
    with solara.Column(classes=["recourse-controls"]) as column:
        for name, spec in params.items():
            if not isinstance(spec, dict) or spec.get("keyword") or spec.get("agents"):
                continue
            if spec["type"] == "SelectMultiple":
                if name == "compare_generators":
                    solara.Text(COMPARISON_TEXT, classes=["recourse-compare-note"], style={"font-size": "0.85em"})
                MultiPick(name, spec["label"], comparison_options(model, name, spec["values"]), c[name], on_apply)
                continue
            if spec["type"] == "Select" and name == "generator":
                texts = {generator_text(base, key): key for key in spec["values"]}
                if c[name] not in texts.values():
                    texts[generator_text(base, c[name])] = c[name]
                solara.Select(spec["label"], values=list(texts), value=generator_text(base, c[name]),
                              on_value=lambda text, texts=texts: on_apply("generator", texts[text]))
                keywords = generator_controls(base, c["generator"], c)
                if not keywords:
                    solara.Text(f"{generator_text(base, c['generator'])} has no settings of its own.",
                                classes=["recourse-no-keywords"], style={"font-size": "0.85em"})
                for keyword, keyword_spec in keywords.items():
                    Slider(keyword, keyword_spec, c[keyword], on_apply).key(f"keyword-{keyword}")
            elif spec["type"] == "Select" and name == "model":
                Pick(name, spec["label"], {key: model_text(key) for key in spec["values"]}, c[name], on_apply)
            elif spec["type"] == "Select":
                values = spec["values"] if c[name] in spec["values"] else [*spec["values"], c[name]]
                solara.Select(spec["label"], values=values, value=c[name],
                              on_value=lambda value, name=name: on_apply(name, value))
            elif spec["type"] == "Checkbox":
                solara.Checkbox(label=spec["label"], value=bool(c[name]),
                                on_value=lambda value, name=name: on_apply(name, bool(value)))
            else:
                Slider(name, spec, c[name], on_apply)
    return column


COMPONENTS = [PopulationView, MetricsView, CostsView, GroupsView]
TITLE = "recourse_sim · endogenous recourse dynamics"


def initial_state(scenario_path: str | None = None) -> tuple[dict, DashboardDynamics]:
    """The controls for ``scenario_path`` (or ``$RECOURSE_SIM_SCENARIO``, or the small default) and the first
    simulation built from them."""
    scenario_path = scenario_path or os.environ.get(SCENARIO_ENV) or None
    params = model_params(base_scenario(scenario_path), scenario_path)
    return params, DashboardDynamics(**initial_values(params))


@solara.component
def Dashboard(params: dict, first: DashboardDynamics):
    """The page: "Simulation" (Reset, play/pause, Step, round), "Settings" and "Agents" in the sidebar, views in
    the main area. ``first`` is the simulation to show first."""
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
        # Only when the run ended by itself: after a pause or a Reset there is nothing to change, and a render from
        # this thread could then race the page's own.
        if playing.value:
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
        with solara.Card("Agents"):
            solara.Text(AGENTS_TEXT, style={"font-size": "0.85em"})
            AgentControls(params, current, apply)
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
