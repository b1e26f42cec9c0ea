"""Sweep scaling: wall time of one fixed 16-cell sweep run serially, in 2 local worker processes, and on a
local Ray cluster with 2 CPUs.

What is measured:

- the sweep (``SWEEP`` below): 2 datasets (overlapping, moons; 300 rows) x 2 recourse shares (0.05, 0.2)
  x 4 seeds = 16 cells; each cell is 2 models (logistic regression, MLP 16) x 2 generators (generic,
  gravitational), 5 rounds, shift metrics at rounds 0 and 5 with 20 permutations (about 2-3 s per cell on one
  thread of a 2-core machine);
- each executor runs the whole sweep into a fresh store with :func:`run_sweep`, as ``recourse-sim sweep``
  does: ``workers=1`` (this process), ``workers=2`` (a spawn-context process pool, one torch thread per
  worker), ``executor="ray"`` with a local cluster of 2 CPUs started for the run. Wall time is
  ``time.perf_counter`` around ``run_sweep``, so it includes starting the workers (each imports torch and
  the package, a few seconds) and starting Ray; "cell compute" is the sum of the per-cell times in the
  manifest (the work itself, without start-up);
- every store is checked to be identical to the serial one (same rows, same values).

Usage::

    python benchmarks/sweep_scaling.py                 # writes benchmarks/results/sweep_scaling.{md,csv}
    python benchmarks/sweep_scaling.py --no-ray        # without the Ray row

The machine may be shared: the report records the load average, so noisy numbers can be recognised.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; find machine.py when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import pandas as pd  # noqa: E402

from machine import describe, load_average  # noqa: E402
from tables import write_csv  # noqa: E402

from recourse_sim.experiments import load_results, load_sweep, read_manifest, run_sweep  # noqa: E402
from recourse_sim.experiments.executors import ray_available  # noqa: E402

SWEEP = """
name = "sweep-scaling"
seed = 42
rounds = 5
device = "cpu"
n_seeds = 4
models = [{ name = "logistic_regression", epochs = 20 }, { name = "mlp", hidden_sizes = [16], epochs = 20 }]
generators = ["generic", "gravitational"]

[data]
name = "overlapping"
n_samples = 300

[metrics]
evaluate_every = 5
permutations = 20
grid_points = 100

[grid]
"data.name" = ["overlapping", "moons"]
recourse_share = [0.05, 0.2]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sweep_scaling.md")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    args = parser.parse_args()

    runs = [("local, serial", "local", 1), ("local processes", "local", 2)]
    if not args.no_ray:
        if ray_available():
            runs.append(("ray (local cluster)", "ray", 2))
        else:
            print("ray is not installed (pip install 'recourse_sim[ray]'): skipping the Ray row")

    rows, loads = [], [load_average()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sweep.toml"
        path.write_text(textwrap.dedent(SWEEP))
        sweep = load_sweep(path)
        assert len(sweep.cells) == 16, sweep.shape()
        reference: pd.DataFrame | None = None
        for label, executor, workers in runs:
            store = Path(tmp) / label.replace(" ", "_").replace(",", "")
            start = time.perf_counter()
            result = run_sweep(sweep, store, executor=executor, workers=workers)
            wall = time.perf_counter() - start
            loads.append(load_average())
            assert result.ok, result.failed
            frame = load_results(store)
            reference = frame if reference is None else reference
            identical = frame.equals(reference)
            cells = read_manifest(store)["cells"]
            compute = sum(entry["seconds"] for entry in cells)
            cpu = sum(entry["cpu_seconds"] for entry in cells)
            rows.append({"executor": label, "workers / CPUs": workers, "cells": len(sweep.cells),
                         "wall s": round(wall, 2), "cell compute s": round(compute, 2),
                         "cell CPU s": round(cpu, 2),
                         "busy workers (compute / wall)": round(compute / wall, 2),
                         "CPU share per busy worker (CPU / compute)": round(cpu / compute, 2),
                         "speed-up vs serial": None, "store identical to serial": identical})
            print(f"{label:22s} {workers} workers: {wall:6.1f} s wall, {compute:6.1f} s cell compute, {cpu:6.1f} s CPU, "
                  f"identical: {identical}", flush=True)
    serial = rows[0]["wall s"]
    for row in rows:
        row["speed-up vs serial"] = round(serial / row["wall s"], 2)

    write_csv(args.out.with_suffix(".csv"), rows)
    ray_version = "not installed"
    if ray_available():
        import ray

        ray_version = ray.__version__
    header = list(rows[0])
    lines = [
        "# Sweep scaling: one 16-cell sweep, serial vs 2 local processes vs Ray on 2 CPUs",
        "",
        f"- date (UTC): {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}",
        f"- machine: {describe()}; ray {ray_version}",
        f"- load average (1/5/15 min) before and after each run: {' -> '.join(loads)}",
        "- sweep: 2 datasets (overlapping, moons; 300 rows) x 2 recourse shares (0.05, 0.2) x 4 seeds = 16 cells;"
        " per cell 2 models (logistic regression, MLP 16) x 2 generators (generic, gravitational), 5 rounds,"
        " metrics at rounds 0 and 5 with 20 permutations; one torch thread per cell",
        "- wall s: `run_sweep` end to end (includes starting worker processes / the Ray cluster and their imports);"
        " cell compute s: sum of per-cell times in the manifest; busy workers = compute / wall (2 would be two"
        " cores fully used); cell CPU s: sum of the CPU time of the processes running the cells; CPU share per"
        " busy worker = CPU / compute (1.0 = a core to itself; below 1 = the core was shared with other processes)",
        "- command: `python benchmarks/sweep_scaling.py`",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 2) + "---|",
        *("| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows),
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"written {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
