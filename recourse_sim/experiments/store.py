"""Writing run outputs atomically: a run directory appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from recourse_sim.errors import ConfigError


#: What ``recourse-sim run`` writes into its output directory (``population_<model>.png`` besides).
RUN_FILES = ("results.parquet", "results.csv", "summary.csv", "effects.csv", "scenario.toml", "run.json",
             "trajectories.png", "hidden_costs.csv", "hidden_costs.png", "group_gaps.csv")
RUN_MARKER = "run.json"


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM until the block ends, then deliver them to their handlers.

    For a write that must happen whole with its bookkeeping: an interrupt in the middle would leave a file that
    says more (or less, or a half line) than the message that reports it. Outside the main thread, where
    signals cannot be handled, the block runs as it is.
    """
    held: list[int] = []
    kinds = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {kind: signal.signal(kind, lambda signum, frame: held.append(signum)) for kind in kinds}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for kind, handler in previous.items():
            signal.signal(kind, handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def is_run_file(name: str) -> bool:
    return name in RUN_FILES or (name.startswith("population_") and name.endswith(".png"))


def check_output_dir(out: Path) -> Path:
    """Refuse an output path that is a file, the current directory or one above it, or whose parent cannot be
    written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", str(out), "a directory path (this path is an existing file)")
    here, target = Path.cwd().resolve(), out.resolve()
    if here == target or here.is_relative_to(target):
        raise ConfigError("out", str(out), f"a directory that does not contain the current directory {here} "
                          "(outputs replace their directory); e.g. runs/<name>")
    parent = out.parent if out.parent != Path("") else Path(".")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("out", str(out), f"a location you can write to ({existing} is not writable)")
    return out


@contextmanager
def atomic_directory(out: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``out`` in one rename, on error it vanishes."""
    out = check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_run_dir(out: Path, force: bool = False) -> Path:
    """:func:`check_output_dir`, and refuse a non-empty directory that is not a previous run (our ``run.json``
    and only files a run writes) unless ``force``: nothing a run did not write is ever deleted."""
    out = check_output_dir(out)
    if not out.is_dir() or force:
        return out
    names = sorted(p.name for p in out.iterdir())
    foreign = [name for name in names if not is_run_file(name)]
    if names and (foreign or RUN_MARKER not in names):
        shown = ", ".join((foreign or names)[:5]) + (" ..." if len(foreign or names) > 5 else "")
        raise ConfigError("out", str(out), f"a new or empty directory, or a previous run (with {RUN_MARKER}); it "
                          f"holds files recourse-sim did not write ({shown}): choose another --out, or pass --force "
                          "to write the results into it (other files are kept)")
    return out


def open_staging(out: Path) -> Path:
    """A new hidden sibling directory ``.<name>.<random>.partial`` that becomes ``out`` on :func:`publish`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))


def publish(staging: Path, out: Path, force: bool) -> Path:
    """Move a finished staging directory to ``out``: in one rename when ``out`` is new, empty or a previous run;
    with ``force`` into a directory holding other files, file by file (replacing only a run's files)."""
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not names or (RUN_MARKER in names and all(is_run_file(name) for name in names)):
        _swap(staging, out)
        return out
    if not force:
        check_run_dir(out)  # something appeared in out while the run ran: refuse, keep the staging directory
    for name in names:
        if is_run_file(name) and (out / name).is_file():
            (out / name).unlink()
    for path in staging.iterdir():
        os.replace(path, out / path.name)
    staging.rmdir()
    return out


def _swap(staging: Path, out: Path) -> None:
    if out.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, retired / out.name)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)


def write_results(frame: pd.DataFrame, directory: Path, stem: str = "results") -> list[Path]:
    """The tidy table as Parquet (typed, compact) and CSV (for spreadsheets)."""
    parquet, csv = directory / f"{stem}.parquet", directory / f"{stem}.csv"
    frame.to_parquet(parquet, index=False)
    frame.to_csv(csv, index=False)
    return [parquet, csv]


def write_text(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path
