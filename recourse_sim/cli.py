"""The ``recourse-sim`` command line."""

from __future__ import annotations

import atexit
import gc
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from recourse_sim.errors import RecourseSimError

# Python's last garbage collection at exit walks every object torch, numba and Mesa created: 0.7 s of a 6 s
# default run, spent after the results are written. Frozen objects are left to the operating system (every file
# the package writes is closed before that). atexit runs handlers last-registered first, so this one runs last.
atexit.register(gc.freeze)


@contextmanager
def _long_lived_imports() -> Iterator[None]:
    """Import a command's modules (torch, Mesa, pandas, matplotlib behind them) with the garbage collector paused,
    then freeze what they created. Their objects live as long as the process; collecting among them cost 0.35 s
    of the default run's 2.5 s import, and later collections no longer walk them (0.4 s saved in all, and no more
    memory: peak RSS 547 MB frozen vs 558 MB)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Simulate the endogenous dynamics of algorithmic recourse.")


class Catalogue(str, Enum):
    generators = "generators"
    models = "models"
    datasets = "datasets"
    metrics = "metrics"


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


class _Signal:
    signum = signal.SIGINT


@contextmanager
def _interruptible() -> Iterator[_Signal]:
    """SIGTERM handled like Ctrl-C (a KeyboardInterrupt), so a killed run or sweep keeps its finished work and
    stops its workers; ``received.signum`` says which signal came (exit status 128 + signum)."""
    received = _Signal()

    def handler(signum: int, frame: object) -> None:
        received.signum = signum
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield received
        return
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(message: str, received: _Signal) -> None:
    typer.secho(message, fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(code=128 + int(received.signum))


def _load(scenario: Path | None):
    from recourse_sim.experiments import Scenario
    from recourse_sim.scenarios import embedded

    return Scenario.from_toml(scenario or embedded("default"))


@app.command()
def run(
    scenario: Annotated[Path | None, typer.Argument(help="Scenario TOML file (default: the embedded default scenario).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: runs/<scenario name>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into --out even if it holds files recourse-sim did "
                                        "not write (they are kept; a previous run's files are replaced).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a scenario and write results (parquet + CSV), summary, figures and the resolved scenario.

    The results table is written round by round to a hidden staging directory next to --out; Ctrl-C (or
    SIGTERM) keeps the finished rounds there and says where. Training and the search use every core torch would
    (OMP_NUM_THREADS=1 for one); the results are the same on any number.
    """
    with _long_lived_imports():
        from recourse_sim.experiments import run_scenario
        from recourse_sim.experiments.runner import RunInterrupted

    with _interruptible() as received:
        try:
            parsed = _load(scenario)
            result = run_scenario(parsed, out=out or Path("runs") / parsed.name, progress=not quiet, force=force)
        except RecourseSimError as error:
            _fail(error)
        except RunInterrupted as stop:
            _interrupted(str(stop), received)
        except KeyboardInterrupt:
            _interrupted("interrupted before the first round; nothing was written", received)
        except OSError as error:  # a full disk, a permission lost mid-run: one line, and what was kept
            notes = " ".join(getattr(error, "__notes__", []))
            typer.secho(f"error: could not write the results: {error}. {notes}".strip(), fg=typer.colors.RED, err=True)
            raise typer.Exit(code=1)
    typer.echo(f"{len(result.dynamics.systems)} systems x {result.dynamics.round} rounds in {result.seconds:.1f} s")
    typer.echo(f"results written to {result.out}")


@app.command()
def validate(scenario: Annotated[Path, typer.Argument(help="Scenario or sweep TOML file to check without running it.")]) -> None:
    """Check a scenario file; print the resolved scenario (for a sweep file: the resolved sweep and its cells)."""
    from recourse_sim.experiments.grid import is_sweep_file

    if is_sweep_file(scenario):
        _validate_sweep(scenario)
        return
    from recourse_sim.experiments.runner import preflight

    try:
        parsed = _load(scenario)
        preflight(parsed)  # every check `run` makes before simulating: writable, memory, data loaded and split
    except RecourseSimError as error:
        _fail(error)
    typer.echo(parsed.to_toml())
    typer.echo(f"{scenario}: valid")


def _validate_sweep(path: Path) -> None:
    from recourse_sim.experiments.grid import check_data, load_sweep

    try:
        parsed = load_sweep(path)
        check_data(parsed)
    except RecourseSimError as error:
        _fail(error)
    typer.echo(parsed.to_toml())
    typer.echo(f"{path}: valid sweep, {len(parsed.cells)} cells ({parsed.shape()})")


class SweepExecutor(str, Enum):
    local = "local"
    ray = "ray"


@app.command()
def sweep(
    file: Annotated[Path, typer.Argument(help="Sweep TOML file: a scenario plus a \\[grid] table and n_seeds.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results store (default: runs/<sweep name>).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Parallel cells: local processes, or the "
                                                "CPUs of a local Ray cluster (default: 1 locally, all CPUs with Ray).")] = None,
    executor: Annotated[SweepExecutor, typer.Option("--executor", "-e", help="Where cells run.")] = SweepExecutor.local,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to join ('auto', "
                                                    "'ray://host:10001'; default $RAY_ADDRESS or a local cluster).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Discard the results in the store and rerun every cell.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run every cell of a grid x seeds sweep into one results store; rerun to resume after a crash."""
    with _long_lived_imports():
        from recourse_sim.experiments.grid import load_sweep
        from recourse_sim.experiments.sweep import read_manifest, run_sweep

    store = out
    with _interruptible() as received:
        try:
            parsed = load_sweep(file)
            store = out or Path("runs") / parsed.name
            if not quiet:
                typer.echo(f"{parsed.name}: {parsed.shape()} -> {store}", err=True)
            result = run_sweep(parsed, store, executor=executor.value, workers=workers, address=ray_address,
                               force=force, progress=not quiet)
        except RecourseSimError as error:
            _fail(error)
        except KeyboardInterrupt:
            done = "?"
            try:
                done = sum(e["status"] == "done" for e in read_manifest(store)["cells"])
            except (RecourseSimError, OSError, TypeError):
                pass
            _interrupted(f"interrupted: {done} finished cells are kept in {store}; rerun the same command to resume",
                         received)
    for warning in result.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{result.done} of {result.total} cells done ({result.skipped} already in the store, "
               f"{len(result.ran)} run now) in {result.seconds:.1f} s; store: {result.out}")
    if result.failed:
        cells = {cell.id: cell for cell in result.sweep.cells}
        typer.secho(f"{len(result.failed)} cells failed:", fg=typer.colors.RED, err=True)
        for cell_id, error in result.failed.items():
            typer.secho(f"  {cell_id} ({cells[cell_id].describe()}): {error}", fg=typer.colors.RED, err=True)
        typer.secho("rerun the same command to retry them (finished cells are skipped)", err=True)
        raise typer.Exit(code=1)


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="Results store written by `recourse-sim sweep`.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Report directory (default: RESULTS_DIR/report).")] = None,
    versus: Annotated[str | None, typer.Option(
        "--versus", help="AXIS=VALUE: also every grid point minus its twin at that setting (paired), e.g. "
                         "data.bounds=schema.")] = None,
) -> None:
    """Mean and 95% CI across seeds per grid point x system x round x metric: a table and figures with CI bands."""
    with _long_lived_imports():
        from recourse_sim.experiments.report import report_sweep

    try:
        written = report_sweep(results_dir, out, versus=versus)
    except RecourseSimError as error:
        _fail(error)
    for note in written.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{written.cells_done} of {written.cells_total} cells, {len(written.summary)} rows, "
               f"{len(written.figures)} figures written to {written.out} (summary.csv, summary.md, figures/)")


@app.command("list")
def list_(what: Annotated[Catalogue, typer.Argument(help="Which registry to list.")]) -> None:
    """List the registered generators, models, datasets or metrics."""
    from recourse_sim import DATASETS, GENERATORS, METRICS, MODELS

    registry = {"generators": GENERATORS, "models": MODELS, "datasets": DATASETS, "metrics": METRICS}[what.value]
    for name in registry:
        entry = registry[name]
        doc = getattr(entry, "description", None) or (entry.__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{name:24s} {doc}")


@app.command()
def dashboard(
    scenario: Annotated[Path | None, typer.Argument(
        help="Scenario TOML the dashboard's controls start from (default: a small 2-D scenario).")] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="Port to serve on (0: a free one).")] = 8765,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "localhost",
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="Open a browser tab.")] = False,
) -> None:
    """Serve the interactive dashboard (a Solara page on the Mesa model) on http://HOST:PORT; needs the viz extra.

    Runs ``solara run recourse_sim.viz.dashboard`` in a subprocess until interrupted (Ctrl-C). Solara's
    front-end files are fetched once into its local asset cache with npm when missing (see
    ``recourse_sim.viz.assets``), so the page also works without access to a public CDN.
    """
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("solara") is None or importlib.util.find_spec("mesa.visualization") is None:
        _fail(RecourseSimError('the dashboard needs the viz extra: pip install -e ".[viz]"'))
    env = dict(os.environ)
    if scenario is not None:
        try:
            _load(scenario)  # refuse a bad file before starting a server
        except RecourseSimError as error:
            _fail(error)
        env["RECOURSE_SIM_SCENARIO"] = str(scenario.resolve())
    from recourse_sim.viz.assets import ensure_assets

    try:
        ensure_assets(quiet=True)
    except RuntimeError as error:
        typer.secho(f"warning: {error}", fg=typer.colors.YELLOW, err=True)
    port = _serving_port(host, port)
    command = [sys.executable, "-m", "solara", "run", "recourse_sim.viz.dashboard", "--port", str(port),
               "--host", host, "--production", "--open" if open_browser else "--no-open"]
    typer.echo(f"dashboard on http://{host}:{port}/ (Ctrl-C stops it)")
    try:
        code = subprocess.call(command, env=env)
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code=code)


def _serving_port(host: str, port: int) -> int:
    """``port``, or for 0 a port that is free on ``host`` now (so the address printed is the real one)."""
    if port != 0:
        return port
    import socket

    family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Paper(str, Enum):
    satml = "satml"
    faithful = "faithful"


@app.command()
def reproduce(
    paper: Annotated[Paper, typer.Argument(help="Which study: satml = Altmeyer et al., SaTML 2023; faithful = JEM, "
                                                "ECCCo and Counterfactual Training in the loop (docs/faithful.md).")],
    quick: Annotated[bool, typer.Option("--quick", help="10 rounds, 2 repetitions, smaller samples (minutes).")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: runs/<study> or runs/<study>_quick).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Experiments run in parallel processes.")] = 2,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these experiments (datasets); repeatable.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Discard stored results and rerun everything.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Reproduce a study's experiments: resumable sweeps, a results store, figures and report.md."""
    from recourse_sim.errors import ConfigError

    with _long_lived_imports():
        from recourse_sim.experiments.reproduce import STUDIES, reproduce_study

    study = STUDIES[paper.value]
    unknown = [name for name in only or [] if name not in study.experiments]
    if unknown:
        _fail(ConfigError("--only", unknown[0], f"one of {', '.join(study.experiments)}"))
    store = out or study.output_dir(quick)
    with _interruptible() as received:
        try:
            result = reproduce_study(study, store, quick=quick, workers=workers, only=only, force=force,
                                     progress=not quiet)
        except RecourseSimError as error:
            _fail(error)
        except KeyboardInterrupt:
            _interrupted(f"interrupted: finished experiments are kept in {store}; rerun the same command to resume",
                         received)
    typer.echo(f"{result.results['experiment'].nunique() if not result.results.empty else 0} experiments in "
               f"{result.seconds / 60:.1f} min; report: {result.out / 'report.md'}")
    if result.failed:
        typer.secho(f"{len(result.failed)} experiments failed; rerun the same command to retry them", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
