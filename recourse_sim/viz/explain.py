"""Explain one fitted model with several generators: search paths, and the quality of the counterfactuals.

The search engine does not record intermediate states (it is built for throughput). :func:`trace_search`
recovers them without touching the engine, in one of two ways:

- ``method="record"`` (default, one search): the model is wrapped in a proxy that copies the candidates the
  engine scores at every iteration (the differentiable ``log_proba_stacked`` call on all B x K copies), with the
  engine's batch compaction and early exit switched off (``SearchSettings.check_every`` beyond the cap) so that
  every iteration scores every copy in order. Converged copies no longer move, so their path just stays put.
- ``method="rerun"``: the same seeded search re-run with the iteration cap raised step by step. The engine is
  deterministic for a fixed seed and the state after ``t`` iterations does not depend on the cap, so the run
  capped at ``t`` ends where the full run was at ``t``. Exact, but costs ``sum(checkpoints)`` iterations.

``"record"`` falls back to ``"rerun"`` when the proxy could not see every iteration (e.g. more than half the
individuals were already converged at the start, which the engine compacts away before the first check).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recourse_sim.data.dataset import Dataset
from recourse_sim.generators import GENERATORS, GeneratorSpec, LatentCache, SearchSettings, generate_counterfactuals
from recourse_sim.metrics import implausibility, recourse_cost, validity
from recourse_sim.models.base import DECISION_THRESHOLD
from recourse_sim.reporting.comparisons import GeneratorPanel


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def counterfactual_quality(factuals, counterfactuals, proba, X, y, *, k: int = 100,
                           threshold: float = DECISION_THRESHOLD) -> dict:
    """Validity, cost and implausibility of K counterfactuals per factual.

    ``factuals`` (B, d), ``counterfactuals`` (B, K, d), ``proba`` (B, K) = p(y=1) at the counterfactuals; ``X``,
    ``y`` the reference data for implausibility. Returns means over all B x K counterfactuals.
    """
    cf = torch.as_tensor(_np(counterfactuals), dtype=torch.float32)
    fx = torch.as_tensor(_np(factuals), dtype=torch.float32).unsqueeze(1).expand_as(cf)
    p = torch.as_tensor(_np(proba), dtype=torch.float32)
    return {
        "validity": float(validity(p.reshape(-1), threshold)),
        "cost": float(recourse_cost(fx.reshape(-1, cf.shape[-1]), cf.reshape(-1, cf.shape[-1]))),
        "implausibility": float(implausibility(cf, torch.as_tensor(_np(X)), torch.as_tensor(_np(y)), k=k).mean()),
    }


class _RecordingModel:
    """Forwards everything to ``model``; keeps a copy of each differentiable scoring call on ``n_rows`` rows."""

    def __init__(self, model, n_rows: int) -> None:
        self._model = model
        self._n_rows = n_rows
        self.frames: list[torch.Tensor] = []

    def log_proba_stacked(self, X: torch.Tensor, systems: torch.Tensor | None = None) -> torch.Tensor:
        if X.requires_grad and X.shape[-2] == self._n_rows:
            self.frames.append(X.detach().cpu().clone())
        return self._model.log_proba_stacked(X, systems)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def trace_search(
    model,
    factuals,
    generator: GeneratorSpec | str,
    reference: Dataset,
    *,
    every: int = 1,
    seed: int = 0,
    settings: SearchSettings = SearchSettings(),
    vae: object | None = None,
    method: str = "record",
    **generator_params,
) -> tuple[np.ndarray, object]:
    """Positions along the search, ``(T, B, K, d)``: the candidates at iterations 0, every, 2 every, ... and the
    final counterfactuals last.

    Returns ``(paths, result)`` with ``result`` the search's :class:`SearchResult` (B, K, d). ``vae``: for latent
    generators a :class:`LatentCache` is created once (one VAE for every re-run). See the module docstring for
    ``method``.
    """
    if method not in ("record", "rerun"):
        raise ValueError(f"method must be 'record' or 'rerun'; got {method!r}")
    spec = GENERATORS[generator](**generator_params) if isinstance(generator, str) else generator
    vae = LatentCache() if vae is None and spec.strategy == "latent" else vae
    factuals = torch.as_tensor(_np(factuals), dtype=torch.float32)
    B, d = factuals.shape
    K = settings.n_counterfactuals
    every = max(1, int(every))
    if method == "record":
        recorder = _RecordingModel(model, B * K)
        quiet = dataclasses.replace(settings, check_every=spec.max_steps + 2)
        result = generate_counterfactuals(recorder, factuals, spec, reference, settings=quiet, seed=seed, vae=vae)
        complete = len(recorder.frames) == spec.max_steps + 1 or bool(result.converged.all())
        if complete and recorder.frames:
            frames = torch.stack(recorder.frames)[::every].reshape(-1, B, K, d)
            final = result.counterfactuals.detach().cpu().unsqueeze(0)
            return torch.cat([frames, final]).numpy(), result
    checkpoints = sorted(set(range(0, spec.max_steps, every)) | {spec.max_steps})
    positions, result = [], None
    for t in checkpoints:
        result = generate_counterfactuals(model, factuals, dataclasses.replace(spec, max_steps=t), reference,
                                          settings=settings, seed=seed, vae=vae)
        positions.append(_np(result.counterfactuals))
    return np.stack(positions), result


@dataclass
class GeneratorComparison:
    """The output of :func:`compare_generators`: plot panels and a quality table (one row per generator)."""

    panels: list[GeneratorPanel]
    table: pd.DataFrame


def compare_generators(
    model,
    factuals,
    reference: Dataset,
    generators: Iterable[str | tuple[str, GeneratorSpec]] | None = None,
    *,
    every: int = 1,
    seed: int = 0,
    k: int = 100,
    settings: SearchSettings = SearchSettings(),
    trace: bool = True,
) -> GeneratorComparison:
    """Explain the same ``factuals`` with every generator (default: every registered one, with its defaults).

    A generator that cannot run on this model or data (e.g. it needs context that is not available here) does
    not stop the comparison: its panel and table row carry the error message instead.
    """
    names: Sequence = list(GENERATORS) if generators is None else list(generators)
    factuals_np = _np(factuals)
    panels, rows = [], []
    for entry in names:
        label, spec = (entry, None) if isinstance(entry, str) else entry
        try:
            spec = spec if spec is not None else GENERATORS[label]()
            if trace:
                paths, result = trace_search(model, factuals, spec, reference, every=every, seed=seed,
                                             settings=settings)
            else:
                vae = LatentCache() if spec.strategy == "latent" else None
                paths, result = None, generate_counterfactuals(model, factuals, spec, reference, settings=settings,
                                                               seed=seed, vae=vae)
        except Exception as error:  # noqa: BLE001 - report and keep going
            message = f"{type(error).__name__}: {error}"
            panels.append(GeneratorPanel(label, error=message[:200]))
            rows.append({"generator": label, "error": message})
            continue
        quality = counterfactual_quality(factuals_np, result.counterfactuals, result.proba, reference.X,
                                         reference.y, k=k)
        quality |= {"converged": float(_np(result.converged).mean()), "steps": float(_np(result.steps).mean())}
        rows.append({"generator": label, **quality, "error": None})
        note = (f"validity {quality['validity']:.0%} · cost {quality['cost']:.2f} · "
                f"implaus. {quality['implausibility']:.2f}")
        panels.append(GeneratorPanel(label, factuals_np, _np(result.counterfactuals), paths, note=note))
    table = pd.DataFrame(rows).set_index("generator")
    if table["error"].isna().all():
        table = table.drop(columns="error")
    return GeneratorComparison(panels, table)
