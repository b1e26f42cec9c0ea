"""Where the cells of a sweep run: in this process, in local worker processes, or on a Ray cluster.

Every executor takes the cells still to run and yields one :class:`CellOutcome` per cell as it finishes
(in completion order). Executors only compute: the results come back to the calling process, which alone
writes the store, so a worker on another machine needs no access to the output directory.

A cell runs its tensor operations on one torch thread wherever it runs, so its results are identical whichever
executor ran it; its compiled loops (training, the search) use the cores the executor gives it: in this process
(``--workers 1``) the caller's torch thread count, in a local worker its part of those (one core with as many
workers as cores) plus the cores lent once no cell waits (:mod:`recourse_sim.cores`), in a Ray task its one CPU.

Failures are per cell:
- a cell that raises is reported with the error; the other cells go on;
- :class:`ProcessExecutor`: a worker process that dies (killed, out of memory, a crash in native code)
  takes down the whole process pool, and every cell running at that moment with it. Those cells are rerun
  one at a time in a fresh pool: the one that kills its worker again is reported, the others finish;
- :class:`RayExecutor`: Ray retries a cell whose worker died once (``max_retries=1``), then it is reported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recourse_sim.cores import CoreShare, compiled_threads, receive_share, small_tensor_threads
from recourse_sim.device import torch_threads
from recourse_sim.errors import ConfigError

#: ``cell_fn(config) -> tidy DataFrame``: runs one resolved scenario (see :func:`run_cell`).
CellFn = Callable[[dict[str, Any]], pd.DataFrame]


@dataclass
class CellTask:
    id: str
    config: dict[str, Any]


@dataclass
class CellOutcome:
    """The tidy results of one cell, or why it failed (``error``: one line; ``detail``: the traceback)."""

    id: str
    frame: pd.DataFrame | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None
    detail: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def run_cell(config: dict[str, Any]) -> pd.DataFrame:
    """Run one cell (a resolved scenario, as ``Scenario.model_dump(mode="json")``) and return its tidy table."""
    from recourse_sim.experiments.runner import run_scenario
    from recourse_sim.experiments.scenario import Scenario

    scenario = Scenario.from_dict(config, source="cell")
    with small_tensor_threads():
        return run_scenario(scenario).results


def _timed(cell_fn: CellFn, config: dict[str, Any]) -> tuple[pd.DataFrame, float, float]:
    """The cell's table, its wall seconds and the CPU seconds of the process running it."""
    start, cpu = time.perf_counter(), time.process_time()
    frame = cell_fn(config)
    return frame, time.perf_counter() - start, time.process_time() - cpu


def _failure(task: CellTask, error: BaseException, attempts: int = 1) -> CellOutcome:
    detail = "".join(traceback.format_exception(error))
    return CellOutcome(task.id, error=f"{type(error).__name__}: {error}", detail=detail, attempts=attempts)


# ----------------------------------------------------------------------------------------------- serial
class SerialExecutor:
    """Cells one after another in this process (``--workers 1``)."""

    name = "serial"

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, tasks: list[CellTask], cell_fn: CellFn) -> Iterator[CellOutcome]:
        for task in tasks:
            try:
                with small_tensor_threads():  # the compiled loops may use the caller's cores: cells run one by one
                    frame, seconds, cpu = _timed(cell_fn, task.config)
            except Exception as error:  # a failing cell is reported; the others still run
                yield _failure(task, error)
            else:
                yield CellOutcome(task.id, frame, seconds, cpu)


# ------------------------------------------------------------------------------------ local processes
def _die_with_parent(parent: int) -> None:
    """End this worker when its parent process ends, however it ends (``kill -9`` included): on Linux the
    kernel sends SIGKILL (``PR_SET_PDEATHSIG``); everywhere a daemon thread checks the parent every second.
    Without this, workers of a killed sweep run on as orphans, holding the output pipes of whoever started it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="recourse-sim-parent-watch", daemon=True).start()


def _init_worker(parent: int | None = None, shared_count: Any = None) -> None:
    # The parent handles Ctrl-C and SIGTERM (and stops the workers); a worker only ever runs cells, on one core
    # plus those the parent lends it (``shared_count``, see recourse_sim.cores), and never outlives its parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    if shared_count is not None:
        receive_share(shared_count)
    from tqdm.auto import tqdm

    # Workers draw no progress bars: a thread lock instead of tqdm's default cross-process one, whose named
    # semaphore a stopped worker would leave behind ("resource_tracker: ... leaked semaphore objects").
    tqdm.set_lock(threading.RLock())
    import torch

    torch.set_num_threads(1)


class ProcessExecutor:
    """Cells in ``workers`` local processes (``concurrent.futures.ProcessPoolExecutor``, spawn context).

    The caller's cores (its torch thread count, :func:`~recourse_sim.cores.compiled_threads`) are shared among
    the running cells, whose compiled loops split over threads (:mod:`recourse_sim.cores`): each worker's part
    while cells wait (``--workers 2`` on 8 cores: four threads per cell), and once none waits the cores of idle
    workers are lent to the cells still running, so the last cell of a sweep does not run on one core while the
    others idle. The results do not depend on it.
    """

    name = "processes"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = None
        self._share: CoreShare | None = None

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop(terminate=exc[0] is not None)

    def _start(self, size: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        self._share = CoreShare(context, cores=compiled_threads())
        self._pool = ProcessPoolExecutor(max_workers=size, mp_context=context, initializer=_init_worker,
                                         initargs=(os.getpid(), self._share.shared_count))
        return self._pool

    def _stop(self, terminate: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if terminate:  # interrupted or failed: do not wait for the running cells
            processes = list((getattr(pool, "_processes", None) or {}).values())
            for process in processes:
                if process.is_alive():
                    process.terminate()
            for process in processes:  # reap them, so the pool's queues are released (no "leaked semaphore")
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
                    process.join(timeout=5)
        pool.shutdown(wait=True, cancel_futures=True)

    def run(self, tasks: list[CellTask], cell_fn: CellFn) -> Iterator[CellOutcome]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        size = max(1, min(self.workers, len(tasks)))
        queue, suspects = deque(tasks), deque()
        pool = self._start(size)
        running: dict[Any, CellTask] = {}
        isolated = False  # True while a suspect runs alone after a worker died
        while queue or suspects or running:
            if suspects:
                if not running:
                    task = suspects.popleft()
                    self._share.update(size, 1, 0)  # it runs alone
                    running[pool.submit(_timed, cell_fn, task.config)] = task
                    isolated = True
            else:
                isolated = False
                starting = min(len(queue), size - len(running))
                # before the submissions, so a cell never starts with more threads than its share
                self._share.update(size, len(running) + starting, len(queue) - starting)
                for _ in range(starting):
                    task = queue.popleft()
                    running[pool.submit(_timed, cell_fn, task.config)] = task
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken: list[CellTask] = []
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done, _ = wait(running)  # a dead worker fails every cell in flight: collect them all
            for future in done:
                task = running.pop(future)
                error = future.exception()
                if error is None:
                    frame, seconds, cpu = future.result()
                    yield CellOutcome(task.id, frame, seconds, cpu)
                elif isinstance(error, BrokenProcessPool):
                    broken.append(task)
                else:
                    yield _failure(task, error)
            if broken:
                self._stop(terminate=True)
                if len(broken) == 1:  # it ran alone (or was the only one in flight): it killed its worker
                    task = broken[0]
                    yield CellOutcome(task.id, error="worker process died while running this cell (killed, out of "
                                      "memory or crashed in native code)", attempts=2 if isolated else 1)
                else:
                    suspects.extend(broken)
                pool = self._start(size)


# ------------------------------------------------------------------------------------------------- Ray
def _ray_call(cell_fn: CellFn, config: dict[str, Any]) -> tuple[pd.DataFrame, float, float]:
    with torch_threads(1):  # a task holds one CPU: so do its compiled loops (small_tensor_threads keeps this 1)
        return _timed(cell_fn, config)


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class RayExecutor:
    """Cells as Ray tasks (one CPU each) on the cluster at ``address`` (``"auto"``, ``"ray://host:10001"``,
    or ``$RAY_ADDRESS``), or on a local cluster with ``num_cpus`` CPUs (all when None) when none is given.
    A Ray session already initialised by the caller is used as it is. A task whose worker dies is retried once.

    On a multi-node cluster every node needs ``recourse_sim`` installed (or a Ray ``runtime_env``); the results
    come back to this process, so the nodes need no shared file system.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        if not ray_available():
            raise ConfigError("executor", "ray", "'local', or install Ray first: pip install 'recourse_sim[ray]'")
        self.address, self.num_cpus = address, num_cpus
        self._started = False

    def __enter__(self) -> RayExecutor:
        import logging

        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if self.address is None and self.num_cpus is not None and not os.environ.get("RAY_ADDRESS"):
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise ConfigError("ray address", self.address, f"a reachable Ray cluster ({error})") from None
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def run(self, tasks: list[CellTask], cell_fn: CellFn) -> Iterator[CellOutcome]:
        import ray
        from ray.exceptions import RayTaskError

        remote = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=False)(_ray_call)
        fn_ref = ray.put(cell_fn)
        refs = {remote.remote(fn_ref, task.config): task for task in tasks}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    task = refs[ref]
                    try:
                        frame, seconds, cpu = ray.get(ref)
                    except RayTaskError as error:  # the cell raised: no retry, report it
                        cause = error.cause if isinstance(getattr(error, "cause", None), BaseException) else error
                        outcome = _failure(task, cause)
                        outcome.detail = str(error)
                        yield outcome
                    except ray.exceptions.RayError as error:
                        died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                                ray.exceptions.OutOfMemoryError, ray.exceptions.LocalRayletDiedError)
                        if isinstance(error, died):  # Ray already retried it once (max_retries=1)
                            message = f"Ray worker died while running this cell, also on its retry ({type(error).__name__})"
                            yield CellOutcome(task.id, error=message, detail=str(error), attempts=2)
                        else:
                            first = next((line for line in str(error).splitlines() if line.strip()), "")
                            yield CellOutcome(task.id, error=f"Ray could not run this cell: {type(error).__name__}: "
                                              f"{first.strip()}", detail=str(error))
                    else:
                        yield CellOutcome(task.id, frame, seconds, cpu)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def make_executor(executor: str = "local", workers: int | None = None, address: str | None = None):
    """``local`` with 1 worker: this process; ``local`` with N > 1: N processes; ``ray``: a Ray cluster."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError("workers", workers, "an integer >= 1")
    if executor == "local":
        if address is not None:
            raise ConfigError("ray address", address, "only with executor 'ray'")
        return SerialExecutor() if (workers or 1) == 1 else ProcessExecutor(workers)
    if executor == "ray":
        return RayExecutor(address=address, num_cpus=workers)
    raise ConfigError("executor", executor, "'local' or 'ray'")
