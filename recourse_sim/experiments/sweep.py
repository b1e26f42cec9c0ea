"""Run a sweep into a results store that survives crashes: every cell is written once, whole, or not at all.

Store layout (``OUT``)::

    manifest.json            the truth: sweep fingerprint, axes, and per cell its status (pending, done,
                             failed), file, row count, SHA-256, wall and CPU seconds, attempts and error
    sweep.toml               the resolved sweep (every default written out)
    cells/<cell_id>.parquet  the cell's tidy table, with cell_id, seed and one column per grid axis in front
    cells/<cell_id>.toml     the cell's resolved scenario (``recourse-sim run`` reproduces the cell alone)

Every file is written to a temporary file in the same directory, flushed to disk and renamed over its final
name (``os.replace``); a cell counts as finished only once the manifest, rewritten the same way after its
files, says so. A sweep killed at any moment (Ctrl-C, ``kill -9``, power loss) therefore leaves finished
cells and at most a stray temporary file, which the next run deletes; rerunning the same command skips
the finished cells. A store written by a different sweep is refused (``force=True`` discards it); one
process at a time may write a store (a lock file, released by the OS even when the process is killed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import pandas as pd
from tqdm.auto import tqdm

from recourse_sim.errors import ConfigError, RecourseSimError
from recourse_sim.experiments import executors as _executors
from recourse_sim.experiments.executors import CellFn, CellOutcome, CellTask, make_executor
from recourse_sim.experiments.grid import Cell, Sweep, check_data, load_sweep

FORMAT = "recourse_sim.sweep/1"
MANIFEST = "manifest.json"
SWEEP_FILE = "sweep.toml"
CELLS = "cells"
LOCK = ".lock"
REPORT = "report"


class StoreWriteError(RecourseSimError):
    """A cell's results could not be written (disk full, permissions...); nothing partial is left behind."""


# ----------------------------------------------------------------------------------------- atomic files
def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """``write(handle)`` into a temporary sibling of ``path``, flush it to disk, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    with suppress(OSError):  # not supported everywhere (Windows); the rename is still atomic
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ store
def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a sweep store; a clear error when ``root`` is not one."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir() or not path.is_file():
        raise ConfigError("results store", str(root), f"a directory written by `recourse-sim sweep` (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError("results store", str(path), f"a readable manifest written by `recourse-sim sweep` "
                          f"(it is corrupt: {error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError("results store", str(path), f"a manifest of format {FORMAT!r}")
    return manifest


def load_results(root: str | Path, cells: Collection[str] | None = None) -> pd.DataFrame:
    """All finished cells of a store as one tidy table (cells in grid order); with ``cells``, only those ids."""
    root = Path(root)
    manifest = read_manifest(root)
    frames = []
    for entry in manifest["cells"]:
        if entry["status"] != "done" or (cells is not None and entry["id"] not in cells):
            continue
        path = root / entry["file"]
        if not path.is_file():
            raise ConfigError("results store", str(path), "the file the manifest lists for a finished cell "
                              "(it is missing: rerun the sweep to recompute the cell)")
        frames.append(pd.read_parquet(path))
    if not frames:
        return pd.DataFrame(columns=["cell_id", "seed", *manifest["axes"], "system", "model", "generator",
                                     "repetition", "round", "metric", "value"])
    return pd.concat(frames, ignore_index=True)


def _check_writable(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError("out", str(root), "a directory path (this path is an existing file)")
    existing = next((p for p in [root, *root.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("out", str(root), f"a directory you can write to ({existing} is not writable)")


def _ours(path: Path) -> bool:
    return path.name in (LOCK, CELLS, SWEEP_FILE, MANIFEST) or (path.name.startswith(".") and path.name.endswith(".tmp"))


def _check_foreign(root: Path, force: bool) -> None:
    """Refuse a directory that holds files a sweep did not write (a store without a manifest holds only ours)."""
    if not root.is_dir() or (root / MANIFEST).exists():
        return
    foreign = [p.name for p in root.iterdir() if not _ours(p)]
    cells = root / CELLS
    orphans = [f"{CELLS}/{p.name}" for p in cells.iterdir() if not _ours(p)] if cells.is_dir() else []
    if foreign or (orphans and not force):
        hint = "" if foreign else "; pass --force to discard them"
        raise ConfigError("out", str(root), "a new or empty directory, or a store written by `recourse-sim sweep` "
                          f"(this directory holds other files: {', '.join(sorted(foreign or orphans)[:5])}{hint})")


class SweepStore:
    """The results store of one sweep; open it with :meth:`open` (which locks it) and :meth:`close` it."""

    def __init__(self, root: Path, sweep: Sweep, manifest: dict[str, Any], lock: Any) -> None:
        self.root, self.sweep, self.manifest, self._lock = root, sweep, manifest, lock
        self.entries = {entry["id"]: entry for entry in manifest["cells"]}
        self.warnings: list[str] = []

    # ------------------------------------------------------------------------------------------- open
    @classmethod
    def open(cls, root: str | Path, sweep: Sweep, force: bool = False) -> SweepStore:
        root = Path(root)
        _check_writable(root)
        _check_foreign(root, force)  # before creating anything in a directory that is not ours
        try:
            (root / CELLS).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError("out", str(root), f"a directory you can write to ({error.strerror})") from None
        lock = _lock(root)
        try:
            store = cls._prepare(root, sweep, force, lock)
        except OSError as error:
            _unlock(lock)
            raise StoreWriteError(f"could not prepare the results store {root}: {error}") from error
        except BaseException:
            _unlock(lock)
            raise
        return store

    @classmethod
    def _prepare(cls, root: Path, sweep: Sweep, force: bool, lock: Any) -> SweepStore:
        old: dict[str, Any] | None = None
        if (root / MANIFEST).exists():
            try:
                old = read_manifest(root)
            except ConfigError:
                if not force:
                    raise

        if old is not None and old.get("fingerprint") != sweep.fingerprint and not force:
            raise ConfigError(
                "out", str(root),
                f"a store of this sweep, or a new directory: it holds results of a different sweep "
                f"({old.get('name')!r}, {len(old.get('cells', []))} cells, fingerprint {str(old.get('fingerprint'))[:12]}; "
                f"this sweep {sweep.name!r} has {len(sweep.cells)} cells, fingerprint {sweep.fingerprint[:12]}). "
                "Results of different sweeps are never mixed: choose another --out, or pass --force to discard "
                "the stored results")
        if force:
            _reset(root)
            old = None
        _remove_temporaries(root)
        manifest = {
            "format": FORMAT,
            "name": sweep.name,
            "fingerprint": sweep.fingerprint,
            "axes": list(sweep.axes),
            "grid": sweep.axes,
            "n_seeds": sweep.n_seeds,
            "seeds": sweep.seeds,
            "created": (old or {}).get("created", _now()),
            "updated": _now(),
            "versions": _versions(),
            "cells": [_entry(cell) for cell in sweep.cells],
        }
        store = cls(root, sweep, manifest, lock)
        previous = {entry["id"]: entry for entry in (old or {}).get("cells", [])}
        for cell_id, entry in store.entries.items():
            before = previous.get(cell_id)
            if before is None or before.get("status") != "done":
                if before is not None and before.get("status") == "failed":
                    entry["attempts"] = before.get("attempts", 0)
                continue
            path = root / before["file"]
            if path.is_file() and _sha256(path) == before.get("sha256"):
                entry.update(before)
            else:
                store.warnings.append(f"cell {cell_id}: its results file is missing or changed; it runs again")
        store.save()
        _write_text(root / SWEEP_FILE, sweep.to_toml())
        return store

    def close(self) -> None:
        _unlock(self._lock)
        self._lock = None

    # ------------------------------------------------------------------------------------------ state
    def is_done(self, cell_id: str) -> bool:
        return self.entries[cell_id]["status"] == "done"

    def save(self) -> None:
        self.manifest["updated"] = _now()
        _write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=1))

    def record(self, cell: Cell, outcome: CellOutcome) -> None:
        """Write a finished cell (files first, then the manifest) or mark it failed."""
        entry = self.entries[cell.id]
        entry["attempts"] = entry.get("attempts", 0) + outcome.attempts
        entry["seconds"] = round(outcome.seconds, 3)
        entry["cpu_seconds"] = round(outcome.cpu_seconds, 3)
        entry["finished"] = _now()
        try:
            if outcome.ok:
                frame = identify(outcome.frame, cell)
                _write_text(self.root / CELLS / f"{cell.id}.toml", cell.scenario.to_toml())
                path = self.root / entry["file"]
                atomic_write(path, lambda handle: frame.to_parquet(handle, index=False))
                entry.update(status="done", rows=len(frame), sha256=_sha256(path), error=None, detail=None)
            else:
                detail = outcome.detail if outcome.detail is None or len(outcome.detail) <= 4000 else \
                    "...\n" + outcome.detail[-4000:]
                entry.update(status="failed", error=outcome.error, detail=detail)
            self.save()
        except OSError as error:
            entry.update(status="pending")
            for suffix in (".parquet", ".toml"):  # a cell is whole or absent: drop whatever of it was renamed
                with suppress(OSError):
                    (self.root / CELLS / f"{cell.id}{suffix}").unlink()
            raise StoreWriteError(
                f"could not write cell {cell.id} ({cell.describe()}) to {self.root}: {error.strerror or error}. "
                "Nothing partial was kept and the cells finished before are safe: fix the cause (e.g. free disk "
                "space) and rerun the same command to resume") from error


def identify(frame: pd.DataFrame, cell: Cell) -> pd.DataFrame:
    """The cell's tidy table with ``cell_id``, ``seed`` and one column per grid axis in front."""
    frame = frame.reset_index(drop=True)
    front = {"cell_id": cell.id, "seed": cell.seed, **cell.axes}
    ids = pd.DataFrame({name: [value] * len(frame) for name, value in front.items()}, index=frame.index)
    ids["seed"] = ids["seed"].astype("int64")
    return pd.concat([ids, frame], axis=1)


def _entry(cell: Cell) -> dict[str, Any]:
    return {"id": cell.id, "seed": cell.seed, "axes": cell.axes, "status": "pending",
            "file": f"{CELLS}/{cell.id}.parquet", "rows": None, "sha256": None, "seconds": None, "cpu_seconds": None,
            "attempts": 0, "finished": None, "error": None, "detail": None}


def _versions() -> dict[str, str]:
    import torch

    from recourse_sim import __version__

    return {"recourse_sim": __version__, "python": platform.python_version(), "torch": torch.__version__}


def _reset(root: Path) -> None:
    """Discard a store's results (``--force``): the manifest, sweep file, cell files and report."""
    for name in (MANIFEST, SWEEP_FILE):
        with suppress(FileNotFoundError):
            (root / name).unlink()
    for path in (root / CELLS).iterdir():
        if path.is_file():
            path.unlink()
    if (root / REPORT).is_dir():
        shutil.rmtree(root / REPORT)


def _remove_temporaries(root: Path) -> None:
    for directory in (root, root / CELLS):
        for path in directory.glob(".*.tmp"):
            with suppress(FileNotFoundError):
                path.unlink()


def _lock(root: Path) -> Any:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock (do not run two sweeps on one store)
        return None
    handle = open(root / LOCK, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise ConfigError("out", str(root), "a store no other sweep is writing to: another `recourse-sim sweep` "
                          "is running on it (wait for it to finish, or choose another --out)") from None
    return handle


def _unlock(handle: Any) -> None:
    if handle is not None:
        handle.close()  # closing the file releases the lock


# -------------------------------------------------------------------------------------------------- run
@dataclass
class SweepResult:
    """What a sweep run did; ``results()`` loads the store."""

    out: Path
    sweep: Sweep
    skipped: int
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.sweep.cells)

    @property
    def done(self) -> int:
        return self.skipped + len(self.ran)

    @property
    def ok(self) -> bool:
        return not self.failed

    def results(self) -> pd.DataFrame:
        return load_results(self.out)


def run_sweep(
    sweep: Sweep | str | Path,
    out: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    force: bool = False,
    progress: bool = False,
    cell_fn: CellFn | None = None,
) -> SweepResult:
    """Run every cell of ``sweep`` not yet finished in the store ``out``; see the module docstring.

    ``executor="local"`` runs the cells in this process (``workers`` 1 or None) or in ``workers`` processes;
    ``executor="ray"`` runs them on a Ray cluster (``address``, or a local one with ``workers`` CPUs).
    A failing cell is recorded as failed and the others still run (``result.failed``); rerunning retries it.
    ``cell_fn`` replaces :func:`run_cell` (a picklable top-level function; used by tests).
    With ``workers > 1`` in a script, call it under ``if __name__ == "__main__":`` (worker processes are
    spawned and import the main module).
    """
    return run_sweeps([(sweep, out)], executor=executor, workers=workers, address=address, force=force,
                      progress=progress, cell_fn=cell_fn)[0]


def run_sweeps(
    jobs: Sequence[tuple[Sweep | str | Path, str | Path]],
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    force: bool = False,
    progress: bool = False,
    cell_fn: CellFn | None = None,
    on_done: Callable[[int, Cell], None] | None = None,
) -> list[SweepResult]:
    """Run several ``(sweep, out)`` pairs through *one* executor, as :func:`run_sweep` runs one.

    The unfinished cells of all stores form one queue, in the order given (the sweeps in order, each one's
    cells in grid order), so a worker that finishes early takes the next cell of any sweep instead of idling
    until the slowest cell of its own sweep ends. Put the longest cells first for the shortest wall time.
    Each store is opened (and locked) before any cell runs and records only its own cells.

    ``on_done(job, cell)`` is called in this process for every cell whose results are in its store: first for
    those a previous run finished, then for each one as soon as it is recorded (``job`` indexes ``jobs``). The
    reproduction draws an experiment's figures from it while other cells still run; an error it raises stops
    the run (the recorded cells stay in their stores).
    """
    sweeps = [(sweep if isinstance(sweep, Sweep) else load_sweep(sweep), Path(out)) for sweep, out in jobs]
    runner = make_executor(executor, workers, address)  # argument errors before touching the disk
    for sweep, _ in sweeps:
        check_data(sweep)
    stores: list[SweepStore] = []
    try:
        for sweep, out in sweeps:
            stores.append(SweepStore.open(out, sweep, force=force))
        return _run_stores(stores, runner, progress, cell_fn or _executors.run_cell, on_done)
    finally:
        for store in stores:
            store.close()


def _run_stores(stores: list[SweepStore], runner: Any, progress: bool, cell_fn: CellFn,
                on_done: Callable[[int, Cell], None] | None = None) -> list[SweepResult]:
    results, queue = [], {}  # queue: task id -> (number, store, result, cell); ids are unique across stores
    finished: list[tuple[int, Cell]] = []
    for number, store in enumerate(stores):
        result = SweepResult(store.root, store.sweep, skipped=0, warnings=list(store.warnings))
        todo = [cell for cell in store.sweep.cells if not store.is_done(cell.id)]
        finished += [(number, cell) for cell in store.sweep.cells if store.is_done(cell.id)]
        result.skipped = len(store.sweep.cells) - len(todo)
        queue.update({f"{number}:{cell.id}": (number, store, result, cell) for cell in todo})
        results.append(result)
    on_done = on_done or (lambda number, cell: None)
    for number, cell in finished:
        on_done(number, cell)
    start = time.perf_counter()
    total = sum(len(store.sweep.cells) for store in stores)
    name = stores[0].sweep.name if len(stores) == 1 else " + ".join(store.sweep.name for store in stores)
    try:
        with tqdm(total=total, initial=total - len(queue), unit="cell", desc=name, disable=not progress,
                  dynamic_ncols=True) as bar:
            if queue:
                with runner:
                    tasks = [CellTask(task_id, cell.config) for task_id, (*_, cell) in queue.items()]
                    for outcome in runner.run(tasks, cell_fn):
                        number, store, result, cell = queue[outcome.id]
                        store.record(cell, outcome)
                        if outcome.ok:
                            result.ran.append(cell.id)
                            on_done(number, cell)
                        else:
                            result.failed[cell.id] = outcome.error or "failed"
                            bar.set_postfix(failed=sum(len(r.failed) for r in results))
                            if progress:
                                bar.write(f"cell {cell.id} ({cell.describe()}) failed: {outcome.error}")
                        bar.update(1)
    finally:
        seconds = time.perf_counter() - start
        for result in results:
            result.seconds = seconds
    return results
