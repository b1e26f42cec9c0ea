"""Run a scenario end to end: simulate, then write the results table, summary, figures and the resolved
scenario into one output directory.

Nothing is lost and nothing foreign is deleted:

- everything that can be checked is checked before the simulation starts (:func:`preflight`): the scenario
  can be written back as TOML, its estimated memory fits, its data load and split, and ``out`` is new, empty,
  a previous run, or ``force`` was given (see :func:`~recourse_sim.experiments.store.check_run_dir`);
- the outputs are written to a hidden staging directory next to ``out`` (``.<name>.<random>.partial``), the
  results table incrementally, once per round (``results.csv``, with ``scenario.toml`` written first); on
  success the staging directory becomes ``out`` in one rename (or, with ``force`` into a directory holding
  other files, file by file, replacing only a run's own files);
- an interrupt (Ctrl-C, SIGTERM via the CLI) or a failure keeps the staging directory with the finished
  rounds: :class:`RunInterrupted` (a ``KeyboardInterrupt``) says where, a failure carries the same line as a
  note.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from recourse_sim.data import DATASETS
from recourse_sim.errors import ConfigError
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.experiments.store import check_run_dir, open_staging, publish, signals_held, write_results, write_text
from recourse_sim.reporting.attribution import has_control, paired_effects, summarise_effects
from recourse_sim.reporting.hidden_costs import group_gap_table, hidden_costs_table, plot_hidden_costs
from recourse_sim.reporting.populations import plot_population
from recourse_sim.reporting.summary import summarise
from recourse_sim.reporting.trajectories import plot_trajectories
from recourse_sim.simulation.model import RecourseDynamics

PARTIAL_TABLE = "results.csv"

#: Memory a run may plan to use: this share of the memory available when it starts (see :func:`estimate_memory`).
MEMORY_SHARE = 0.8
#: Bytes per row of the results table while it is collected and written (Python lists, then pandas, then files).
_ROW_BYTES = 400
#: Rows per system and round: recourse metrics, reliability lags, the hidden costs, the agents' metrics and (at most
#: every round) the shift metrics; the group-wise metrics add :data:`_ROWS_PER_GROUP` per group.
_ROWS_PER_ROUND = 45
_ROWS_PER_GROUP = 12


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; ``str()`` is one line saying what was kept and where."""

    def __init__(self, message: str, kept: Path | None, rounds: int) -> None:
        super().__init__(message)
        self.kept, self.rounds = kept, rounds

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class RunResult:
    """The tidy results table (one row per system x round x metric), the final simulation and where it was
    written (None when not written)."""

    results: pd.DataFrame
    dynamics: RecourseDynamics
    out: Path | None
    seconds: float


# --------------------------------------------------------------------------------------------- checks
def preflight(scenario: Scenario, out: str | Path | None = None, force: bool = False) -> None:
    """Every check a run makes before simulating, without simulating (``recourse-sim validate`` runs it too):
    the output directory, the resolved scenario as TOML, the memory estimate, and the data (loaded and split,
    with the ``[agents]`` options that name its features)."""
    if out is not None:
        check_run_dir(Path(out), force)
    check_writable_scenario(scenario)
    check_memory(scenario)
    train, _ = scenario.load_data()
    scenario.agents.check_data(train)
    check_memory(scenario, n_rows=train.n_samples, n_features=train.n_features)


def check_writable_scenario(scenario: Scenario) -> str:
    """The resolved scenario as TOML, refused unless it reads back as the same scenario."""
    try:
        text = scenario.to_toml()
        same = Scenario.from_dict(tomllib.loads(text)) == scenario
    except (TypeError, ValueError, tomllib.TOMLDecodeError) as error:
        raise ConfigError("scenario", scenario.name, f"values that can be written to scenario.toml ({error})") from None
    if not same:
        raise ConfigError("scenario", scenario.name, "values that read back unchanged from scenario.toml")
    return text


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def estimate_memory(scenario: Scenario, n_rows: int | None = None, n_features: int | None = None) -> dict[str, int]:
    """Rough peak bytes by cause: the data, the S population copies, the counterfactual search and the
    results table. ``n_rows``/``n_features`` of the training data; by default ``data.n_samples`` and 2 (the
    synthetic datasets)."""
    systems = len(scenario.models) * len(scenario.generators) * scenario.repetitions
    n = n_rows if n_rows is not None else math.ceil((scenario.data.n_samples or 0) * (1 - scenario.data.test_share))
    d = n_features or 2
    k = scenario.search.n_counterfactuals
    recipients = math.ceil(scenario.recourse_share * n)
    return {
        "data": 3 * n * d * 8,  # generation and split (float64 temporaries)
        "population": systems * n * (4 * d + 16),  # X, the recorded and true labels, the recourse round
        "search": 20 * systems * recipients * k * d * 4,  # search state and autograd buffers
        "results table": (scenario.rounds + 1) * systems * _ROW_BYTES  # the results table
        * (_ROWS_PER_ROUND + (_ROWS_PER_GROUP * 4 if scenario.agents.groups else 0)),  # (groups: ~4 at most)
    }


def check_memory(scenario: Scenario, n_rows: int | None = None, n_features: int | None = None) -> None:
    """Refuse a scenario whose estimated memory exceeds MEMORY_SHARE of the memory available now."""
    if n_rows is None and (scenario.data.name == "csv" or
                           getattr(DATASETS[scenario.data.name], "__module__", "") != "recourse_sim.data.synthetic"):
        n_rows = 0  # real data and CSV files: the file bounds the rows; checked again once loaded
    parts = estimate_memory(scenario, n_rows, n_features)
    total, limit = sum(parts.values()), int(MEMORY_SHARE * _available_memory())
    if total <= limit:
        return
    # Name the setting furthest above its default: that is the one to reduce.
    values = {"data.n_samples": scenario.data.n_samples or 0, "repetitions": scenario.repetitions,
              "search.n_counterfactuals": scenario.search.n_counterfactuals, "rounds": scenario.rounds}
    defaults = {"data.n_samples": 1000, "repetitions": 1, "search.n_counterfactuals": 5, "rounds": 20}
    field = max(values, key=lambda name: values[name] / defaults[name])
    systems = len(scenario.models) * len(scenario.generators) * scenario.repetitions
    raise ConfigError(field, values[field], f"a scenario whose estimated memory fits: about {_gib(total)} for "
                      f"{systems} systems x {scenario.rounds} rounds, above {MEMORY_SHARE:.0%} of the "
                      f"{_gib(_available_memory())} available now; reduce {field}")


def _gib(size: float) -> str:
    return f"{size / 2**30:,.1f} GiB"


# ------------------------------------------------------------------------------------------------ run
def run_scenario(scenario: Scenario, out: str | Path | None = None, progress: bool = False,
                 force: bool = False) -> RunResult:
    """Simulate ``scenario``; with ``out``, also write its outputs there (see the module docstring and
    :func:`write_outputs`). ``force`` writes into a directory that holds other files (they are kept)."""
    if out is not None:
        out = check_run_dir(Path(out), force)  # fail before spending minutes on the simulation
    text = check_writable_scenario(scenario)
    check_memory(scenario)
    start = time.perf_counter()
    config = scenario.build()
    check_memory(scenario, n_rows=config.train.n_samples, n_features=config.train.n_features)
    dynamics = RecourseDynamics(config, seed=scenario.seed)
    if out is None:
        with tqdm(total=config.rounds, desc=scenario.name, unit="round", disable=not progress) as bar:
            results = dynamics.run(progress=bar)
        return RunResult(results, dynamics, None, time.perf_counter() - start)

    staging = open_staging(out)
    table = _IncrementalTable(staging / PARTIAL_TABLE)
    try:
        write_text(staging, "scenario.toml", text)
        table.append(dynamics)
        with tqdm(total=config.rounds, desc=scenario.name, unit="round", disable=not progress) as bar:
            while dynamics.running and dynamics.round < config.rounds:  # RecourseDynamics.run, one round at a time
                dynamics.step()
                table.append(dynamics)
                bar.update(1)
        results = dynamics.results()
        run = RunResult(results, dynamics, None, time.perf_counter() - start)
        run.out = write_outputs(run, scenario, out, force=force, staging=staging)
        return run
    except KeyboardInterrupt:
        raise RunInterrupted(_kept(staging, table, config.rounds, "interrupted"), _kept_path(staging, table),
                             table.round) from None
    except BaseException as error:
        error.add_note(_kept(staging, table, config.rounds, "failed"))
        raise


class _IncrementalTable:
    """Appends the rows the simulation collected since the last call to a CSV file, flushed each time."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows, self.round = path, 0, -1

    def append(self, dynamics: RecourseDynamics) -> None:
        columns = dynamics.datacollector.tables["metrics"]
        new = pd.DataFrame({name: values[self.rows:] for name, values in columns.items()})
        new = new.astype({"repetition": "int64", "round": "int64", "value": "float64"})
        # An interrupt between the write and the counts would report fewer rounds than the file holds (or, in
        # the middle of the write, leave half a line): the file and its counts change together.
        with signals_held():
            with open(self.path, "a", encoding="utf-8", newline="") as handle:
                new.to_csv(handle, header=self.rows == 0, index=False)
                handle.flush()
                os.fsync(handle.fileno())
            self.rows += len(new)
            self.round = dynamics.round  # the last round whose rows are all in the file


def _kept_path(staging: Path, table: _IncrementalTable) -> Path | None:
    return staging / PARTIAL_TABLE if staging.is_dir() and table.rows else None


def _kept(staging: Path, table: _IncrementalTable, rounds: int, what: str) -> str:
    """One line: what was kept and where (the staging directory is removed when it holds no rows)."""
    path = _kept_path(staging, table)
    if path is None:
        shutil.rmtree(staging, ignore_errors=True)
        return f"{what} before any results were collected; nothing was written"
    done = table.round
    return (f"{what} after {done} of {rounds} rounds: rounds 0-{done} ({table.rows} rows) are kept in {path} "
            "(the output directory was not changed)")


def write_outputs(run: RunResult, scenario: Scenario, out: Path, force: bool = False,
                  staging: Path | None = None) -> Path:
    """results.parquet/.csv, summary.csv (mean and 95% CI over repetitions), effects.csv (with a control: the
    effects attributable to recourse, see ``attribution``), hidden_costs.csv and hidden_costs.png (what recourse
    costs bystanders and the lender, see ``reporting.hidden_costs``), group_gaps.csv (with ``[agents] groups``: the
    final approval-rate gap between the groups and its difference to the control's), scenario.toml (resolved),
    run.json (timing and versions), trajectories.png and, for 2-D data, population_<model>.png; written to
    ``staging`` (default: a new one) and then published to ``out`` (see :func:`store.publish`). On an error the
    staging directory given is kept; one created here is removed."""
    out = Path(out)
    owned = staging is None
    if owned:
        staging = open_staging(check_run_dir(out, force))
    try:
        write_results(run.results, staging)
        summarise(run.results).to_csv(staging / "summary.csv", index=False)
        if has_control(run.results):  # effects attributable to recourse: system - paired control
            summarise_effects(paired_effects(run.results)).to_csv(staging / "effects.csv", index=False)
        write_text(staging, "scenario.toml", scenario.to_toml())
        write_text(staging, "run.json", json.dumps(_run_info(run), indent=2))
        plot_trajectories(run.results, path=staging / "trajectories.png")
        hidden_costs_table(run.results).to_csv(staging / "hidden_costs.csv", index=False)
        gaps = group_gap_table(run.results)
        if not gaps.empty:  # [agents] groups: does recourse widen the approval gap between them?
            gaps.to_csv(staging / "group_gaps.csv", index=False)
        plot_hidden_costs(run.results, path=staging / "hidden_costs.png")
        if run.dynamics.config.train.n_features == 2:
            for model in run.dynamics.config.models:
                plot_population(population_panels(run.dynamics, model), path=staging / f"population_{model}.png",
                                feature_names=run.dynamics.config.train.schema.names)
        return publish(staging, out, force)
    except BaseException:
        if owned:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def population_panels(dynamics: RecourseDynamics, model: str, repetition: int = 0) -> list[tuple]:
    """Initial population and model, then each generator's final population and model (one repetition)."""
    systems = [s for s in dynamics.systems if s.model == model and s.repetition == repetition]
    pop = dynamics.population
    first = systems[0].index
    panels = [("initial (t = 0)", dynamics.config.train.X.numpy(), dynamics.config.train.y.numpy(), None,
               dynamics.scorer(first, initial=True))]
    for system in systems:
        i = system.index
        panels.append((f"{system.generator} (t = {dynamics.round})", pop.X[i].cpu().numpy(), pop.y[i].cpu().numpy(),
                       (pop.recourse_round[i] >= 0).cpu().numpy(), dynamics.scorer(i)))
    return panels


def _run_info(run: RunResult) -> dict:
    import mesa

    return {
        "seconds": round(run.seconds, 3),
        "rounds": run.dynamics.round,
        "systems": len(run.dynamics.systems),
        "device": str(run.dynamics.device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "mesa": mesa.__version__,
        "threads": torch.get_num_threads(),
    }
