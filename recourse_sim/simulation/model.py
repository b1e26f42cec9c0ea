"""The Mesa model of endogenous recourse dynamics.

Mesa provides time (``steps``), the seeded random generator (``rng``) and the ``DataCollector``; the state
is tensors owned by the model (a :class:`Population` and one stacked classifier per model configuration),
never one Python object per individual. One ``step()`` is one round of Algorithm 1 of Altmeyer et al.
(SaTML 2023): choose recipients -> batched recourse -> individuals move -> retrain -> collect.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import mesa
import pandas as pd
import torch

from recourse_sim.device import resolve_device, torch_threads
from recourse_sim.generators.api import make_context
from recourse_sim.generators.engine import search
from recourse_sim.generators.latent import LatentCache
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.metrics.catalogue import RELIABILITY_LAGS
from recourse_sim.metrics.recourse import recourse_cost, validity
from recourse_sim.models.base import DECISION_THRESHOLD
from recourse_sim.models.classifier import TorchClassifier
from recourse_sim.simulation.config import DEFAULT_SEED, SimulationConfig, System
from recourse_sim.simulation.evaluation import ShiftEvaluator
from recourse_sim.simulation.population import Population, choose_recipients

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

    @torch_threads(1)
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
        self._collect_shift_metrics()

    def _draw_seed(self) -> int:
        return int(self.rng.integers(0, 2**62))

    def _initial_stack(self, name: str, template: TorchClassifier) -> ModelStack:
        """Train one model per repetition on the initial data, then fan it out to that repetition's systems."""
        n_gen, n_rep = len(self.config.generators), self.config.repetitions
        params = template.get_params() | {"seed": self._draw_seed(), "device": str(self.device)}
        classifier = type(template)(**params)
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
    @torch_threads(1)  # small tensors: parallelism comes from stacking systems (see device.torch_threads)
    def step(self) -> None:
        """One round: recipients -> counterfactuals -> implementation -> retraining -> metrics."""
        self.round += 1
        pop = self.population
        predicted_negative = torch.zeros_like(pop.y, dtype=torch.bool)
        for stack in self.stacks:
            predicted_negative[stack.systems] = stack.classifier.predict(pop.X[stack.systems]) == 0
        for members in self.recipient_groups:  # controls do not vote unless a group has nothing else
            control = self.is_control[members]
            if not control.all():
                predicted_negative[members[control]] = True
        rows, valid = choose_recipients(
            predicted_negative, self.recipient_groups, self.config.recourse_share, self.rng
        )
        if rows.shape[1] > 0:
            self._prepare_latent_models()
            for stack in self.stacks:
                self._recourse(stack, rows[stack.systems], valid[stack.systems])
        last = self.round == self.config.rounds
        evaluate = self.round % self.config.metrics.evaluate_every == 0 or last
        for stack in self.stacks:
            if evaluate and self.config.metrics.definitions == "paper":  # theta_{t-1}: before this round's refit
                self.evaluator.remember_parameters(stack.name, stack.classifier)
            stack.classifier.refit(pop.X[stack.systems], pop.y[stack.systems])
        self._collect_reliability()
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

    def _recourse(self, stack: ModelStack, rows: torch.Tensor, valid: torch.Tensor) -> None:
        """Batched search for one stack; each recipient implements one of its K counterfactuals at random."""
        pop = self.population
        factual = torch.gather(pop.X[stack.systems], 1, rows.unsqueeze(-1).expand(-1, -1, pop.X.shape[-1]))
        context = dataclasses.replace(self.context, data_X=pop.X[stack.systems], data_y=pop.y[stack.systems])
        result = search(
            stack.classifier, factual, stack.generators, context, settings=self.config.search, rng=self.torch_rng,
        )
        S, B, K, d = result.counterfactuals.shape
        # Which copy each recipient implements; drawn for the acting systems only, so a control leaves the
        # other systems' draws unchanged.
        acting = ~self.is_control[stack.systems]
        pick = torch.zeros(S, B, dtype=torch.long, device=self.device)
        pick[acting] = torch.from_numpy(self.rng.integers(0, K, size=(int(acting.sum()), B))).to(self.device)
        chosen = torch.gather(result.counterfactuals, 2, pick.view(S, B, 1, 1).expand(-1, -1, 1, d)).squeeze(2)
        p_chosen = torch.gather(result.proba, 2, pick.unsqueeze(-1)).squeeze(-1)
        # Non-converged counterfactuals still move; the new label is the model's prediction there.
        new_label = (p_chosen >= DECISION_THRESHOLD).float()
        system_rows = stack.systems.view(S, 1).expand(S, B)
        # A control's recipients stay where they are, and so does anyone whose counterfactual is not a finite
        # point (a search that diverged): it cannot be implemented, and one non-finite row would poison the
        # retraining. Such rows are counted (``n_nonfinite``), never silently dropped.
        finite = torch.isfinite(chosen).all(-1)
        moving = valid & acting.view(S, 1) & finite
        pop.move(system_rows[moving], rows[moving], chosen[moving], new_label[moving], self.round)
        self._collect_recourse_metrics(stack, factual, chosen, p_chosen, result.steps, valid, finite)

    # --------------------------------------------------------------------------------------- collection
    def _add_row(self, system: int, metric: str, value: float) -> None:
        s = self.systems[system]
        self.datacollector.add_table_row(
            "metrics",
            {"system": s.label, "model": s.model, "generator": s.generator, "repetition": s.repetition,
             "round": self.round, "metric": metric, "value": value},
        )

    def _collect_recourse_metrics(self, stack, factual, chosen, p_chosen, steps, valid, finite) -> None:
        implemented = valid & finite
        n = implemented.sum(1)
        # A system without recipients, or a control (whose recipients do not act), has no recourse quality.
        acted = (n > 0) & ~self.is_control[stack.systems]
        count = torch.where(acted, n.float(), torch.nan)
        not_acted = torch.where(acted, 0.0, torch.nan)  # NaN where the system has no recourse quality
        per_system = {
            "n_recourse": valid.sum(1).float(),
            "n_nonfinite": (valid & ~finite).sum(1).float(),
            "validity": validity(p_chosen, mask=implemented) + not_acted,
            "recourse_cost": recourse_cost(factual, chosen, mask=implemented) + not_acted,
            "search_steps": (steps * implemented).sum(1) / count,
        }
        values = {k: v.tolist() for k, v in per_system.items()}
        for local, system in enumerate(stack.systems.tolist()):
            for metric, column in values.items():
                self._add_row(system, metric, float(column[local]))

    def _collect_reliability(self) -> None:
        """Durability of recourse (an extension of the paper): after this round's retraining, the share of the
        individuals whose latest recourse was ``k`` rounds ago that the model still approves, k in
        ``RELIABILITY_LAGS`` (k = 0: does recourse survive the retraining it triggers?)."""
        pop = self.population
        approved = torch.zeros_like(pop.y, dtype=torch.bool)
        for stack in self.stacks:
            approved[stack.systems] = stack.classifier.predict(pop.X[stack.systems]) == 1
        for lag in RELIABILITY_LAGS:
            cohort = pop.recourse_round == self.round - lag
            if self.round - lag < 1 or not cohort.any():
                continue
            share = (approved & cohort).sum(1) / cohort.sum(1).clamp_min(1)
            for system, value, present in zip(range(len(self.systems)), share.tolist(), cohort.any(1).tolist()):
                if present:
                    self._add_row(system, f"reliability_lag{lag}", value)

    def _collect_shift_metrics(self) -> None:
        for stack in self.stacks:
            for system, metric, value in self.evaluator.evaluate(stack.name, stack.classifier, self.population, stack.systems):
                self._add_row(system, metric, value)

    # -------------------------------------------------------------------------------------------- results
    def scorer(self, system: int, initial: bool = False):
        """``X (n, d) -> p(y=1)`` as numpy for one system's current (or round-0) classifier."""
        spec = self.systems[system]
        stack = next(s for s in self.stacks if s.name == spec.model)
        local = int((stack.systems == system).nonzero()[0])
        classifier = self.initial_classifiers[spec.model] if initial else stack.classifier

        def predict_proba(X: torch.Tensor):
            return classifier.proba_positive(X)[local].cpu().numpy()

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
