"""``recourse-sim reproduce satml|faithful``: run a study's grid as resumable sweeps, then write its report.

``satml``: the SaTML 2023 experiments (:mod:`~recourse_sim.experiments.satml`); ``faithful``: JEM, ECCCo and
Counterfactual Training in the loop (:mod:`~recourse_sim.experiments.faithful`). Layout of ``OUT`` for satml:
``synthetic/``, ``real/`` and ``real_unconstrained/`` (sweep stores: rerunning resumes),
``results.parquet`` (all experiments, with an ``experiment`` column), ``summary.csv`` (mean and CI over
repetitions), ``effects.csv`` (the effects attributable to recourse: system - paired control, mean, CI and paired
p-value), ``figures/`` and ``report.md``; for faithful the same with ``real/`` and ``synthetic/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recourse_sim.errors import ConfigError
from recourse_sim.experiments import faithful, satml
from recourse_sim.experiments.grid import Sweep
from recourse_sim.experiments.store import check_output_dir, write_results
from recourse_sim.experiments.sweep import run_sweeps
from recourse_sim.reporting.attribution import paired_effects, summarise_effects
from recourse_sim.reporting.comparisons import plot_final_bars
from recourse_sim.reporting.faithful import faithful_figures
from recourse_sim.reporting.faithful import report_markdown as faithful_report_markdown
from recourse_sim.reporting.figure_files import FigureDrawer, FigureFile
from recourse_sim.reporting.hidden_costs import hidden_cost_metrics, plot_hidden_costs
from recourse_sim.reporting.satml import report_markdown
from recourse_sim.reporting.summary import summarise
from recourse_sim.reporting.trajectories import plot_trajectories

#: The paper's figures: domain and model shift, disagreement, decisiveness and performance over rounds.
PAPER_METRICS = ("domain_mmd", "model_mmd", "model_mmd_grid", "disagreement", "decisiveness", "f1")


@dataclass
class Reproduction:
    results: pd.DataFrame
    out: Path
    seconds: float
    failed: dict[str, str]


@dataclass(frozen=True)
class Study:
    """A reproducible study: its sweeps (one per data family), the ``experiment`` label of a family's cell, its
    report's figures (``figures(results, figures_dir)``) and text (``report_markdown(results, seconds, quick,
    figure_names)``), its experiments and default output directory."""

    name: str
    sweeps: Callable[[bool, Sequence[str] | None], dict[str, Sweep]]
    experiment_name: Callable[[str, str], str]
    figures: Callable[[pd.DataFrame, Path], list[FigureFile]]
    report_markdown: Callable[[pd.DataFrame, float, bool, list[str]], str]
    experiments: tuple[str, ...]
    output_dir: Callable[[bool], Path]


def reproduce_study(
    study: Study,
    out: str | Path,
    quick: bool = False,
    workers: int = 1,
    only: Sequence[str] | None = None,
    force: bool = False,
    progress: bool = False,
) -> Reproduction:
    """Run (or resume) ``study`` into ``out`` and (re)write its report."""
    out = check_output_dir(Path(out))
    sweeps = study.sweeps(quick, only)  # validates every experiment before anything runs
    _check_own_directory(out, sweeps)
    start = time.perf_counter()
    # One queue for every family: a worker done with its real-data cell goes on with synthetic ones.
    runs = run_sweeps([(sweep, out / family) for family, sweep in sweeps.items()], workers=workers, force=force,
                      progress=progress)
    seconds = time.perf_counter() - start
    frames, failed = [], {}
    for family, result in zip(sweeps, runs):
        failed.update(result.failed)
        frame = result.results()
        if not frame.empty:
            frame = frame.rename(columns={"data.name": "experiment"})
            frame["experiment"] = [study.experiment_name(family, name) for name in frame["experiment"]]
            frames.append(frame)
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not results.empty:
        write_report(study, results, out, seconds, quick, workers)
    return Reproduction(results, out, seconds, failed)


#: What a study writes into its output directory besides one sweep store per family.
REPORT_FILES = ("results.parquet", "results.csv", "summary.csv", "effects.csv", "report.md", "figures")


def _check_own_directory(out: Path, sweeps: dict[str, Sweep]) -> None:
    """Refuse an output directory that holds anything a study does not write: its report files replace their
    namesakes, and a file the package did not write is never overwritten."""
    if not out.is_dir():
        return
    names = sorted(p.name for p in out.iterdir())
    previous_run = any((out / family / "manifest.json").is_file() for family in sweeps)
    # Report files are the study's own only beside one of its sweep stores (a previous run).
    own = (*REPORT_FILES, *sweeps) if previous_run else tuple(sweeps)
    foreign = [name for name in names if name not in own]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ConfigError("out", str(out), f"a new or empty directory, or a previous run of this study; it holds "
                          f"files recourse-sim did not write ({shown}): choose another --out")


def reproduce_satml(out: str | Path, quick: bool = False, workers: int = 1, only: Sequence[str] | None = None,
                    force: bool = False, progress: bool = False) -> Reproduction:
    """Run (or resume) the SaTML 2023 reproduction into ``out`` and (re)write its report."""
    return reproduce_study(STUDIES["satml"], out, quick, workers, only, force, progress)


def satml_figures(results: pd.DataFrame, figures_dir: Path) -> list[FigureFile]:
    """The SaTML report's figures: per experiment, the trajectories and final-round bars of the paper's metrics,
    and the hidden costs where the table has them."""
    figures = []
    for experiment, frame in results.groupby("experiment", sort=True):
        figures += [FigureFile(plot, frame, figures_dir / f"{experiment}_{kind}.png", {"metrics": PAPER_METRICS})
                    for kind, plot in (("trajectories", plot_trajectories), ("final", plot_final_bars))]
        if hidden_cost_metrics(frame):
            figures.append(FigureFile(plot_hidden_costs, frame, figures_dir / f"{experiment}_hidden_costs.png"))
    return figures


def write_report(study: Study, results: pd.DataFrame, out: Path, seconds: float, quick: bool, workers: int = 1) -> Path:
    """Combined table, CI summary, attributable effects, the study's figures (drawn by ``workers`` processes while
    this one writes the tables) and its markdown report."""
    figures_dir = out / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    figures = study.figures(results, figures_dir)
    with FigureDrawer(workers) as drawer:
        drawer.submit(figures)
        write_results(results, out)
        summarise(results, by=["experiment", "model", "generator", "round", "metric"]).to_csv(out / "summary.csv",
                                                                                             index=False)
        summarise_effects(paired_effects(results)).to_csv(out / "effects.csv", index=False)
        markdown = study.report_markdown(results, seconds, quick, [figure.name for figure in figures])
        drawer.wait()
    report = out / "report.md"
    report.write_text(markdown, encoding="utf-8")  # last: it lists the figures
    return report


#: The studies ``recourse-sim reproduce`` runs.
STUDIES = {
    "satml": Study("satml", satml.satml_sweeps, satml.experiment_name, satml_figures, report_markdown,
                   satml.EXPERIMENTS, satml.output_dir_default),
    "faithful": Study("faithful", faithful.faithful_sweeps, faithful.experiment_name, faithful_figures,
                      faithful_report_markdown, faithful.EXPERIMENTS, faithful.output_dir_default),
}
