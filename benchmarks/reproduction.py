"""The SaTML reproduction's wall time as a user runs it, with every cell's seconds (issue 12's target: all 7
experiments in under 10 minutes with ``--workers 2`` on 2 cores).

What is measured: ``reproduce_study`` (what ``recourse-sim reproduce satml`` calls) from a fresh output directory
to its written report, by the clock on the wall, with the cells' wall and CPU seconds from the sweep stores'
manifests (a cell's CPU counts every thread of its worker process, lent cores included) and when each ended.
``--study paper`` runs the paper's 7 experiments only; ``--study full`` what the command runs, the 7 and the
3 real-data ablations without constraints.

Usage::

    python benchmarks/reproduction.py --out /tmp/satml_paper            # ~10 min on 2 cores
    python benchmarks/reproduction.py --study full --out /tmp/satml     # ~12 min

The output directory must not exist yet (it holds the reproduction afterwards, for comparison with another
run's). Writes ``benchmarks/results/reproduction_<study>_cpu.md`` and ``.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, uptime  # noqa: E402
from tables import write_report  # noqa: E402

from recourse_sim.experiments import satml  # noqa: E402
from recourse_sim.experiments.reproduce import STUDIES, reproduce_study  # noqa: E402


def paper_only(quick: bool, only):  # noqa: ANN001, ANN202 (the Study.sweeps signature)
    """The satml study's sweeps without the ablations: the paper's 7 experiments."""
    return {family: sweep for family, sweep in satml.satml_sweeps(quick, only).items()
            if family not in satml.ABLATIONS}


def cell_rows(out: Path, start: dt.datetime) -> list[dict]:
    """One row per cell from the stores' manifests, in the order the cells ended."""
    rows = []
    for manifest in sorted(out.glob("*/manifest.json")):
        family = manifest.parent.name
        for cell in json.loads(manifest.read_text())["cells"]:
            ended = dt.datetime.fromisoformat(cell["finished"])
            rows.append({"experiment": satml.experiment_name(family, cell["axes"]["data.name"]),
                         "cell wall s": round(cell["seconds"], 1), "cell CPU s": round(cell["cpu_seconds"], 1),
                         "ended at s": round((ended - start).total_seconds(), 1), "rows": cell["rows"]})
    return sorted(rows, key=lambda row: row["ended at s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=("paper", "full"), default="paper")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="a new directory for the reproduction")
    parser.add_argument("--results", type=Path, default=None, help="report path (default: benchmarks/results/"
                        "reproduction_<study>_cpu.md)")
    args = parser.parse_args()
    if args.out.exists():
        parser.error(f"--out {args.out} exists: give a new directory")
    study = STUDIES["satml"]
    if args.study == "paper":
        study = dataclasses.replace(study, sweeps=paper_only)
    load_before = uptime()
    start = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    clock = time.perf_counter()
    reproduction = reproduce_study(study, args.out, workers=args.workers)
    wall = time.perf_counter() - clock
    if reproduction.failed:
        raise SystemExit(f"cells failed: {reproduction.failed}")
    rows = cell_rows(args.out, start)
    cpu = sum(row["cell CPU s"] for row in rows)
    lines = [
        f"# SaTML reproduction time: {args.study} ({len(rows)} experiments), --workers {args.workers}, CPU", "",
        f"- date (UTC): {start:%Y-%m-%d %H:%M}",
        f"- machine: {describe()}",
        f"- load before: {load_before}",
        f"- load after: {uptime()}",
        f"- command: `python benchmarks/reproduction.py --study {args.study} --workers {args.workers} --out "
        f"{args.out}`",
        f"- **wall time: {wall:.0f} s ({wall / 60:.1f} min)** from the call to the written report; cells "
        f"{reproduction.seconds:.0f} s by the sweep's own clock, so {wall - reproduction.seconds:.0f} s of "
        "loading and report (tables, figures, report.md)",
        f"- the cells' CPU: {cpu:.0f} s, so {cpu / args.workers:.0f} s ({cpu / args.workers / 60:.1f} min) for "
        f"{args.workers} cores kept busy", "",
        "| experiment | cell wall s | cell CPU s | ended at s | rows |", "|---|---:|---:|---:|---:|",
        *(f"| {r['experiment']} | {r['cell wall s']} | {r['cell CPU s']} | {r['ended at s']} | {r['rows']:,} |"
          for r in rows), "",
    ]
    markdown = "\n".join(lines)
    print(markdown)
    results = args.results or ROOT / "benchmarks" / "results" / f"reproduction_{args.study}_cpu.md"
    write_report(results, markdown, rows)


if __name__ == "__main__":
    main()
