"""Where a benchmark's results go: its markdown report and a CSV of its table's rows, side by side.

The scripts in ``benchmarks/`` write ``results/<name>.md`` (the table with the machine, load and settings) and
``results/<name>.csv`` (one row per measurement, for later comparison, e.g. ``cf_throughput.py --before``).
"""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` (dicts with the same keys, in column order) as a CSV file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_report(path: Path, markdown: str, rows: list[dict]) -> None:
    """The report ``markdown`` at ``path`` (.md) and ``rows`` next to it (.csv)."""
    path = path.with_suffix(".md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown)
    write_csv(path.with_suffix(".csv"), rows)
