"""Writing run outputs atomically: a run directory appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from recourse_sim.errors import ConfigError


def check_output_dir(out: Path) -> Path:
    """Refuse an output path that is a file or whose parent cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("out", str(out), "a directory path (this path is an existing file)")
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
        if out.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, retired / out.name)
            os.replace(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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
