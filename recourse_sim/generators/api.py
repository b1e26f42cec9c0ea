"""Convenience entry points for explaining one fitted classifier outside a simulation."""

from __future__ import annotations

import torch

from recourse_sim.data.dataset import Dataset, Standardizer
from recourse_sim.errors import ConfigError, DataError
from recourse_sim.generators.constraints import FeatureConstraints
from recourse_sim.generators.engine import search
from recourse_sim.generators.latent import LatentCache
from recourse_sim.generators.problem import SearchContext, SearchResult, SearchSettings, StepHook
from recourse_sim.generators.spec import GeneratorSpec
from recourse_sim.models.base import NotFittedError


def make_context(
    reference: Dataset,
    device: torch.device | str = "cpu",
    standardize: bool = True,
    data_X: torch.Tensor | None = None,
    data_y: torch.Tensor | None = None,
    vae: object | None = None,
) -> SearchContext:
    """Search context from the reference (initial) data: standardiser and MAD fitted on it once.

    ``data_X``/``data_y`` (S, n, d)/(S, n) are the systems' current data (default: the reference data as one
    system), used by population-aware terms such as the gravitational pull.
    ``vae`` serves latent generators (REVISE, CLUE): a fitted :class:`~recourse_sim.models.vae.VAE` on the
    standardised data, or by default a fresh :class:`LatentCache` that trains one per system lazily at the
    first latent search and keeps it for this context (and copies of it made with ``dataclasses.replace``,
    i.e. for a whole simulation run), refitting 10 epochs when the systems' data have changed.
    """
    X = reference.X.to(device)
    standardizer = (Standardizer.fit(X) if standardize else Standardizer.identity(X.shape[1])).to(device)
    Z = standardizer.transform(X)
    mad = (Z - Z.median(0).values).abs().median(0).values
    return SearchContext(
        standardizer=standardizer,
        constraints=FeatureConstraints.from_schema(reference.schema, device),
        data_X=X.unsqueeze(0) if data_X is None else data_X.to(device),
        data_y=reference.y.to(device).unsqueeze(0) if data_y is None else data_y.to(device),
        mad=mad,
        feature_names=reference.schema.names,
        vae=LatentCache() if vae is None else vae,
    )


def generate_counterfactuals(
    model,
    factuals: torch.Tensor,
    generator: GeneratorSpec | str,
    reference: Dataset,
    *,
    settings: SearchSettings = SearchSettings(),
    standardize: bool = True,
    seed: int = 0,
    vae: object | None = None,
    on_step: StepHook | None = None,
    backend: str = "auto",
    **generator_params,
) -> SearchResult:
    """Counterfactuals (B, K, d) for ``factuals`` (B, d) from a fitted single-system classifier.

    ``on_step`` sees every iteration of the search (a :class:`StepRecord` with a leading system axis of 1);
    ``backend`` picks the gradient search's implementation (see :func:`~recourse_sim.generators.engine.search`).

    ``generator`` is a :class:`GeneratorSpec` or a registered name (its keyword parameters may be passed).
    ``vae`` (latent generators only): a fitted VAE or a :class:`LatentCache` to reuse across calls; by default
    each call trains its own VAE on ``reference`` (see :func:`make_context`).
    """
    from recourse_sim.generators import GENERATORS  # the registry lives in the package namespace

    spec = GENERATORS[generator](**generator_params) if isinstance(generator, str) else generator
    if not isinstance(spec, GeneratorSpec):
        raise ConfigError("generator", generator, f"a GeneratorSpec or one of {', '.join(GENERATORS)}")
    if generator_params and not isinstance(generator, str):
        raise ConfigError("generate_counterfactuals", sorted(generator_params),
                          "generator keywords only with a generator name (a GeneratorSpec is already built)")
    if not hasattr(model, "device_") or not hasattr(model, "log_proba_stacked"):
        raise NotFittedError(f"{type(model).__name__} is not a fitted recourse_sim classifier; call fit(X, y) first")
    device = model.device_
    factuals = torch.as_tensor(factuals, dtype=torch.float32, device=device)
    if factuals.ndim != 2 or factuals.shape[1] != reference.n_features:
        raise DataError(f"factuals must have shape (B, {reference.n_features}); got {tuple(factuals.shape)}")
    bad = ~torch.isfinite(factuals)
    if bad.any():
        row, col = (int(v) for v in bad.nonzero()[0])
        raise DataError(f"factuals: feature {reference.schema.names[col]!r} of row {row} is "
                        f"{factuals[row, col].item()}; NaN and inf are not allowed")
    context = make_context(reference, device, standardize, vae=vae)
    context.constraints.check_factuals(factuals, reference.schema.names)
    rng = torch.Generator(device=device).manual_seed(seed)
    result = search(model, factuals.unsqueeze(0), [spec], context, settings=settings, rng=rng, on_step=on_step,
                    backend=backend)
    return result.squeeze_system()
