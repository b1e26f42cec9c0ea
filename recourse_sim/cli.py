"""The ``recourse-sim`` command line."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from recourse_sim.errors import RecourseSimError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Simulate the endogenous dynamics of algorithmic recourse.")


class Catalogue(str, Enum):
    generators = "generators"
    models = "models"
    datasets = "datasets"
    metrics = "metrics"


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _load(scenario: Path | None):
    from recourse_sim.experiments import Scenario
    from recourse_sim.scenarios import embedded

    return Scenario.from_toml(scenario or embedded("default"))


@app.command()
def run(
    scenario: Annotated[Path | None, typer.Argument(help="Scenario TOML file (default: the embedded default scenario).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: runs/<scenario name>).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run a scenario and write results (parquet + CSV), summary, figures and the resolved scenario."""
    from recourse_sim.experiments import run_scenario

    try:
        parsed = _load(scenario)
        result = run_scenario(parsed, out=out or Path("runs") / parsed.name, progress=not quiet)
    except RecourseSimError as error:
        _fail(error)
    typer.echo(f"{len(result.dynamics.systems)} systems x {result.dynamics.round} rounds in {result.seconds:.1f} s")
    typer.echo(f"results written to {result.out}")


@app.command()
def validate(scenario: Annotated[Path, typer.Argument(help="Scenario TOML file to check without running it.")]) -> None:
    """Check a scenario file; print the resolved scenario."""
    try:
        parsed = _load(scenario)
    except RecourseSimError as error:
        _fail(error)
    typer.echo(parsed.to_toml())
    typer.echo(f"{scenario}: valid")


@app.command("list")
def list_(what: Annotated[Catalogue, typer.Argument(help="Which registry to list.")]) -> None:
    """List the registered generators, models, datasets or metrics."""
    from recourse_sim import DATASETS, GENERATORS, METRICS, MODELS

    registry = {"generators": GENERATORS, "models": MODELS, "datasets": DATASETS, "metrics": METRICS}[what.value]
    for name in registry:
        entry = registry[name]
        doc = entry if isinstance(entry, str) else (entry.__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{name:24s} {doc}")


if __name__ == "__main__":
    app()
