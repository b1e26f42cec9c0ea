"""How many CPU threads the compiled loops (training, the search, the VAE's training) may use at this moment.

Those loops split their work into pieces that do not depend on each other ((system, member) pairs in training,
systems in the VAE's training, groups of individuals in the search) and compute every piece the same way on
whichever thread runs it, with one float mode on every thread. So the count changes how fast a run goes, never
its results (``tests/test_cores.py`` checks it bit for bit).

Who sets the count:

- in a worker process of :class:`~recourse_sim.experiments.executors.ProcessExecutor`, the executor. A cell runs on
  its worker's part of the cores (one with as many workers as cores) while other cells wait for a worker; once none
  waits, the cores of idle workers are lent to the cells still running, in equal shares (:class:`CoreShare`). With
  ``--workers 2`` the last cell of a sweep then runs on both cores instead of leaving one idle: in the SaTML
  reproduction that last cell (GMSC) ran alone for about two minutes, 81-84 % of its time in training and the
  search and 5-7 % in the VAEs' training.
- everywhere else, torch's intra-op thread count (:func:`torch.get_num_threads`: by default one per physical core,
  or ``OMP_NUM_THREADS``; ``torch.set_num_threads`` in Python) as it was when the simulation was entered. The
  simulation runs its own small tensor operations on one torch thread (:func:`small_tensor_threads`) but keeps the
  caller's count for the compiled loops, so a ``recourse-sim run``, a serial sweep (``--workers 1``) or a notebook
  trains and searches on every core (the credit-default experiment alone: 453 s on one thread, 270 s on two cores,
  ``benchmarks/run_threads.py``), and a caller who sets one thread gets one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

from recourse_sim.device import torch_threads

#: In a worker process: the executor's shared count of threads per running cell (a ``multiprocessing`` RawValue).
_shared_count: Any = None
#: Inside :func:`small_tensor_threads`: the caller's count, kept for the compiled loops (per thread and task).
_caller_count: ContextVar[int | None] = ContextVar("recourse_sim_caller_threads", default=None)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def compiled_threads() -> int:
    """Threads the compiled loops may use now: the executor's share in a worker process, else the caller's torch
    thread count (kept through :func:`small_tensor_threads`)."""
    if _shared_count is not None:
        return max(1, min(int(_shared_count.value), usable_cores()))
    kept = _caller_count.get()
    if kept is not None:
        return kept
    import torch

    return max(1, torch.get_num_threads())


@contextlib.contextmanager
def small_tensor_threads() -> Iterator[None]:
    """Run the block with one torch intra-op thread (the simulation's tensors are small, see
    ``device.torch_threads``), the compiled loops keeping the budget the block was entered with.

    Nested blocks keep the outermost caller's budget. Results do not depend on it (the compiled loops give the
    same bits on any number of threads), only the speed does.
    """
    token = _caller_count.set(compiled_threads())
    try:
        with torch_threads(1):
            yield
    finally:
        _caller_count.reset(token)


def split_over_threads(n_pieces: int, run: Callable[[int, int], object], threads: int | None = None,
                       mode: Callable[[], contextlib.AbstractContextManager] | None = None) -> None:
    """``run(first, end)`` on contiguous ranges that cover pieces ``0 .. n_pieces - 1``, one range per thread, on at
    most ``threads`` threads (default: :func:`compiled_threads`), the first range on the calling thread.

    ``run`` must release the GIL (a ``nogil`` compiled function) for the threads to overlap, and compute each piece
    independently of the range it is in. ``mode``: a context (such as ``device.flush_denormals``) entered on each
    helper thread around its call, so every thread computes in the calling thread's float mode (a thread does not
    inherit it from the thread that started it on every platform). An exception on any thread is raised here,
    after every thread has stopped.
    """
    count = max(1, min(compiled_threads() if threads is None else threads, n_pieces))
    bounds = [n_pieces * t // count for t in range(count + 1)]
    if count == 1:
        run(0, n_pieces)
        return

    def on_helper(first: int, end: int) -> None:
        with mode() if mode is not None else contextlib.nullcontext():
            run(first, end)

    with ThreadPoolExecutor(max_workers=count - 1, thread_name_prefix="recourse-sim-compiled") as pool:
        helpers = [pool.submit(on_helper, bounds[t], bounds[t + 1]) for t in range(1, count)]
        try:
            run(bounds[0], bounds[1])
        finally:
            for helper in helpers:
                helper.exception()  # wait for all before raising the first error
        for helper in helpers:
            helper.result()


def receive_share(shared_count: Any) -> None:
    """Called in a worker process (its initializer): read the thread budget from ``shared_count`` from now on."""
    global _shared_count
    _shared_count = shared_count


class CoreShare:
    """The executor's side: one shared integer, the threads each running cell may use.

    Written by the executor whenever the cells in flight change, read by the workers at each compiled call
    (a training round, a search), so a running cell picks up lent cores at its next call.
    """

    def __init__(self, context: Any, cores: int) -> None:
        self.cores = max(1, cores)  # the executor's budget: its caller's compiled_threads() when it started
        self.shared_count = context.RawValue("i", 1)  # an int in shared memory; only the executor writes it

    def update(self, workers: int, running: int, waiting: int) -> int:
        """Set the share for ``running`` cells of ``workers`` while ``waiting`` cells wait; returns it.

        While any cell waits, every worker is busy and each cell gets an equal part of the cores (one each with
        as many workers as cores, four each for ``--workers 2`` on 8 cores); once none waits, the cores split
        evenly among the cells still running. The remainder stays idle: a cell's pieces split evenly, so an
        uneven share would make one cell wait on its slowest thread.
        """
        share = max(1, self.cores // (workers if waiting else max(1, running)))
        self.shared_count.value = share
        return share
