"""Torch device selection: ``"auto"`` picks CUDA when present, else CPU."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch

from recourse_sim.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a concrete ``torch.device`` for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError("device", device, '"auto", "cpu", "cuda" or "cuda:N"') from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", device, '"auto" or "cpu" (no CUDA device is available here)')
    return resolved


@contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU for the duration of the block.

    Adam's second-moment estimates and the gradients of saturated sigmoids decay into the subnormal range
    during long batch-1 training; x86 CPUs process subnormals up to ~100x slower (a measured 300 us per
    ``sqrt`` on a 4k-element tensor). Flushing them changes results by less than float32 resolution of the
    quantities involved (they are below 1.2e-38).
    """
    supported = torch.set_flush_denormal(True)  # False where the CPU lacks the mode: then a no-op
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)


@contextmanager
def denormals_kept() -> Iterator[None]:
    """Inside a :func:`flush_denormals` block: compute with subnormal floats (IEEE) for the block, then flush again.

    For work spread over threads that do not inherit the calling thread's mode (numba's worker threads): with one
    mode on every thread, a result does not depend on the thread that computed it.
    """
    supported = torch.set_flush_denormal(False)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(True)


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads, then restore the previous setting.

    The simulation's tensors are small (a few thousand elements): splitting them across threads costs more
    in synchronisation than it saves, and under CPU contention an OpenMP region can stall for hundreds of
    microseconds (measured: ``sqrt`` of 4,515 floats took 367 us with 2 threads on a busy 2-core machine,
    3.6 us with 1). Parallelism comes from stacking systems, not from splitting tiny kernels.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@cache
def _blas_controller():  # noqa: ANN202 (a threadpoolctl.ThreadpoolController)
    """The BLAS libraries loaded once the compiled trainers' BLAS (scipy's, which numba's ``np.dot`` calls) is.

    Built once: listing the loaded libraries costs ~1.4 ms, limiting them through the kept controller ~25 us.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba's np.dot calls, so it is listed)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one BLAS thread in every loaded BLAS library, then restore their settings.

    The compiled trainers multiply mini-batches through BLAS. OpenBLAS splits a product of a 500-row batch across
    all cores by default: under ``--workers 2`` that oversubscribes the cores, and its worker threads do not
    share the calling thread's :func:`flush_denormals` mode, so subnormal handling (and the last bits of the
    result) would depend on which thread computed what. One thread keeps every product on the calling thread.
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield
