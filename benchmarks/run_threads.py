"""One experiment run alone (``recourse-sim run``) on one thread and on every core: wall and CPU seconds, same results.

A simulation runs its small tensor operations on one torch thread, but its compiled loops (training, the VAEs'
training, the search) take the caller's torch thread count (``recourse_sim.cores.small_tensor_threads``): by
default one per physical core. This benchmark runs the command a user runs, ``recourse-sim run SCENARIO``, in a
fresh process per thread count, with ``OMP_NUM_THREADS`` set to it (torch's count, hence the compiled loops'), and
checks that every run wrote the same ``results.parquet`` as the first (``DataFrame.equals``) and the same bytes of
``results.csv``, ``summary.csv`` and ``effects.csv``.

Columns: thread count, wall seconds of the command (import, simulation, every output file), the simulation's own
seconds (``run.json``), the CPU seconds of the child process (user + system, every thread), the speed-up of the
wall time against the first row, and whether the results equal the first row's.

Usage::

    python benchmarks/run_threads.py                                  # credit default as shipped, 1 and 2 threads
    python benchmarks/run_threads.py --experiment moons --threads 1 2 4 --rounds 10

Writes ``benchmarks/results/run_threads_cpu.md`` and ``.csv`` and prints the table. The runs' outputs go to a
temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import filecmp
import json
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import pandas as pd
import tomli_w

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, uptime  # noqa: E402
from startup import cli_command, user_environment  # noqa: E402
from tables import write_report  # noqa: E402

SCENARIOS = ROOT / "recourse_sim" / "scenarios" / "satml"
#: The written files whose bytes must match between thread counts (results.parquet is compared as a table).
SAME_BYTES = ("results.csv", "summary.csv", "effects.csv")


def scenario_file(experiment: str, rounds: int | None, scratch: Path) -> Path:
    """The shipped SaTML scenario of ``experiment``, or a copy of it with ``rounds`` rounds."""
    shipped = SCENARIOS / f"{experiment}.toml"
    if rounds is None:
        return shipped
    raw = tomllib.loads(shipped.read_text())
    raw["rounds"] = rounds
    copy = scratch / shipped.name
    copy.write_text(tomli_w.dumps(raw))
    return copy


def timed_run(scenario: Path, threads: int, out: Path) -> dict:
    """``recourse-sim run`` of ``scenario`` with ``threads`` torch threads: wall, simulation and CPU seconds."""
    environment = {**user_environment(), "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([*cli_command(), "run", str(scenario), "--out", str(out), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, env=environment)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    simulated = json.loads((out / "run.json").read_text())["seconds"]
    return {"threads": threads, "wall_s": wall, "simulation_s": simulated, "cpu_s": cpu}


def same_results(first: Path, other: Path) -> bool:
    frames = [pd.read_parquet(directory / "results.parquet") for directory in (first, other)]
    return frames[0].equals(frames[1]) and all(filecmp.cmp(first / name, other / name, shallow=False)
                                               for name in SAME_BYTES)


def measure(experiment: str, thread_counts: list[int], rounds: int | None) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="recourse_sim_threads_") as scratch:
        scenario = scenario_file(experiment, rounds, Path(scratch))
        outs = [Path(scratch) / f"threads{threads}" for threads in thread_counts]
        for threads, out in zip(thread_counts, outs):
            row = timed_run(scenario, threads, out)
            row["speedup"] = rows[0]["wall_s"] / row["wall_s"] if rows else 1.0
            row["same_results"] = same_results(outs[0], out)
            rows.append(row)
            print(f"{threads} threads: {row['wall_s']:.1f} s wall", flush=True)
    return rows


def report(rows: list[dict], experiment: str, rounds: int | None, before: str, after: str) -> str:
    """The markdown report of ``rows``."""
    lines = [
        "# One experiment alone, `recourse-sim run`, on one thread and on every core (`benchmarks/run_threads.py`)",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {describe()}",
        f"- load before: {before}",
        f"- load after: {after}",
        f"- scenario: `recourse_sim/scenarios/satml/{experiment}.toml`"
        + ("" if rounds is None else f" with {rounds} rounds instead of the shipped count"),
        "- each row a fresh `recourse-sim run SCENARIO --out DIR --quiet` with `OMP_NUM_THREADS` = threads; CPU is",
        "  the child's user + system seconds over all its threads",
        "",
        "| threads | wall s | simulation s | CPU s | speed-up | same results as row 1 |",
        "|---:|---:|---:|---:|---:|---|",
        *(f"| {r['threads']} | {r['wall_s']:.1f} | {r['simulation_s']:.1f} | {r['cpu_s']:.1f} | {r['speedup']:.2f}x "
          f"| {'yes' if r['same_results'] else '**no**'} |" for r in rows),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="credit_default",
                        choices=sorted(path.stem for path in SCENARIOS.glob("*.toml")))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts, one run each")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds instead of the scenario's (default: as shipped)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "run_threads_cpu",
                        help="results path without suffix (.md and .csv are written)")
    args = parser.parse_args()
    if any(threads < 1 for threads in args.threads):
        parser.error(f"--threads: {args.threads}; every count must be at least 1")
    before = uptime()
    rows = measure(args.experiment, args.threads, args.rounds)
    markdown = report(rows, args.experiment, args.rounds, before, uptime())
    write_report(args.out, markdown, rows)
    print(markdown)
    if not all(row["same_results"] for row in rows):
        sys.exit("the results differ between thread counts")


if __name__ == "__main__":
    main()
