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
from recourse_sim.experiments.grid import Cell, Sweep
from recourse_sim.experiments.store import check_output_dir, write_results
from recourse_sim.experiments.sweep import load_results, run_sweeps
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
    """Run (or resume) ``study`` into ``out`` and (re)write its report.

    With ``workers > 1`` an experiment's figures are drawn as soon as its cells are in their stores, by
    processes of the lowest priority (:class:`ReportFigures`), so they use the cores that the last cells leave
    idle instead of waiting for the last cell.
    """
    out = check_output_dir(Path(out))
    sweeps = study.sweeps(quick, only)  # validates every experiment before anything runs
    _check_own_directory(out, sweeps)
    start = time.perf_counter()
    with FigureDrawer(workers, background=True) as drawer:
        figures = ReportFigures(study, sweeps, out, drawer)
        # One queue for every family: a worker done with its real-data cell goes on with synthetic ones.
        runs = run_sweeps([(sweep, out / family) for family, sweep in sweeps.items()], workers=workers, force=force,
                          progress=progress, on_done=figures.cell_done)
        seconds = time.perf_counter() - start
        frames, failed = [], {}
        for family, result in zip(sweeps, runs):
            failed.update(result.failed)
            frame = result.results()
            if not frame.empty:
                frames.append(_label_experiments(study, family, frame))
        results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if not results.empty:
            write_report(study, results, out, seconds, quick, figures)
    return Reproduction(results, out, seconds, failed)


def _label_experiments(study: Study, family: str, frame: pd.DataFrame) -> pd.DataFrame:
    """A family's cells with their ``experiment`` label in place of ``data.name``."""
    frame = frame.rename(columns={"data.name": "experiment"})
    # Mapped per dataset, not per row: iterating a string column row by row cost ~0.2 s per 100,000 rows.
    frame["experiment"] = frame["experiment"].map({name: study.experiment_name(family, name)
                                                   for name in frame["experiment"].unique()})
    return frame


class ReportFigures:
    """A study's figures, experiment by experiment: each one's are submitted to ``drawer`` as soon as the last of
    its cells is in its store (:func:`run_sweeps` calls :meth:`cell_done`), the others' by :meth:`finish`.

    Why: drawing the SaTML report's 21 figures took ~21 s of CPU after the last cell, while the cores that the
    other worker left idle during the last cell went unused. Every experiment's figures are drawn from that
    experiment's rows alone, built the same way early or late (:meth:`_frame`), so the files do not depend on
    when they were drawn.
    """

    def __init__(self, study: Study, sweeps: dict[str, Sweep], out: Path, drawer: FigureDrawer) -> None:
        self.study, self.out, self.drawer = study, out, drawer
        self.families = list(sweeps)
        self.cells: dict[str, dict[str, set[str]]] = {}  # experiment -> family -> its cell ids (families in order)
        for family, sweep in sweeps.items():
            for cell in sweep.cells:
                self.cells.setdefault(self._experiment(family, cell), {}).setdefault(family, set()).add(cell.id)
        self.waiting = {experiment: {(family, cell_id) for family, ids in by_family.items() for cell_id in ids}
                        for experiment, by_family in self.cells.items()}  # the cells not yet in their stores
        self.drawn: dict[str, list[FigureFile]] = {}

    def _experiment(self, family: str, cell: Cell) -> str:
        return self.study.experiment_name(family, cell.axes["data.name"])

    def cell_done(self, job: int, cell: Cell) -> None:
        """Submit the figures of ``cell``'s experiment once every cell of it is done."""
        family = self.families[job]
        experiment = self._experiment(family, cell)
        self.waiting[experiment].discard((family, cell.id))
        if not self.waiting[experiment] and self.drawer.draws_ahead:
            try:
                self._submit(experiment)
            except Exception:  # noqa: BLE001 (not now: finish() submits it again and raises once all cells ran)
                self.drawn.pop(experiment, None)

    def _frame(self, experiment: str) -> pd.DataFrame:
        """The experiment's rows: its finished cells' tables, family by family in grid order, labelled."""
        frames = []
        for family, ids in self.cells[experiment].items():
            frame = load_results(self.out / family, ids)
            if not frame.empty:
                frames.append(_label_experiments(self.study, family, frame))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _submit(self, experiment: str) -> None:
        frame = self._frame(experiment)
        figures = []
        if not frame.empty:
            figures_dir = self.out / "figures"
            figures_dir.mkdir(parents=True, exist_ok=True)
            figures = self.study.figures(frame, figures_dir)
            self.drawer.submit(figures)
        self.drawn[experiment] = figures

    def finish(self, experiments: Sequence[str]) -> list[str]:
        """Submit the figures of ``experiments`` not drawn yet (those with a failed cell: from their finished
        cells) and return every figure's name, experiments in sorted order (as the report lists them)."""
        for experiment in experiments:
            if experiment not in self.drawn:
                self._submit(experiment)
        return [figure.name for experiment in sorted(experiments) for figure in self.drawn[experiment]]


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


def write_report(study: Study, results: pd.DataFrame, out: Path, seconds: float, quick: bool,
                 figures: ReportFigures) -> Path:
    """Combined table, CI summary, attributable effects, the study's figures (those not drawn yet are submitted
    to ``figures``' drawer first, which draws them while this process writes the tables) and its markdown report."""
    names = figures.finish(sorted(results["experiment"].unique()))
    write_results(results, out)
    summarise(results, by=["experiment", "model", "generator", "round", "metric"]).to_csv(out / "summary.csv",
                                                                                         index=False)
    summarise_effects(paired_effects(results)).to_csv(out / "effects.csv", index=False)
    markdown = study.report_markdown(results, seconds, quick, names)
    figures.drawer.wait()
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
