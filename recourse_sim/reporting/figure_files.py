"""A report's figure files, drawn in parallel processes when the caller has cores to spare.

Why: the SaTML report draws 30 figures (trajectories, final bars, hidden costs of 10 experiments), 32 s of
matplotlib on one core, which the reproduction paid after its last cell, with ``--workers 2`` on 2 cores. Figures
are independent, so they are drawn by as many processes as the run had workers (spawned: matplotlib and
pyplot's global state stay out of threads), while the calling process writes the report's tables. Every file is
written by the same function with the same data whichever process draws it (``tests/test_report.py``: the same
bytes). The reproduction's loading and report after its last cell: 33 s -> 21 s (with cheaper figures, see
``style.confidence_band``). With ``background=True`` (the reproduction, which submits an experiment's figures
while other cells still run: ``experiments.reproduce.ReportFigures``) the processes run at the lowest priority,
so they draw on the cores that the running cells leave idle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class FigureFile:
    """``plot(frame, path=path, **options)`` writes one figure file; ``plot`` is a module-level function (it is sent
    to another process by name)."""

    plot: Callable[..., Any]
    frame: pd.DataFrame
    path: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file's path relative to the report: ``figures/<file name>``."""
        return f"{self.path.parent.name}/{self.path.name}"


def _draw(figure: FigureFile) -> None:
    figure.plot(figure.frame, path=figure.path, **figure.options)


def _lowest_priority() -> None:
    """Make this process the last in line for a core (nice 19 where the OS has it): it then draws on the cores
    that the simulation leaves idle and barely slows the cells it runs beside (measured here: 8 rounds of credit
    default on two threads took 60.2 s alone and 60.6 s beside a process drawing figures at nice 19 without pause,
    which drew 25 of them meanwhile)."""
    if hasattr(os, "nice"):
        with suppress(OSError):
            os.nice(19)


class FigureDrawer:
    """Draws figure files in ``workers`` spawned processes while the caller goes on (writing its tables); with one
    worker, in this process when :meth:`wait` is called.

    ``with FigureDrawer(2) as drawer: drawer.submit(figures); ...; drawer.wait()``. Leaving the block early (an
    error, Ctrl-C) cancels the figures not yet started and waits for the others. ``background=True`` runs the
    processes at the lowest priority, for figures submitted while the simulation still runs.
    """

    def __init__(self, workers: int = 1, background: bool = False) -> None:
        self.workers = workers
        self.background = background
        self._figures: list[FigureFile] = []
        self._futures: list = []
        self._pool = None

    @property
    def draws_ahead(self) -> bool:
        """Whether a submitted figure starts drawing at once (in another process), not at :meth:`wait`."""
        return self.workers > 1

    def __enter__(self) -> FigureDrawer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def submit(self, figures: Sequence[FigureFile]) -> None:
        """Start drawing ``figures`` (with one worker: keep them for :meth:`wait`)."""
        if self.workers <= 1:
            self._figures += figures
            return
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_lowest_priority if self.background else None)
        self._futures += [self._pool.submit(_draw, figure) for figure in figures]

    def wait(self) -> None:
        """Return once every submitted figure is written; raise the first error of one that was not."""
        for figure in self._figures:
            _draw(figure)
        self._figures = []
        for future in self._futures:
            future.result()
