"""The Mesa model of endogenous recourse dynamics.

Mesa provides time (``steps``), the seeded random generator (``rng``) and the ``DataCollector``; the state
is tensors owned by the model (a :class:`Population`, the individuals' traits (:class:`Agents`) and one stacked
classifier per model configuration), never one Python object per individual. One ``step()`` is one round of
Algorithm 1 of Altmeyer et al. (SaTML 2023): choose recipients -> batched recourse -> individuals act on it
(:mod:`~recourse_sim.simulation.agents`) and take a label (:mod:`~recourse_sim.simulation.outcome`) -> retrain
-> collect.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import pandas as pd
import torch

from recourse_sim.cores import small_tensor_threads
from recourse_sim.device import resolve_device
from recourse_sim.generators.api import make_context
from recourse_sim.generators.engine import search
from recourse_sim.generators.latent import LatentCache
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.metrics.catalogue import RELIABILITY_LAGS, group_metric
from recourse_sim.metrics.hidden_costs import (
    approval_rate, collateral_flips, lender_loss, truly_improved, truth_accuracy,
)
from recourse_sim.metrics.recourse import masked_mean, recourse_cost, validity
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.simulation.agents import Agents
from recourse_sim.simulation.config import DEFAULT_SEED, SimulationConfig, System
from recourse_sim.simulation.evaluation import ShiftEvaluator
from recourse_sim.simulation.objective_terms import implemented_terms
from recourse_sim.simulation.outcome import OutcomeModel, resolve_truth
from recourse_sim.simulation.population import Population, choose_recipients


@contextmanager
def _cheap_module_lookup() -> Iterator[None]:
    """Mesa's module loggers find their module with ``inspect.getmodule(inspect.stack()[1][0])``: the stack reads
    the source line of every frame on the import stack, and ``getmodule`` scans all of ``sys.modules`` (about
    1,500 once torch is loaded) on each of its 79 calls, 0.2 s of the default run. While Mesa imports, the
    stack carries no source lines and a frame's module is read from the frame's globals (the same module)."""
    stack, getmodule = inspect.stack, inspect.getmodule

    def module_of(thing: object, _filename: str | None = None):
        if isinstance(thing, FrameType) and thing.f_globals.get("__name__") in sys.modules:
            return sys.modules[thing.f_globals["__name__"]]
        return getmodule(thing, _filename)

    inspect.stack, inspect.getmodule = (lambda context=1: stack(0)), module_of
    try:
        yield
    finally:
        inspect.stack, inspect.getmodule = stack, getmodule


with _cheap_module_lookup():
    import mesa

METRIC_COLUMNS = ["system", "model", "generator", "repetition", "round", "metric", "value"]


@dataclass
class ModelStack:
    """The classifiers of every system that share one model configuration, stacked along a system axis."""

    name: str
    classifier: TorchClassifier
    systems: torch.Tensor  # global system indices, in stack order
    generators: list[GeneratorSpec]
    latent: torch.Tensor  # stack positions of the systems whose generator searches a VAE's latent space


class RecourseDynamics(mesa.Model):
    """Simulate every (model x generator x repetition) system of ``config`` in lock-step.

    Parameters
    ----------
    config:
        The experiment (data, models, generators, rounds, mu, metric settings).
    seed:
        Drives everything: Mesa's ``rng``, torch generators, model initialisation, recipient draws.
    """

    @small_tensor_threads()
    def __init__(self, config: SimulationConfig, seed: int = DEFAULT_SEED) -> None:
        super().__init__(rng=seed)
        self.config = config
        self.device = resolve_device(config.device)
        self.torch_rng = torch.Generator(device=self.device).manual_seed(self._draw_seed())
        self.round = 0
        self.systems = [
            System(index=i, model=m, generator=g, repetition=r)
            for i, (m, r, g) in enumerate(
                (m, r, g) for m in config.models for r in range(config.repetitions) for g in config.generators
            )
        ]
        train, test = config.train, config.test
        X_train, y_train = train.X.to(self.device), train.y.to(self.device)
        self.population = Population.replicate(X_train, y_train, len(self.systems))
        self.context = make_context(train, self.device, standardize=config.search.standardize,
                                    vae=LatentCache(**config.vae))
        self.context.constraints.check_factuals(X_train, train.schema.names)
        self.people = Agents.draw(config.agents, train, self.context.standardizer.scale, seed)
        self.outcome = OutcomeModel(config.agents.outcome, resolve_truth(config.agents, train, test, seed, self.device))
        # The agents' own metrics (who acted, how far, at what cost to them) once they act otherwise than the reference.
        self.reports_agents = config.agents.changes_behaviour
        # The metrics draw from their own generator, so measuring (how often, how many permutations) never
        # changes the dynamics, and systems added to a run leave the others' searches as they were.
        metrics_rng = torch.Generator(device=self.device).manual_seed(self._draw_seed())
        self.evaluator = ShiftEvaluator(
            torch.cat([X_train, test.X.to(self.device)]), torch.cat([y_train, test.y.to(self.device)]),
            test.X.to(self.device), test.y.to(self.device), config.metrics, metrics_rng,
        )
        self.initial_classifiers: dict[str, TorchClassifier] = {}
        self.stacks = [self._initial_stack(name, template) for name, template in config.models.items()]
        # Who shares recipients: every system of a repetition (the reference protocol), or of one model in it.
        by_model = config.pairing == "model"
        keys = dict.fromkeys((s.repetition, s.model if by_model else None) for s in self.systems)
        self.recipient_groups = [
            torch.tensor([s.index for s in self.systems if (s.repetition, s.model if by_model else None) == key],
                         device=self.device)
            for key in keys
        ]
        # No-recourse controls (generator "none") share their repetition's recipients but do not vote on who
        # the candidates are, so adding a control leaves the other systems' recipients unchanged.
        self.is_control = torch.tensor([not config.generators[s.generator].moves for s in self.systems],
                                       dtype=torch.bool, device=self.device)
        self.datacollector = mesa.DataCollector(tables={"metrics": METRIC_COLUMNS})
        # The decisions after a round's retraining, kept for the next round: nothing moves the population or
        # refits a model between rounds, so they are that round's decisions before recourse. Saves a forward pass
        # of every system over its whole population per round (credit default: 0.24 s of a ~9 s round).
        self._decisions_after: tuple[int, torch.Tensor] | None = None
        self._collect_shift_metrics()

    def _draw_seed(self) -> int:
        return int(self.rng.integers(0, 2**62))

    def _initial_stack(self, name: str, template: TorchClassifier) -> ModelStack:
        """Train one model per repetition on the initial data, then fan it out to that repetition's systems."""
        n_gen, n_rep = len(self.config.generators), self.config.repetitions
        params = template.get_params() | {"seed": self._draw_seed(), "device": str(self.device)}
        classifier = type(template)(**params)
        if hasattr(classifier, "use_search_context"):  # it searches counterfactuals to train (training/ct.py)
            classifier.use_search_context(self.context)
        X, y = self.population.X[0], self.population.y[0]
        classifier.fit(X.unsqueeze(0).expand(n_rep, -1, -1), y.unsqueeze(0).expand(n_rep, -1))
        classifier = classifier.select_systems(torch.arange(n_rep).repeat_interleave(n_gen))
        systems = torch.tensor([s.index for s in self.systems if s.model == name], device=self.device)
        generators = [self.config.generators[self.systems[i].generator] for i in systems.tolist()]
        self.evaluator.set_reference(name, classifier)
        self.initial_classifiers[name] = classifier.select_systems(torch.arange(len(systems)))
        latent = torch.tensor([i for i, g in enumerate(generators) if g.strategy == "latent"], dtype=torch.long,
                              device=self.device)
        return ModelStack(name, classifier, systems, generators, latent)

    # ------------------------------------------------------------------------------------------- a round
    @small_tensor_threads()  # small tensors on one torch thread; the compiled loops keep the caller's cores
    def step(self) -> None:
        """One round: recipients -> counterfactuals -> implementation -> retraining -> metrics."""
        self.round += 1
        pop = self.population
        approved_before = self._decisions_before_recourse()
        predicted_negative = ~approved_before
        for members in self.recipient_groups:  # controls do not vote unless a group has nothing else
            control = self.is_control[members]
            if not control.all():
                predicted_negative[members[control]] = True
        rows, valid = choose_recipients(
            predicted_negative, self.recipient_groups, self.config.recourse_share, self.rng
        )
        draws = self.people.round_draws(pop.X.shape[1], self.device)
        if rows.shape[1] > 0:
            self._prepare_latent_models()
            for stack in self.stacks:
                self._recourse(stack, rows[stack.systems], valid[stack.systems], *draws)
        last = self.round == self.config.rounds
        evaluate = self.round % self.config.metrics.evaluate_every == 0 or last
        for stack in self.stacks:
            if evaluate and self.config.metrics.definitions == "paper":  # theta_{t-1}: before this round's refit
                self.evaluator.remember_parameters(stack.name, stack.classifier)
            stack.classifier.refit(pop.X[stack.systems], pop.y[stack.systems])
        self._collect_after_retraining(approved_before)
        if evaluate:
            self._collect_shift_metrics()
        if last:
            self.running = False

    def _prepare_latent_models(self) -> None:
        """Train (round 1) or refit the VAEs of every stack's latent systems (REVISE, CLUE) as one stack, on
        their current data, before the per-stack searches use them (see ``LatentCache.prepare``)."""
        standardize = self.context.standardizer.transform
        searches = [(stack.classifier, stack.latent, standardize(self.population.X[stack.systems[stack.latent]]))
                    for stack in self.stacks if len(stack.latent)]
        if searches:
            self.context.vae.prepare(searches, seed=self._draw_seed())

    def _decisions_before_recourse(self) -> torch.Tensor:
        """This round's decisions before recourse: those after the previous round's retraining when it computed
        them (same models, same population), else computed now."""
        kept, self._decisions_after = self._decisions_after, None
        if kept is not None and kept[0] == self.round - 1:
            return kept[1]  # read only: a round derives new tensors from it
        return self._approved()

    def _approved(self) -> torch.Tensor:
        """Each system's current decisions on its own population, (S, n) bool."""
        pop = self.population
        approved = torch.zeros_like(pop.y, dtype=torch.bool)
        for stack in self.stacks:
            approved[stack.systems] = stack.classifier.predict(pop.X[stack.systems]) == 1
        return approved

    def _recourse(self, stack: ModelStack, rows: torch.Tensor, valid: torch.Tensor, comply_draw: torch.Tensor,
                  outcome_draw: torch.Tensor) -> None:
        """Batched search for one stack; each recipient chooses one of its K counterfactuals (at random in the
        reference protocol), acts on it or not, moves (part of the way) and takes a label."""
        pop = self.population
        factual = torch.gather(pop.X[stack.systems], 1, rows.unsqueeze(-1).expand(-1, -1, pop.X.shape[-1]))
        context = dataclasses.replace(self.context, data_X=pop.X[stack.systems], data_y=pop.y[stack.systems])
        result = search(
            stack.classifier, factual, stack.generators, context, settings=self.config.search, rng=self.torch_rng,
        )
        S, B, _, d = result.counterfactuals.shape
        acting = ~self.is_control[stack.systems]
        pick = self._pick(result, factual, rows, acting)
        chosen = torch.gather(result.counterfactuals, 2, pick.view(S, B, 1, 1).expand(-1, -1, 1, d)).squeeze(2)
        p_chosen = torch.gather(result.proba, 2, pick.unsqueeze(-1)).squeeze(-1)
        # A control's recipients stay where they are, and so does anyone whose counterfactual is not a finite
        # point (a search that diverged): it cannot be implemented, and one non-finite row would poison the
        # retraining. Such rows are counted (``n_nonfinite``), never silently dropped. Non-converged
        # counterfactuals still move.
        finite = torch.isfinite(chosen).all(-1)
        agent_cost = self.people.cost(factual, chosen, rows)
        complies, fraction = self.people.act(rows, agent_cost, comply_draw)
        moving = valid & acting.view(S, 1) & finite & complies
        moved_to, p_moved = self._destination(stack, factual, chosen, p_chosen, fraction)
        system_rows = stack.systems.view(S, 1).expand(S, B)
        y_true_before = pop.y_true[system_rows, rows]
        recorded, y_true_after = self.outcome.labels(moved_to, p_moved, y_true_before, outcome_draw[rows])
        pop.move(system_rows[moving], rows[moving], moved_to[moving], recorded[moving], self.round,
                 y_true_after[moving])
        self._collect_recourse_metrics(stack, rows, factual, chosen, p_chosen, result.steps, valid, finite)
        if self.reports_agents:
            # The cost of the move made: the counterfactual's own unless someone stopped part of the way.
            spent = agent_cost if moved_to is chosen else self.people.cost(factual, moved_to, rows)
            self._collect_agent_metrics(stack, rows, valid & finite, moving, spent, fraction)
        terms = implemented_terms(stack.classifier, context, factual, moved_to, p_moved.clamp_min(1e-12).log())
        for name, values in terms.items():
            self._add_values(stack, name, masked_mean(values, moving))
        if self.outcome.tracks_truth:
            self._add_values(stack, "truly_improved", truly_improved(y_true_before, y_true_after, moving))

    def _pick(self, result, factual: torch.Tensor, rows: torch.Tensor, acting: torch.Tensor) -> torch.Tensor:
        """Which copy each recipient implements (S, B). At random (the reference protocol), drawn for the acting
        systems only, so a control leaves the other systems' draws unchanged; or by the agents' ``choice``."""
        S, B, K, _ = result.counterfactuals.shape
        if self.people.settings.choice == "random":
            pick = torch.zeros(S, B, dtype=torch.long, device=self.device)
            pick[acting] = torch.from_numpy(self.rng.integers(0, K, size=(int(acting.sum()), B))).to(self.device)
            return pick
        copy_costs = self.people.cost(factual, torch.nan_to_num(result.counterfactuals, nan=float("inf")), rows)
        return self.people.choose(copy_costs, result.proba)

    def _destination(self, stack: ModelStack, factual: torch.Tensor, chosen: torch.Tensor, p_chosen: torch.Tensor,
                     fraction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each recipient would land moving ``fraction`` of the way to ``chosen`` (projected onto the
        constraints, so a one-hot group stays one-hot), and the model's p(y = 1) there."""
        full = fraction == 1
        if bool(full.all()):  # the reference protocol: exactly the counterfactual, scored by the search
            return chosen, p_chosen
        partial = factual + fraction.unsqueeze(-1) * (chosen - factual)
        partial = self.context.constraints.project(partial, factual)
        moved_to = torch.where(full.unsqueeze(-1), chosen, partial)
        with torch.no_grad():
            p_moved = stack.classifier.log_proba_stacked(torch.nan_to_num(moved_to)).exp()
        return moved_to, torch.where(full, p_chosen, p_moved)

    # --------------------------------------------------------------------------------------- collection
    def _add_row(self, system: int, metric: str, value: float) -> None:
        s = self.systems[system]
        self.datacollector.add_table_row(
            "metrics",
            {"system": s.label, "model": s.model, "generator": s.generator, "repetition": s.repetition,
             "round": self.round, "metric": metric, "value": value},
        )

    def _add_values(self, stack: ModelStack, metric: str, values: torch.Tensor, skip_missing: bool = False) -> None:
        """One value per system of ``stack`` (S,); ``skip_missing``: no row where the value is NaN."""
        for system, value in zip(stack.systems.tolist(), values.tolist()):
            if not (skip_missing and math.isnan(value)):
                self._add_row(system, metric, float(value))

    def _add_metric(self, stack: ModelStack, metric: str, compute, group: torch.Tensor | None = None,
                    skip_missing: bool = False) -> None:
        """``compute(selection) -> (S,)``: the metric over the individuals ``selection`` (a mask, None: all) picks.
        With ``group`` (the group index of each individual ``compute`` sees) and at least two groups, also
        ``metric[group]`` for each group (see :func:`~recourse_sim.metrics.catalogue.group_metric`)."""
        self._add_values(stack, metric, compute(None), skip_missing)
        if group is not None and len(self.people.group_names) > 1:
            for g, group_name in enumerate(self.people.group_names):
                self._add_values(stack, group_metric(metric, group_name), compute(group == g), skip_missing)

    def _collect_recourse_metrics(self, stack, rows, factual, chosen, p_chosen, steps, valid, finite) -> None:
        """The recourse offered this round: counts, validity, cost and search effort, per group too."""
        group = self.people.group[rows]
        # A system without recipients, or a control (whose recipients do not act), has no recourse quality.
        quality = valid & finite & ~self.is_control[stack.systems].view(-1, 1)
        self._add_metric(stack, "n_recourse", lambda sel: _count(valid, sel), group)
        self._add_values(stack, "n_nonfinite", (valid & ~finite).sum(1).float())
        self._add_metric(stack, "validity", lambda sel: validity(p_chosen, mask=_both(quality, sel)), group)
        self._add_metric(stack, "recourse_cost", lambda sel: recourse_cost(factual, chosen, mask=_both(quality, sel)),
                         group)
        self._add_values(stack, "search_steps", masked_mean(steps.float(), quality))

    def _collect_agent_metrics(self, stack, rows, offered, moving, agent_cost, fraction) -> None:
        """How recipients acted: the share who acted, how far they moved and their own cost of the move."""
        group = self.people.group[rows]
        self._add_metric(stack, "acted_share", lambda sel: masked_mean(moving.float(), _both(offered, sel)), group)
        self._add_metric(stack, "agent_cost", lambda sel: masked_mean(agent_cost, _both(moving, sel)), group)
        self._add_values(stack, "move_fraction", masked_mean(fraction, moving))

    def _collect_after_retraining(self, approved_before: torch.Tensor) -> None:
        """After this round's retraining: recourse reliability, approval rate, collateral flips among bystanders
        and, where the true labels are known, the lender's loss, accuracy against the truth (per group too)."""
        pop = self.population
        approved = self._approved()
        self._decisions_after = (self.round, approved)
        bystander = pop.recourse_round != self.round  # features unchanged this round
        rejections, approvals = collateral_flips(approved_before, approved, bystander)
        group = self.people.group
        for stack in self.stacks:
            # Each metric is computed (for everyone, then per group) before the next iteration rebinds these.
            decided, y_true = approved[stack.systems], pop.y_true[stack.systems]
            self._add_metric(stack, "approval_rate", lambda sel: approval_rate(decided, sel), group)  # noqa: B023
            self._add_values(stack, "collateral_rejections", rejections[stack.systems])
            self._add_values(stack, "collateral_approvals", approvals[stack.systems])
            if self.outcome.tracks_truth:
                self._add_metric(stack, "lender_loss", lambda sel: lender_loss(decided, y_true, sel), group)  # noqa: B023
                self._add_metric(stack, "truth_accuracy",
                                 lambda sel: truth_accuracy(decided, y_true, sel), group)  # noqa: B023
        self._collect_reliability(approved)

    def _collect_reliability(self, approved: torch.Tensor) -> None:
        """Durability of recourse (an extension of the paper): after this round's retraining, the share of the
        individuals whose latest recourse was ``k`` rounds ago that the model still approves, k in
        ``RELIABILITY_LAGS`` (k = 0: does recourse survive the retraining it triggers?); per group too."""
        pop = self.population
        for lag in RELIABILITY_LAGS:
            cohort = pop.recourse_round == self.round - lag
            if self.round - lag < 1 or not cohort.any():
                continue
            for stack in self.stacks:
                decided, members = approved[stack.systems], cohort[stack.systems]
                # A system without such a cohort (or a group without one) has no row, not a NaN.
                self._add_metric(stack, f"reliability_lag{lag}",
                                 lambda sel: approval_rate(decided, _both(members, sel)),  # noqa: B023
                                 self.people.group, skip_missing=True)

    def _collect_shift_metrics(self) -> None:
        for stack in self.stacks:
            for system, metric, value in self.evaluator.evaluate(stack.name, stack.classifier, self.population,
                                                                 stack.systems, stack.generators, self.context,
                                                                 self.config.search):
                self._add_row(system, metric, value)

    # -------------------------------------------------------------------------------------------- results
    def scorer(self, system: int, initial: bool = False):
        """``X (n, d) -> p(y=1)`` as numpy for one system's current (or round-0) classifier."""
        spec = self.systems[system]
        stack = next(s for s in self.stacks if s.name == spec.model)
        local = int((stack.systems == system).nonzero()[0])
        classifier = self.initial_classifiers[spec.model] if initial else stack.classifier

        def predict_proba(X: torch.Tensor):
            return classifier.proba_positive(X, systems=[local])[0].cpu().numpy()

        return predict_proba

    def run(self, progress=None) -> pd.DataFrame:
        """Run the remaining rounds and return the tidy metrics table."""
        while self.running and self.round < self.config.rounds:
            self.step()
            if progress is not None:
                progress.update(1)
        return self.results()

    def results(self) -> pd.DataFrame:
        """Tidy table: one row per system x round x metric."""
        frame = self.datacollector.get_table_dataframe("metrics")
        return frame.astype({"repetition": "int64", "round": "int64", "value": "float64"})


def _both(mask: torch.Tensor, selection: torch.Tensor | None) -> torch.Tensor:
    """``mask`` restricted to ``selection`` (None: everyone)."""
    return mask if selection is None else mask & selection


def _count(mask: torch.Tensor, selection: torch.Tensor | None) -> torch.Tensor:
    """How many individuals ``mask`` (S, m) and ``selection`` both pick, per system."""
    return _both(mask, selection).sum(1).float()
