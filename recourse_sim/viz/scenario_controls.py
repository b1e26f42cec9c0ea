"""The dashboard's scenario side: pure functions that turn the dashboard's controls into a scenario.

What the controls offer and where each starts (the picker keys of models and generators, one slider per numeric
keyword of a generator's factory, read from its signature, with the ranges of :data:`KEYWORD_RANGES`), how a
set of control values is completed and checked (:func:`resolve_controls`), and the
:class:`~recourse_sim.experiments.Scenario` they describe (:func:`dashboard_scenario`). The controls' specs
(:func:`model_params`) are in Mesa's ``model_params`` format. Every default has one home and is read from
there: the scenario file (``$RECOURSE_SIM_SCENARIO``) or the embedded default scenario, a generator factory's
signature, :class:`SimulationConfig`, ``AgentSettings`` (see :mod:`~recourse_sim.viz.agent_controls`).

The model built from the controls is :class:`~recourse_sim.viz.dashboard_model.DashboardDynamics`; the page is
:mod:`recourse_sim.viz.dashboard`. This module does not import Solara.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from recourse_sim.data import DATASETS
from recourse_sim.experiments import Scenario
from recourse_sim.experiments.scenario import ModelConfig
from recourse_sim.generators import GENERATORS
from recourse_sim.generators.control import CONTROL
from recourse_sim.models import MODELS
from recourse_sim.scenarios import embedded
from recourse_sim.simulation.config import SimulationConfig
from recourse_sim.training.parameters import SUPPORTED as CT_SUPPORTED
from recourse_sim.viz.agent_controls import AGENT_CONTROLS, agent_control_specs, agent_settings, agent_start

SCENARIO_ENV = "RECOURSE_SIM_SCENARIO"
#: The dashboard's starting sample size without a scenario file (the embedded default's 1,000 make a round slow).
SAMPLES = 400
FAST_BATCH = 32
CONTROL_TEXT = " (no recourse, control)"  # how the picker shows the no-recourse control
CT_TEXT = " (Counterfactual Training)"  # how the model pickers show a model trained with CT
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
