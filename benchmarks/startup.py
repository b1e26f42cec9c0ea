"""Start-up and the default run as a user times them: wall seconds of fresh processes.

What is measured (issue 12, "Start-up" and the target "``recourse-sim run`` default scenario: < 5 s wall including
import"):

- ``python -c "import recourse_sim"`` and ``recourse-sim --help`` (targets < 1.5 s and < 1 s);
- ``recourse-sim run -q --out DIR``: the embedded default scenario end to end (import, simulation, every output
  file, interpreter exit), the README's first command after installing; the simulation's own seconds are read
  from the run's ``run.json``;
- what the heavy imports cost, each alone in a fresh interpreter (``python -c "import X"``), against
  ``python -c pass``: they are the floor of any run;
- the first run after installing: the default run with an empty numba cache (``NUMBA_CACHE_DIR`` pointed at a
  fresh directory, so nothing the package has cached is read or overwritten), and how long each compiled kernel
  took to compile in it, from numba's compile events (``numba.core.event``). ``--no-cold`` skips it (~45 s).

The commands run with ``PYTHONDONTWRITEBYTECODE`` unset (as a user's interpreter does: it caches bytecode). Each
command runs once to warm up and then ``--repeats`` times; the table gives the median, min and max. Output
directories are made in a fresh temporary directory and removed.

Usage::

    python benchmarks/startup.py               # ~1 min on 2 cores
    python benchmarks/startup.py --repeats 3

Writes ``benchmarks/results/startup_cpu.md`` and ``.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "benchmarks") not in sys.path:
    sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import describe, uptime  # noqa: E402
from tables import write_report  # noqa: E402

#: The third-party imports a run needs (torch alone is about half of the import).
HEAVY_IMPORTS = ("torch", "mesa", "pandas", "matplotlib.pyplot", "numba", "scipy.special")

#: A default run in a child interpreter that records numba's compile events and prints, as JSON, the seconds of
#: every outermost compilation (a kernel's own helpers compile inside it) by function, summed over signatures.
_COMPILE_RECORDER = """
import json, sys
from numba.core import event
from recourse_sim.cli import app
with event.install_recorder("numba:compile") as recorder:
    app(["run", "-q", "--out", sys.argv[1]], standalone_mode=False)
seconds, open_compiles = {}, []
for stamp, ev in recorder.buffer:
    if ev.is_start:
        open_compiles.append(stamp)
        continue
    started = open_compiles.pop()
    if not open_compiles:
        function = ev.data["dispatcher"].py_func
        name = function.__module__ + "." + function.__qualname__
        seconds[name] = seconds.get(name, 0.0) + stamp - started
print(json.dumps(seconds))
"""


def cli_command() -> list[str]:
    """The ``recourse-sim`` console script of this interpreter's environment, else ``python -m``."""
    script = Path(sys.executable).with_name("recourse-sim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "recourse_sim.cli"]


def user_environment() -> dict[str, str]:
    """This environment without ``PYTHONDONTWRITEBYTECODE``: a user's interpreter caches compiled bytecode, and
    without that cache every run recompiles the package's modules from source (~0.1 s)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=user_environment())
    return time.perf_counter() - start


def _default_run(scratch: Path, index: int) -> tuple[float, float]:
    """Wall seconds of one default run, and the simulation's seconds from its run.json."""
    out = scratch / f"run{index}"
    wall = _wall([*cli_command(), "run", "-q", "--out", str(out)])
    simulated = json.loads((out / "run.json").read_text())["seconds"]
    shutil.rmtree(out)
    return wall, simulated


def first_run_after_installing(scratch: Path) -> tuple[float, dict[str, float]]:
    """Wall seconds of the default run with an empty numba cache of its own, and the compile seconds per
    outermost compiled function in that run (those above 0.05 s), largest first."""
    environment = {**user_environment(), "NUMBA_CACHE_DIR": str(scratch / "numba_cache")}
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", _COMPILE_RECORDER, str(scratch / "cold")], check=True,
                           capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - start
    seconds = json.loads(child.stdout.strip().splitlines()[-1])
    return wall, dict(sorted(((name, s) for name, s in seconds.items() if s > 0.05), key=lambda item: -item[1]))


def measure(repeats: int) -> tuple[list[dict], float]:
    """Rows of (what, command, median/min/max seconds), and the first default run's wall seconds."""
    python = [sys.executable, "-c"]
    commands = {
        "python -c pass (interpreter)": [*python, "pass"],
        "import recourse_sim": [*python, "import recourse_sim"],
        "recourse-sim --help": [*cli_command(), "--help"],
        **{f"import {name}": [*python, f"import {name}"] for name in HEAVY_IMPORTS},
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="recourse_sim_startup_") as scratch:
        first, _ = _default_run(Path(scratch), 0)
        runs = [_default_run(Path(scratch), i + 1) for i in range(repeats)]
        rows.append(_row("recourse-sim run (default scenario)", "recourse-sim run -q --out DIR", [w for w, _ in runs]))
        rows.append(_row("  of which the simulation (run.json seconds)", "", [s for _, s in runs]))
    for what, command in commands.items():
        _wall(command)  # warm the file cache
        rows.append(_row(what, " ".join(Path(command[0]).name if i == 0 else c for i, c in enumerate(command)),
                         [_wall(command) for _ in range(repeats)]))
    return rows, first


def _row(what: str, command: str, seconds: list[float]) -> dict:
    return {"what": what, "command": command, "median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds), "repeats": len(seconds)}


def write(rows: list[dict], first: float, cold: tuple[float, dict[str, float]] | None, before: str, after: str,
          path: Path) -> str:
    lines = [
        "# Start-up and the default run (`benchmarks/startup.py`)",
        "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {describe()}",
        f"- load before: {before}",
        f"- load after: {after}",
        f"- first default run of this benchmark (loads or compiles the numba kernels): {first:.2f} s wall",
        "- the commands run with `PYTHONDONTWRITEBYTECODE` unset, as in a user's environment (bytecode cached)",
        "",
        "| what | median s | min s | max s | runs |",
        "|---|---:|---:|---:|---:|",
        *(f"| {r['what']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} | {r['repeats']} |" for r in rows),
        "",
        "Each import row is a fresh interpreter importing that module alone, so it includes the interpreter's",
        "start (the first import row); the imports overlap (Mesa imports pandas and scipy), so they do not add up.",
        "",
    ]
    if cold is not None:
        wall, compiles = cold
        lines += [
            "## The first run after installing (empty numba cache)",
            "",
            f"The default run with `NUMBA_CACHE_DIR` pointed at an empty directory: **{wall:.1f} s** wall, of which",
            f"{sum(compiles.values()):.1f} s compiling (outermost compilations, numba's compile events; a kernel's",
            "helpers compile inside it). Later runs load the cache (the table above).",
            "",
            "| compiled function | first compilation s |",
            "|---|---:|",
            *(f"| `{name}` | {seconds:.2f} |" for name, seconds in compiles.items()),
            "",
        ]
    text = "\n".join(lines)
    write_report(path, text, rows)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each command after one warm-up")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup_cpu",
                        help="results path without suffix (.md and .csv are written)")
    parser.add_argument("--no-cold", action="store_true",
                        help="skip the first run with an empty numba cache (it compiles every kernel, ~45 s)")
    args = parser.parse_args()
    before = uptime()
    rows, first = measure(args.repeats)
    cold = None
    if not args.no_cold:
        with tempfile.TemporaryDirectory(prefix="recourse_sim_cold_") as scratch:
            cold = first_run_after_installing(Path(scratch))
    print(write(rows, first, cold, before, uptime(), args.out))


if __name__ == "__main__":
    main()
