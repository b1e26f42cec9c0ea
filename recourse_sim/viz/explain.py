"""Explain one fitted model with several generators: search paths, and the quality of the counterfactuals.

The search engine is built for throughput and keeps no history; :func:`trace_search` records the path of every
copy through the engine's ``on_step`` hook, which sees the candidates of the individuals still in the working
batch at each iteration. Individuals the engine has compacted away have converged and no longer move, so their
path stays where they were last seen. The hook changes nothing in the search (tested bit-identical).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recourse_sim.data.dataset import Dataset
from recourse_sim.generators import GENERATORS, GeneratorSpec, LatentCache, SearchSettings, generate_counterfactuals
from recourse_sim.generators.problem import StepRecord
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
    **generator_params,
) -> tuple[np.ndarray, object]:
    """Positions along the search, ``(T, B, K, d)``: the candidates at iterations 0, every, 2 every, ... and the
    final counterfactuals last.

    Returns ``(paths, result)`` with ``result`` the search's :class:`SearchResult` (B, K, d). ``vae``: for latent
    generators a :class:`LatentCache` is created once and reused.
    """
    spec = GENERATORS[generator](**generator_params) if isinstance(generator, str) else generator
    vae = LatentCache() if vae is None and spec.strategy == "latent" else vae
    factuals = torch.as_tensor(_np(factuals), dtype=torch.float32)
    every = max(1, int(every))
    frames: list[torch.Tensor] = []
    position: torch.Tensor | None = None  # (B, K, d): where every copy was last seen

    def record(step: StepRecord) -> None:
        nonlocal position
        x = step.x[0].cpu()
        if position is None:
            position = torch.empty((len(factuals), *x.shape[1:]))
        position[step.index.cpu()] = x
        if step.t % every == 0:
            frames.append(position.clone())

    result = generate_counterfactuals(model, factuals, spec, reference, settings=settings, seed=seed, vae=vae,
                                      on_step=record)
    final = result.counterfactuals.detach().cpu().unsqueeze(0)
    return torch.cat([torch.stack(frames), final]).numpy() if frames else final.numpy(), result


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
