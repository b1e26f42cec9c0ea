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
  ranges come from :data:`KEYWORD_RANGES` (a keyword not listed there gets ``[0, 4 x default]``, integers
  ``[1, 4 x default]``).
- The model pickers (Model, and "Compare with models") offer every registered model, the JEM (``jem``)
  included, then each model Counterfactual Training can train, trained with it: ``mlp+ct``, shown as "mlp+ct
  (Counterfactual Training)", is the scenario entry ``{name = "mlp", training = "ct"}`` (:func:`model_keys`). A
  picked model runs as the scenario's entry of that model trained that way, else as its entry of that model (its
  architecture and epochs, trained as picked), else with the model's defaults. The defaults are the papers' (a JEM
  trains 100 epochs with 30 SGLD steps per optimiser step; CT searches counterfactuals every epoch), so building
  either takes seconds to tens of seconds on a CPU; a scenario file with fewer epochs makes them quicker.
- Where a value starts: every default has one home and the dashboard reads it from there. A generator's
  keywords start at the scenario entry's own values, else at its factory's defaults
  (``inspect.signature(GENERATORS[name])``); the dynamics (mu, rounds, seed) and the data come from the
  scenario. Without a scenario file the page starts from the embedded default scenario (its first model and
  generator, its mu and seed) with :class:`~recourse_sim.simulation.config.SimulationConfig`'s default number of
  rounds and the dashboard's own smaller sample (:data:`SAMPLES`).
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
- Views: the population in 2-D (PCA for d > 2) coloured by label and by received recourse, with the current
  decision boundary (several systems: one panel per system, :data:`POPULATION_COLUMNS` to a row, each with its
  own population, recipients and boundary on shared axes); metric trajectories (domain MMD, model MMD, test
  accuracy, validity) and the "Hidden costs of recourse" (those of :data:`COST_METRICS` the results hold:
  collateral rejections and approvals, lender loss, accuracy against the truth, movers truly improved, approval
  rate, recipients who acted, movers' own cost, cost and validity of recourse), under a line saying which share
  of the latest round's recipients acted (once they act otherwise than in the paper:
  ``AgentSettings.changes_behaviour``), updated every round,
  one line per system (hue: the generator, or "model / generator" when models differ). With groups, "Recourse by
  group" adds the approval rate, validity, share who acted and lender loss per group, one line per system x
  group, so that a gap recourse opens or widens between groups shows.

The page is built from Solara components rather than Mesa's ``SolaraViz`` (whose Reset-only parameter
handling, page tabs and threading switches a user cannot act on changed from one Mesa release to the next);
the model is :class:`DashboardDynamics`, a Mesa model (:class:`~recourse_sim.simulation.RecourseDynamics`)
built from the controls (the main model x generator, plus any comparison systems, one repetition; a generator's
keywords and the agent controls are keywords of the model too, ``DashboardDynamics(generator="eccco",
lambda_set_size=0.2, compare_generators=["generic", "none"], compliance=0.5, groups="random")``), with shift
metrics every round and no permutation test (p-values are skipped to keep a round interactive).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import textwrap
import time
import traceback
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
import reacton.ipyvuetify as rv
import solara
from matplotlib.figure import Figure

from recourse_sim.data import DATASETS
from recourse_sim.experiments import Scenario
from recourse_sim.experiments.scenario import ModelConfig
from recourse_sim.generators import GENERATORS
from recourse_sim.generators.control import CONTROL
from recourse_sim.models import MODELS
from recourse_sim.reporting.populations import (
    Projection,
    draw_population,
    padded_limits,
    plot_population_snapshot,
)
from recourse_sim.reporting.trajectories import plot_trajectory_grid
from recourse_sim.scenarios import embedded
from recourse_sim.simulation import RecourseDynamics
from recourse_sim.simulation.config import SimulationConfig
from recourse_sim.training.parameters import SUPPORTED as CT_SUPPORTED
from recourse_sim.viz.agent_controls import (
    AGENT_CONTROLS,
    AGENTS_TEXT,
    TRAITS,
    acted_line,
    agent_control_specs,
    agent_settings,
    agent_start,
    agents_changed,
    controls_for_dataset,
    group_options,
    plot_groups,
    trait_centre,
    trait_text,
)

SCENARIO_ENV = "RECOURSE_SIM_SCENARIO"
DASHBOARD_METRICS = ("domain_mmd", "model_mmd", "accuracy", "validity")
#: The "Hidden costs of recourse" figure: a panel for each of these that the results hold (others are skipped).
COST_METRICS = ("collateral_rejections", "collateral_approvals", "lender_loss", "truth_accuracy", "truly_improved",
                "approval_rate", "acted_share", "agent_cost", "recourse_cost", "validity")
#: Population panels per row when several systems run side by side (more wrap onto further rows).
POPULATION_COLUMNS = 2
#: The dashboard's starting sample size without a scenario file (the embedded default's 1,000 make a round slow).
SAMPLES = 400
FAST_BATCH = 32
CONTROL_TEXT = " (no recourse, control)"  # how the picker shows the no-recourse control
CT_TEXT = " (Counterfactual Training)"  # how the model pickers show a model trained with CT
#: What the page says above the comparison pickers.
COMPARISON_TEXT = ("Side by side: each added generator or model runs on the same people, stepping together, with "
                   "the same recipients each round; an added generator runs at its scenario entry's values, else its "
                   "factory's defaults (the sliders set the main one).")
PLAY_PAUSE_S = 0.05  # breathing time between rounds while playing, so the page can redraw
#: The controls that are not a generator's keyword (no registered generator may take a keyword of these names).
SCENARIO_CONTROLS = ("dataset", "n_samples", "model", "generator", "compare_generators", "compare_models",
                     "recourse_share", "rounds", "seed", "fast_retraining", *AGENT_CONTROLS)
#: How a comparison generator is labelled when its picker key is already the main system's label.
SAME_NAME_SUFFIX = {"registry": " (defaults)", "scenario": " (scenario values)"}
#: Generator keywords with a symbol: (slider label, short form in the settings line); others show the keyword.
KEYWORD_LABELS = {"threshold": ("γ: decision threshold", "γ"), "lambda_cost": ("λ₁: cost weight", "λ₁")}
#: Slider range (min, max, step) per generator keyword; the default is always inside (the range widens to it).
#: Another keyword gets :func:`fallback_range`.
KEYWORD_RANGES = {
    "threshold": (0.05, 0.95, 0.05),
    "lambda_cost": (0.0, 2.0, 0.05),
    "lambda_extcost": (0.0, 10.0, 0.1),
    "lambda_diversity": (0.0, 5.0, 0.1),
    "lambda_energy": (0.0, 2.0, 0.05),
    "lambda_set_size": (0.0, 1.0, 0.01),
    "coverage": (0.5, 0.99, 0.01),
    "temperature": (0.01, 1.0, 0.01),
    "kappa": (0.0, 4.0, 0.1),
    "tolerance": (0.0001, 0.05, 0.0001),
    "step_size": (0.001, 0.2, 0.001),
    "max_steps": (10, 500, 10),
    "n_neighbours": (1, 200, 1),
    "epsilon": (0.01, 1.0, 0.01),
    "n": (1, 50, 1),
}


def simulation_default(name: str):
    """A dynamics setting's default from its one home, the field of :class:`SimulationConfig`."""
    return next(f.default for f in dataclasses.fields(SimulationConfig) if f.name == name)


def base_scenario(path: str | os.PathLike | None = None) -> Scenario:
    """The scenario the controls start from: ``path``, else ``$RECOURSE_SIM_SCENARIO``, else a small default
    (see :func:`_default_scenario`)."""
    path = path or os.environ.get(SCENARIO_ENV) or None
    if path:
        return Scenario.from_toml(path)
    return _default_scenario()


@lru_cache(maxsize=1)
def _default_scenario() -> Scenario:
    """The embedded default scenario with its first model and generator (logistic regression, generic recourse),
    :class:`SimulationConfig`'s default number of rounds (the paper's 50), :data:`SAMPLES` samples and
    :class:`~recourse_sim.simulation.agents.AgentSettings`' defaults (the reference protocol)."""
    default = Scenario.from_toml(embedded("default"))
    raw = default.model_dump(mode="json", exclude_none=True)
    raw.pop("agents", None)  # the agent controls start at AgentSettings' own defaults
    raw.update(name="dashboard", rounds=simulation_default("rounds"),
               data={**raw["data"], "n_samples": SAMPLES}, models=raw["models"][:1], generators=raw["generators"][:1])
    return Scenario.from_dict(raw)


# ------------------------------------------------------------------------------------------------- models
def ct_keys() -> dict[str, str]:
    """``picker key -> model name`` of every registered model Counterfactual Training can train, trained with it:
    the key is the scenario's own name for ``{name = "mlp", training = "ct"}`` (:attr:`ModelConfig.key`,
    ``mlp+ct``)."""
    return {ModelConfig(name=name, training="ct").key: name for name in MODELS
            if issubclass(MODELS[name], CT_SUPPORTED)}


def model_keys() -> list[str]:
    """What the model pickers offer: every registered model (the JEM included), then each that Counterfactual
    Training can train, trained with it (see :func:`ct_keys`)."""
    return [*MODELS, *ct_keys()]


def model_key(entry: ModelConfig) -> str:
    """How the pickers name a scenario's model entry: its model, with CT's key where it is trained with CT."""
    return entry.name if entry.training_params is None else ModelConfig(name=entry.name, training="ct").key


def model_text(key: str) -> str:
    """How the pickers show model ``key``: a CT-trained model says so."""
    return key + CT_TEXT if key in ct_keys() else key


def _trained_with_ct(entry: Mapping) -> bool:
    return ModelConfig.model_validate(dict(entry)).training_params is not None


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


def _numeric_kind(parameter: inspect.Parameter) -> type | None:
    """``float`` or ``int`` for a keyword with a numeric default (by its annotation, a type or a string, else by
    the default's type); None for any other keyword (a bool, a string, a ``None`` default)."""
    default = parameter.default
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return None
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return type(default)
    words = set(re.findall(r"\w+", annotation if isinstance(annotation, str) else
                           getattr(annotation, "__name__", None) or str(annotation)))
    return float if "float" in words else int if "int" in words else type(default)


def generator_keywords(name: str) -> dict[str, tuple[type, int | float]]:
    """The numeric keywords of generator ``name``'s factory in signature order, ``keyword -> (float or int,
    default)``: what the dashboard offers a slider for, read from ``inspect.signature`` (their one home)."""
    keywords = {}
    for keyword, parameter in inspect.signature(GENERATORS[name]).parameters.items():
        kind = _numeric_kind(parameter)
        if kind is not None:
            keywords[keyword] = (kind, kind(parameter.default))
    return keywords


def all_generator_keywords() -> set[str]:
    """Every keyword of every registered generator's factory."""
    return {keyword for factory in GENERATORS.values() for keyword in inspect.signature(factory).parameters}


def fallback_range(kind: type, default: float) -> tuple[float, float, float]:
    """A slider range for a keyword :data:`KEYWORD_RANGES` does not list: ``[0, 4 x default]`` for a number
    (a step of a tenth of the default's leading digit), ``[1, 4 x default]`` for an integer."""
    if kind is int:
        return 1, max(4 * int(default), 2), 1
    span = abs(float(default)) or 1.0
    step = 10.0 ** (math.floor(math.log10(span)) - 1)
    return (0.0, 4 * span, step) if default >= 0 else (-4 * span, 0.0, step)


def keyword_control(keyword: str, kind: type, value: float) -> dict:
    """The slider for one generator keyword (Mesa's ``model_params`` format, with ``keyword: True``)."""
    low, high, step = KEYWORD_RANGES.get(keyword) or fallback_range(kind, value)
    return {"type": "SliderInt" if kind is int else "SliderFloat", "value": kind(value),
            "min": kind(min(low, value)), "max": kind(max(high, value)), "step": kind(step),
            "label": KEYWORD_LABELS.get(keyword, (keyword,))[0], "keyword": True}


def generator_values(base: Scenario, key: str) -> dict:
    """The starting values of picker entry ``key``'s numeric keywords: the entry's own, else its factory's
    defaults."""
    entry = generator_entry(base, key)
    values = {}
    for keyword, (kind, default) in generator_keywords(entry["name"]).items():
        value = entry.get(keyword, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[keyword] = kind(value)
    return values


def generator_controls(base: Scenario, key: str, values: Mapping | None = None) -> dict[str, dict]:
    """One slider per numeric keyword of picker entry ``key``'s generator, at ``values`` (default: the entry's
    own values, else its factory's defaults; see :func:`generator_values`)."""
    start = generator_values(base, key) | dict(values or {})
    name = generator_entry(base, key)["name"]
    return {keyword: keyword_control(keyword, kind, start.get(keyword, default))
            for keyword, (kind, default) in generator_keywords(name).items()}


def generator_parameters(name: str, values: Mapping) -> dict:
    """``values``' entries that are numeric keywords of generator ``name``'s factory, as their types (an integer
    keyword's whole-number float becomes an int); other entries are dropped."""
    params = {}
    for keyword, (kind, _default) in generator_keywords(name).items():
        if keyword in values:
            value = values[keyword]
            params[keyword] = kind(value) if kind is float or float(value).is_integer() else value
    return params


def check_controls(controls: Mapping) -> None:
    """Refuse a control that is neither one of :data:`SCENARIO_CONTROLS` nor a keyword of a registered generator
    (a typo; a keyword of another generator than the chosen one is dropped instead)."""
    unknown = set(controls) - set(SCENARIO_CONTROLS) - all_generator_keywords() - {"scenario"}
    if unknown:
        raise TypeError(f"unknown dashboard controls {sorted(unknown)}; the controls are {', '.join(SCENARIO_CONTROLS)}"
                        " and the keywords of the chosen generator")


def resolve_controls(base: Scenario, controls: Mapping) -> dict:
    """Every control's value: ``controls``' own (``None``: not set); the rest from ``base`` (its data, first
    model, first generator entry, mu, rounds, seed, ``[agents]``; no comparison systems) and, for the chosen
    generator's numeric keywords, from the entry's own values, else its factory's defaults. Keywords the chosen
    generator does not take are dropped, and so is a comparison model that is the main one. A ``budget`` given
    without ``budget_on`` switches the budget on; a trait left at ``None`` keeps ``base``'s distribution table
    (see :func:`~recourse_sim.viz.agent_controls.agent_start`)."""
    check_controls(controls)
    start = {"dataset": base.data.name, "n_samples": int(base.data.n_samples or SAMPLES),
             "model": model_key(base.models[0]), "generator": entry_keys(base)[0], "compare_generators": [],
             "compare_models": [], "recourse_share": float(base.recourse_share), "rounds": int(base.rounds),
             "seed": int(base.seed), "fast_retraining": False, **agent_start(base.agents)}
    given = {k: v for k, v in controls.items() if v is not None}
    if "budget" in given and "budget_on" not in given:
        given["budget_on"] = True
    resolved = start | {k: v for k, v in given.items() if k in SCENARIO_CONTROLS}
    resolved["compare_generators"] = unique_keys(resolved["compare_generators"])
    resolved["compare_models"] = [m for m in unique_keys(resolved["compare_models"]) if m != resolved["model"]]
    name = generator_entry(base, resolved["generator"])["name"]
    return resolved | generator_values(base, resolved["generator"]) | generator_parameters(name, given)


def unique_keys(keys) -> list[str]:
    """A comparison control's keys as a list in their order, each once (a single string is one key)."""
    return list(dict.fromkeys([keys] if isinstance(keys, str) else keys))


def controls_for_generator(base: Scenario, controls: dict, key: str) -> dict:
    """``controls`` with generator ``key`` chosen and its own values in its sliders (the previous generator's
    keywords dropped)."""
    keywords = all_generator_keywords()
    return {k: v for k, v in controls.items() if k not in keywords} | {"generator": key} | generator_values(base, key)


def scenario_notes(base: Scenario) -> list[str]:
    """What the page says about a scenario with several models or generators (the page starts with the first of
    each; the others can be picked instead, or added as comparison systems)."""
    notes = []
    for kind, entries in (("model", [m.key for m in base.models]), ("generator", entry_keys(base))):
        if len(entries) > 1:
            notes.append(f"The scenario lists {len(entries)} {kind}s ({', '.join(entries)}); the dashboard starts "
                         f"with the first, {entries[0]}. Pick another under {kind.capitalize()}, or add others under "
                         f"\"Compare with {kind}s\" to run them side by side on the same people.")
    return notes


def comparison_entry(base: Scenario, key: str, main_label: str) -> dict:
    """The generator configuration of comparison entry ``key``: its scenario entry's own values, else its
    factory's defaults (the sliders set the main generator only). It is labelled ``key``, or, where that is the
    main system's label (the same generator compared with itself as the sliders set it), ``key`` with
    :data:`SAME_NAME_SUFFIX`."""
    entry = generator_entry(base, key)
    source = "scenario" if key in entry_keys(base) else "registry"
    return entry | {"label": key + SAME_NAME_SUFFIX[source] if key == main_label else key}


def comparison_text(base: Scenario, key: str) -> str:
    """How the settings line shows comparison entry ``key``: its name and the values it runs with, e.g.
    ``gravitational (defaults)``, ``generic_gamma0.9 (γ = 0.9)``, ``none (no recourse, control)``."""
    entry = generator_entry(base, key)
    if entry["name"] == CONTROL:
        return generator_text(base, key)
    params = {k: v for k, v in entry.items() if k not in ("name", "label")}
    values = ", ".join(keyword_text(k, v) for k, v in params.items())
    return f"{key} ({values or 'defaults'})"


def keyword_text(keyword: str, value) -> str:
    """One generator keyword as the settings line shows it, e.g. ``γ = 0.5``, ``n_neighbours = 50``."""
    shown = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
    return f"{KEYWORD_LABELS.get(keyword, (None, keyword))[1]} = {shown}"


# ------------------------------------------------------------------------------------------ the scenario
def dashboard_scenario(
    base: Scenario,
    *,
    dataset: str,
    n_samples: int,
    model: str,
    generator: str,
    recourse_share: float,
    rounds: int,
    seed: int,
    fast_retraining: bool,
    compare_generators: Sequence[str] = (),
    compare_models: Sequence[str] = (),
    **options,
) -> Scenario:
    """The controls' systems (one repetition) and agents; everything else from ``base``.

    The main system is ``model`` x ``generator``: ``generator`` is a picker entry (see :func:`generator_keys`);
    ``options`` are the agent controls (:data:`~recourse_sim.viz.agent_controls.AGENT_CONTROLS`; those not
    given keep ``base``'s ``[agents]``, see :func:`~recourse_sim.viz.agent_controls.agent_settings`) and the
    generator's numeric keywords (those not given start at the entry's own values, else the factory's defaults;
    keywords of other generators are dropped), each passed to the factory explicitly. ``compare_generators``
    (picker entries, at their own values: see :func:`comparison_entry`) and ``compare_models`` (registered
    models) add comparison systems: every model x every generator, all on the same population with the same
    recipients (the scenario's ``pairing``). With neither, one system runs."""
    check_controls(options)
    generator_params = {k: v for k, v in options.items() if k not in AGENT_CONTROLS}
    raw = base.model_dump(mode="json", exclude_none=True)
    data = dict(raw["data"]) if dataset == base.data.name else {"name": dataset}
    data["n_samples"] = int(n_samples)
    models = [model_config(raw, name, fast_retraining) for name in unique_keys([model, *unique_keys(compare_models)])]
    gen_cfg = generator_entry(base, generator)
    gen_cfg["label"] = gen_cfg["name"]  # the entry's label may no longer describe what the sliders set
    gen_cfg.update(generator_parameters(gen_cfg["name"], generator_values(base, generator) | generator_params))
    compared = [comparison_entry(base, key, gen_cfg["label"]) for key in unique_keys(compare_generators)]
    raw.update(
        name="dashboard", seed=int(seed), rounds=int(rounds), repetitions=1, recourse_share=float(recourse_share),
        data=data, models=models, generators=[gen_cfg, *compared], agents=agent_settings(base.agents, options),
        metrics={**raw["metrics"], "evaluate_every": 1, "permutations": 0},
    )
    return Scenario.from_dict(raw, source="dashboard")


def model_config(raw: Mapping, key: str, fast_retraining: bool) -> dict:
    """Model picker entry ``key``'s configuration (a registered model, or one trained with Counterfactual Training,
    ``mlp+ct``: see :func:`model_keys`): the scenario ``raw``'s first entry of that model trained that way, else its
    first entry of that model (its architecture and training settings, trained as picked), else the model's
    defaults; unlabelled (so it is named by its key), with :data:`FAST_BATCH` retraining when asked."""
    ct = key in ct_keys()
    name = ct_keys().get(key, key)
    entries = [m for m in raw["models"] if m["name"] == name]
    same = [m for m in entries if _trained_with_ct(m) == ct]
    config = dict((same or entries or [{"name": name}])[0])
    config.pop("label", None)
    if not ct:
        config.pop("training", None)
    elif not same:
        config["training"] = "ct"
    if fast_retraining:
        config["retrain_batch_size"] = FAST_BATCH
    return config


def offered_datasets(base: Scenario, n_samples: int | None = None) -> list[str]:
    """The datasets whose data loads (and splits) at ``n_samples`` (default: ``base``'s) with ``base``'s
    settings: the dashboard offers only these. ``csv`` only when ``base`` reads one."""
    n = int(n_samples or base.data.n_samples or SAMPLES)
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

    Every keyword is a control (see the module docstring), the chosen generator's numeric keywords and the agent
    controls included (``generator="eccco", lambda_set_size=0.2, compliance=0.5, groups="random"``); a control
    left out (``None``) starts where the page starts (see :func:`resolve_controls`). ``compare_generators`` and
    ``compare_models`` add comparison systems that run on the same population, in lock-step, with the same
    recipients (``compare_generators=["generic", "none"]``); system 0 is always the main one. ``scenario`` (a
    TOML path, fixed) supplies the rest. A configuration that cannot be built falls back to the same setup with
    the agent settings the page started with (the scenario's), then without its comparison systems, then to the generic generator with its
    starting values, then to the starting setup (``self.error`` says why, ``self.controls`` holds what runs, and
    the page shows both); an error in a round stops the run and is shown instead of crashing the page.
    """

    def __init__(
        self,
        dataset: str | None = None,
        n_samples: int | None = None,
        model: str | None = None,
        generator: str | None = None,
        recourse_share: float | None = None,
        rounds: int | None = None,
        seed: int | None = None,
        fast_retraining: bool = False,
        scenario: str | None = None,
        compare_generators: Sequence[str] | None = None,
        compare_models: Sequence[str] | None = None,
        **options,
    ) -> None:
        base = base_scenario(scenario)
        self.scenario_path = scenario
        self.base = base
        given = dict(dataset=dataset, n_samples=n_samples, model=model, generator=generator,
                     recourse_share=recourse_share, rounds=rounds, seed=seed, fast_retraining=fast_retraining,
                     compare_generators=compare_generators or None, compare_models=compare_models or None)
        check_controls(options)  # a keyword no generator takes is a mistake, not a fallback
        self.error: str | None = None
        alone = {"compare_generators": None, "compare_models": None}
        scenario_agents = {k: v for k, v in options.items() if k not in AGENT_CONTROLS}
        fallbacks = [  # (what the page says, base scenario, controls)
            ("", base, given | options),
            ("running with the agent settings the page started with", base, given | scenario_agents),
            ("running without the comparison systems", base, given | options | alone),
            ("showing the generic generator instead", base, given | {"generator": "generic"}),
            ("showing the default setup instead", base_scenario(None), {}),
        ]
        tried = []
        for note, source, candidate in fallbacks:
            if (source, candidate) in tried:  # e.g. "without the comparison systems" when there were none
                continue
            tried.append((source, candidate))
            try:
                controls = resolve_controls(source, candidate)
                self.scenario = dashboard_scenario(source, **controls)
                config = self.scenario.build()
            except Exception as error:  # noqa: BLE001 - show it on the page, fall back to something that runs
                what = f"{generator or entry_keys(base)[0]!r} on {dataset or base.data.name!r}"
                self.error = self.error or f"could not build {what}: {error}"
                continue
            self.base = source
            self.controls = controls
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
        """The main system (the chosen model x the chosen generator)."""
        return self.systems[0]

    @property
    def compares_models(self) -> bool:
        """Whether several models run (then a system is named ``model / generator``)."""
        return len(self.config.models) > 1

    def system_names(self) -> list[str]:
        """Each system's name in the figures, in system order: its generator's label (``gravitational``,
        ``generic (defaults)``, ``none``), or ``model / generator`` when several models run."""
        return [f"{s.model} / {s.generator}" if self.compares_models else s.generator for s in self.systems]

    def settings_line(self) -> str:
        """The values behind the controls, every keyword passed to the main generator included, then each
        comparison generator with the values it runs with and the models, then the agent options that differ from
        the defaults (see :func:`~recourse_sim.viz.agent_controls.agents_changed`), e.g. ``generic · γ = 0.5 · λ₁
        = 0.1 · step_size = 0.01 · max_steps = 100 · vs gravitational (defaults) · vs none (no recourse, control)
        · μ = 0.05 · seed 42 · retraining: paper (batch 1) · agents: compliance = 0.5, groups = random``."""
        c = self.controls
        spec = self.scenario.generators[0]
        order = list(inspect.signature(GENERATORS[spec.name]).parameters)
        params = sorted(spec.params.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
        parts = [generator_text(self.base, c["generator"])]
        parts += [keyword_text(keyword, value) for keyword, value in params]
        parts += [f"vs {comparison_text(self.base, key)}" for key in c["compare_generators"]]
        if self.compares_models:
            parts.append("models: " + " vs ".join(self.config.models))
        parts += [f"μ = {c['recourse_share']:g}", f"seed {c['seed']}",
                  "retraining: " + (f"batches of {FAST_BATCH}" if c["fast_retraining"] else "paper (batch 1)")]
        changed = agents_changed(self.scenario.agents)
        if changed:
            parts.append("agents: " + ", ".join(changed))
        return " · ".join(parts)

    def title(self) -> str:
        """The data, the models and the generators, e.g. ``overlapping (n = 200, d = 2) · logistic_regression ·
        gravitational vs generic vs none (no recourse, control)``."""
        data = self.config.train
        n = data.n_samples + self.config.test.n_samples
        models = " vs ".join(self.config.models)
        return f"{data.name} (n = {n}, d = {data.n_features}) · {models} · {' vs '.join(self.generator_names())}"

    def generator_names(self) -> list[str]:
        """The generators as the page names them: the main one as its picker shows it, each comparison by its
        label; the no-recourse control says what it is."""
        labels = list(self.config.generators)
        names = [generator_text(self.base, self.controls["generator"])]
        return names + [label + ("" if self.config.generators[label].moves else CONTROL_TEXT) for label in labels[1:]]

    def status(self) -> str:
        """``Round 3 of 50 (running)``."""
        return f"Round {self.round} of {self.config.rounds} ({'running' if self.running else 'finished'})"


def rebuild(model: DashboardDynamics, /, **changes) -> DashboardDynamics:
    """A fresh simulation (round 0) with ``model``'s controls and ``changes``: what a control change and Reset
    do. Choosing a generator also loads its own values (the scenario entry's, else its factory's defaults)
    into its sliders; choosing a dataset drops a grouping by the previous data's attributes; setting a budget
    switches it on. ``model`` is positional-only: ``changes`` may hold the model control itself
    (``rebuild(current, model="jem")``)."""
    controls = dict(model.controls)
    if "generator" in changes and changes["generator"] != controls["generator"]:
        controls = controls_for_generator(model.base, controls, changes["generator"])
    if "dataset" in changes:
        controls = controls_for_dataset(controls, changes["dataset"])
    if "budget" in changes:
        changes.setdefault("budget_on", True)
    return DashboardDynamics(**(controls | changes), scenario=model.scenario_path)


# ------------------------------------------------------------------------------------------------ views
def population_figure(model: DashboardDynamics) -> Figure:
    """One system: its population by label and by received recourse (two panels). Several: one panel per system
    (see :func:`systems_population_figure`)."""
    if len(model.systems) > 1:
        return systems_population_figure(model)
    pop = model.population
    return plot_population_snapshot(
        pop.X[0].cpu().numpy(), pop.y[0].cpu().numpy(), model.scorer(0),
        recourse_round=pop.recourse_round[0].cpu().numpy(), current_round=model.round,
        projection=model.projection, title=f"Round {model.round}: {model.title()}",
        figure=Figure(figsize=(7.6, 3.6)),
    )


def systems_population_figure(model: DashboardDynamics) -> Figure:
    """One panel per system, side by side (:data:`POPULATION_COLUMNS` to a row, then wrapping): the same
    individuals, each system's own population by label with its recourse recipients ringed and its own decision
    boundary, all on the same axes so that who moved where compares across panels."""
    pop = model.population
    n = len(model.systems)
    columns = min(n, POPULATION_COLUMNS)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(3.8 * columns, 3.4 * rows + 0.3), layout="constrained")
    X = [pop.X[i].cpu().numpy() for i in range(n)]
    limits = padded_limits(np.concatenate([model.projection.transform(x) for x in X]))
    first = None
    for i, name in enumerate(model.system_names()):
        ax = figure.add_subplot(rows, columns, i + 1, sharex=first, sharey=first)
        first = first or ax
        draw_population(ax, X[i], pop.y[i].cpu().numpy(), colour_by="label_and_recourse",
                        recourse_round=pop.recourse_round[i].cpu().numpy(), current_round=model.round,
                        predict_proba=model.scorer(i), projection=model.projection, limits=limits,
                        title=name + (CONTROL_TEXT if model.is_control[i] else ""), legend=i == 0)
    # Several systems make a long title: wrap it to the figure's width (about 13 characters an inch at 10 pt).
    title = textwrap.fill(f"Round {model.round}: {model.title()}", width=int(13 * figure.get_figwidth()))
    figure.suptitle(title, fontsize=10)
    return figure


def results_by_system(model: DashboardDynamics) -> tuple[pd.DataFrame, str]:
    """The results with a column naming each row's system as the figures do (see
    :meth:`DashboardDynamics.system_names`), and that column's name: the hue of the trajectories."""
    frame = model.results()
    hue = "model / generator" if model.compares_models else "generator"
    names = dict(zip((s.label for s in model.systems), model.system_names()))
    return frame.assign(**{hue: frame["system"].map(names)}), hue


def metrics_figure(model: DashboardDynamics) -> Figure:
    """The trajectories of :data:`DASHBOARD_METRICS`, one line per system (a legend when several run)."""
    frame, hue = results_by_system(model)
    legend = len(model.systems) > 1
    figure = Figure(figsize=(7.0, 5.0 + 0.5 * legend), layout="constrained")
    return plot_trajectory_grid(frame, DASHBOARD_METRICS, row=None, hue=hue, figure=figure, col_wrap=2,
                                legend=legend)


def present_metrics(frame: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    """``metrics`` that ``frame`` holds a value for, in their order."""
    held = set(frame.loc[frame["value"].notna(), "metric"])
    return [metric for metric in metrics if metric in held]


def costs_figure(model: DashboardDynamics) -> Figure:
    """"Hidden costs of recourse" for ``model`` (see :func:`plot_costs`)."""
    frame, hue = results_by_system(model)
    return plot_costs(frame, hue, legend=len(model.systems) > 1)


def plot_costs(frame: pd.DataFrame, hue: str, legend: bool) -> Figure:
    """"Hidden costs of recourse": the trajectories of those :data:`COST_METRICS` that ``frame`` holds, one line
    per ``hue`` value; before any is measured, a note says so."""
    metrics = present_metrics(frame, COST_METRICS)
    columns = 2 if len(metrics) <= 4 else 3
    rows = max(1, math.ceil(len(metrics) / columns))
    figure = Figure(figsize=(7.0, 2.5 * rows + 0.4 + 0.5 * legend), layout="constrained")
    if metrics:
        plot_trajectory_grid(frame, metrics, row=None, hue=hue, figure=figure, col_wrap=columns, legend=legend)
    else:
        figure.text(0.5, 0.5, "Nothing measured yet: the costs appear once recourse has been given (round 1).",
                    ha="center", va="center", color="0.4")
    figure.suptitle("Hidden costs of recourse", fontsize=10)
    return figure


def groups_figure(model: DashboardDynamics) -> Figure:
    """"Recourse by group" for ``model``, one line per system x group (see
    :func:`~recourse_sim.viz.agent_controls.plot_groups`)."""
    frame, hue = results_by_system(model)
    return plot_groups(frame, hue, several=len(model.systems) > 1)


def acted_text(model: DashboardDynamics) -> str:
    """Who acted on the latest round's recourse, per system (see
    :func:`~recourse_sim.viz.agent_controls.acted_line`); the no-recourse control is left out: its recipients are
    given nothing to act on."""
    frame, hue = results_by_system(model)
    controls = [s.label for s, control in zip(model.systems, model.is_control.tolist()) if control]
    return acted_line(frame[~frame["system"].isin(controls)], hue)


def has_groups(model: DashboardDynamics) -> bool:
    """Whether ``model``'s individuals fall into several groups (the agents' ``groups``)."""
    return len(model.people.group_names) > 1


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
def model_params(base: Scenario, scenario_path: str | None = None) -> dict:
    """The controls (Mesa's ``model_params`` format: ``type``, ``value``, range, ``label``), starting from
    ``base``'s values, with one slider per numeric keyword of ``base``'s first generator (marked ``keyword``;
    the page shows the chosen generator's, see :func:`generator_controls`), the comparison systems
    (``SelectMultiple``, none at first) and the agent controls (marked ``agents``, starting at ``base``'s
    ``[agents]``, see :func:`~recourse_sim.viz.agent_controls.agent_control_specs`); ``scenario`` is the fixed
    path."""
    start = resolve_controls(base, {})
    return {
        "dataset": {"type": "Select", "value": start["dataset"], "values": offered_datasets(base), "label": "Dataset"},
        "n_samples": {"type": "SliderInt", "value": start["n_samples"], "min": 100, "max": 5000, "step": 100,
                      "label": "Samples (n)"},
        "model": {"type": "Select", "value": start["model"], "values": model_keys(), "label": "Model"},
        "generator": {"type": "Select", "value": start["generator"], "values": generator_keys(base),
                      "label": "Generator"},
        **generator_controls(base, start["generator"]),
        "compare_generators": {"type": "SelectMultiple", "value": start["compare_generators"],
                               "values": generator_keys(base), "label": "Compare with generators"},
        "compare_models": {"type": "SelectMultiple", "value": start["compare_models"], "values": model_keys(),
                           "label": "Compare with models"},
        "recourse_share": {"type": "SliderFloat", "value": start["recourse_share"], "min": 0.01, "max": 0.5,
                           "step": 0.01, "label": "μ: share given recourse per round"},
        "rounds": {"type": "SliderInt", "value": start["rounds"], "min": 1, "max": 200, "step": 1, "label": "Rounds"},
        "seed": {"type": "SliderInt", "value": start["seed"], "min": 0, "max": 1000, "step": 1, "label": "Seed"},
        "fast_retraining": {"type": "Checkbox", "value": start["fast_retraining"],
                            "label": f"Fast retraining (batches of {FAST_BATCH})"},
        **agent_control_specs(base.agents),
        "scenario": scenario_path,
    }


def initial_values(params: dict) -> dict:
    return {k: (v["value"] if isinstance(v, dict) else v) for k, v in params.items()}


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
    keys = [key for key in unique_keys([*offered, *chosen]) if name != "compare_models" or key != model.controls["model"]]
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
