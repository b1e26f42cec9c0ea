"""The dashboard's model: :class:`DashboardDynamics`, the Mesa model (a
:class:`~recourse_sim.simulation.RecourseDynamics`) built from the dashboard's controls, and :func:`rebuild`, what a
control change and Reset do.

The controls are turned into a scenario by :mod:`~recourse_sim.viz.scenario_controls`; the model's figures are
drawn by :mod:`~recourse_sim.viz.dashboard_figures` and shown by the page, :mod:`recourse_sim.viz.dashboard`.
This module does not import Solara.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Sequence

from recourse_sim.generators import GENERATORS
from recourse_sim.reporting.populations import Projection
from recourse_sim.simulation import RecourseDynamics
from recourse_sim.viz.agent_controls import AGENT_CONTROLS, agents_changed, controls_for_dataset
from recourse_sim.viz.scenario_controls import (
    CONTROL_TEXT,
    FAST_BATCH,
    base_scenario,
    check_controls,
    comparison_text,
    controls_for_generator,
    dashboard_scenario,
    entry_keys,
    generator_text,
    keyword_text,
    resolve_controls,
)


class DashboardDynamics(RecourseDynamics):
    """The simulation behind the dashboard: a :class:`RecourseDynamics` built from the dashboard's controls.

    Every keyword is a control (see :mod:`recourse_sim.viz.dashboard`), the chosen generator's numeric keywords and
    the agent controls included (``generator="eccco", lambda_set_size=0.2, compliance=0.5, groups="random"``); a
    control left out (``None``) starts where the page starts (see
    :func:`~recourse_sim.viz.scenario_controls.resolve_controls`). ``compare_generators`` and ``compare_models`` add
    comparison systems that run on the same population, in lock-step, with the same recipients
    (``compare_generators=["generic", "none"]``); system 0 is always the main one. ``scenario`` (a TOML path, fixed)
    supplies the rest. A configuration that cannot be built falls back to the same setup with the agent settings the
    page started with (the scenario's), then without its comparison systems, then to the generic generator with its
    starting values, then to the starting setup (``self.error`` says why, ``self.controls`` holds what runs, and the
    page shows both); an error in a round stops the run and is shown instead of crashing the page.
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
