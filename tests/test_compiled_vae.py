"""The compiled VAE training against the torch loop (autograd and ``torch.optim.Adam``) it stands in for."""

from __future__ import annotations

import pytest
import torch

from recourse_sim.errors import ConfigError
from recourse_sim.models.vae import VAE


def _stack(S: int, n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Correlated features, so the VAE has structure to learn."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(S, n, 1, generator=g)
    return base * torch.linspace(0.5, 2.0, d) + 0.3 * torch.randn(S, n, d, generator=g)


def _refitted(vae: VAE, X: torch.Tensor, backend: str, epochs: int = 10) -> VAE:
    copy = vae.select_systems(torch.arange(vae.n_systems))
    copy.rng_ = torch.Generator().manual_seed(7)  # both backends draw the same permutations and noise
    return copy.refit(X, epochs=epochs, backend=backend)


@pytest.mark.parametrize("S,n,d,batch", [(4, 230, 2, 50), (2, 120, 9, 32)])
def test_compiled_training_equals_the_torch_loop(S, n, d, batch):
    """Ten epochs from the same weights and draws (the last batch smaller than the others, latent 2 and 8):
    every parameter equal to float32 rounding, and the training did change them."""
    X = _stack(S, n, d)
    start = VAE(epochs=2, batch_size=batch, seed=1, device="cpu", latent_dim=None).fit(X, backend="torch")
    reference, compiled = (_refitted(start, X, backend) for backend in ("torch", "compiled"))
    for name, expected in reference.params_.items():
        torch.testing.assert_close(compiled.params_[name], expected, atol=2e-4, rtol=1e-4, msg=name)
        assert (expected - start.params_[name]).abs().max() > 1e-3, name  # the comparison is not vacuous
    with torch.no_grad():
        reference.rng_, compiled.rng_ = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        torch.testing.assert_close(compiled.loss(X), reference.loss(X), atol=1e-4, rtol=1e-4)


def test_compiled_training_lowers_the_loss_and_reruns_bit_for_bit():
    X = _stack(3, 300, 4, seed=2)
    fitted = [VAE(epochs=30, seed=5, device="cpu").fit(X, backend="compiled") for _ in range(2)]
    for name in fitted[0].params_:
        assert torch.equal(fitted[0].params_[name], fitted[1].params_[name]), name
    untrained = VAE(epochs=0, seed=5, device="cpu").fit(X)
    with torch.no_grad():
        fitted[0].rng_, untrained.rng_ = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        assert torch.all(fitted[0].loss(X) < 0.5 * untrained.loss(X))


def test_unknown_backend_is_refused():
    X = _stack(1, 20, 2)
    with pytest.raises(ConfigError, match="vae backend.*gpu.*one of auto, compiled, torch"):
        VAE(epochs=1, device="cpu").fit(X, backend="gpu")


def test_the_compiled_epoch_refuses_parameters_of_another_size():
    """train_epoch copies P parameters per system element by element (no slice assignment that would check the
    shapes), so it checks them itself: one column short must raise, not read past the row."""
    import numpy as np

    from recourse_sim.models.compiled_vae import train_epoch

    S, n, d, hidden, latent = 2, 8, 3, 4, 2
    P = d * hidden + hidden + 2 * (hidden * latent + latent) + latent * hidden + hidden + hidden * d + d
    X = np.zeros((S, n, d), np.float32)
    order, noise = np.arange(n), np.zeros((S, n, latent), np.float32)
    flat = np.zeros((S, P - 1), np.float32)
    with pytest.raises(ValueError, match="one column per parameter"):
        train_epoch(flat, flat.copy(), flat.copy(), X, order, noise, d, hidden, latent, 4, 0, 1e-3, 0.9, 0.999, 1e-8,
                    0.0)
    full = np.zeros((S, P), np.float32)
    assert train_epoch(full, full.copy(), full.copy(), X, order, noise, d, hidden, latent, 4, 0, 1e-3, 0.9, 0.999,
                       1e-8, 0.0) == 2  # two batches of 4 rows: two Adam steps
