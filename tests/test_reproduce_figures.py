"""`recourse-sim reproduce`: an experiment's figures are drawn as soon as its cells are done, while the others run,
and are the files the report drew from the combined table after the last cell."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from recourse_sim.experiments import load_sweep, reproduce, run_sweeps
from recourse_sim.experiments.reproduce import STUDIES, ReportFigures, reproduce_study, satml_figures
from recourse_sim.reporting.figure_files import FigureDrawer, FigureFile
from test_sweep import SMALL, fake_cell, write

#: test_sweep's small sweep with two cells, one experiment each (run with its fake cell function: the simulation is
#: not the point).
TWO_EXPERIMENTS = SMALL.replace("n_seeds = 2", "n_seeds = 1").replace(
    "recourse_share = [0.05, 0.2]", '"data.name" = ["overlapping", "moons"]')


def no_plot(frame: pd.DataFrame, path: Path) -> None:
    path.write_text(frame["experiment"].iloc[0])


def write_niceness(frame: pd.DataFrame, path: Path) -> None:
    path.write_text(str(os.nice(0)))


def test_an_experiments_figures_are_drawn_once_its_cells_are_done_and_equal_those_drawn_at_the_end(tmp_path,
                                                                                                    monkeypatch):
    log: list[tuple[str, object]] = []

    class LoggingDrawer(FigureDrawer):
        def submit(self, figures):
            log.append(("figures", {figure.frame["experiment"].iloc[0] for figure in figures}))
            super().submit(figures)

    cell_done = ReportFigures.cell_done

    def logging_cell_done(self, job, cell):
        log.append(("cell", cell.axes["data.name"]))
        cell_done(self, job, cell)

    monkeypatch.setattr(reproduce, "FigureDrawer", LoggingDrawer)
    monkeypatch.setattr(ReportFigures, "cell_done", logging_cell_done)
    out = tmp_path / "out"
    reproduction = reproduce_study(STUDIES["satml"], out, quick=True, only=["moons", "circles"], workers=2)
    assert not reproduction.failed
    first, second = log[0][1], log[2][1]
    # Each experiment's figures go to the drawer when its cell is in the store, before the other cell is done.
    assert log == [("cell", first), ("figures", {first}), ("cell", second), ("figures", {second})]
    # The files equal those drawn here, after the last cell, from the combined table (as the report drew them).
    (tmp_path / "late").mkdir()
    late = satml_figures(reproduction.results, tmp_path / "late")
    assert len(late) == 6
    for figure in late:
        figure.plot(figure.frame, path=figure.path, **figure.options)
        assert (out / "figures" / figure.path.name).read_bytes() == figure.path.read_bytes(), figure.path.name
    report = (out / "report.md").read_text()
    assert all(f"- `figures/{figure.path.name}`" in report for figure in late)


def test_an_early_submission_that_fails_is_retried_at_the_end_and_the_run_goes_on(tmp_path):
    sweep = load_sweep(write(tmp_path, TWO_EXPERIMENTS))

    class FailingOnceDrawer:
        draws_ahead = True

        def __init__(self) -> None:
            self.submitted: list[str] = []
            self.failures_left = 1

        def submit(self, figures):
            if self.failures_left:
                self.failures_left -= 1
                raise OSError("no space left on device")
            self.submitted += [figure.path.name for figure in figures]

    study = SimpleNamespace(experiment_name=lambda family, name: name,
                            figures=lambda frame, directory: [FigureFile(no_plot, frame,
                                                                         directory / f"{frame.experiment[0]}.png")])
    drawer = FailingOnceDrawer()
    figures = ReportFigures(study, {"family": sweep}, tmp_path, drawer)
    [result] = run_sweeps([(sweep, tmp_path / "family")], cell_fn=fake_cell, on_done=figures.cell_done)
    assert result.done == 2 and result.ok  # the failure did not stop the run
    assert drawer.submitted == ["moons.png"]  # the first experiment's submission failed
    names = figures.finish(["overlapping", "moons"])
    assert drawer.submitted == ["moons.png", "overlapping.png"]  # retried once every cell had run
    assert names == ["figures/moons.png", "figures/overlapping.png"]  # in the report's (sorted) order


def test_background_drawers_run_at_the_lowest_priority_and_draw_the_same_files(tmp_path):
    from recourse_sim.reporting.trajectories import plot_trajectories

    frame = fake_cell(load_sweep(write(tmp_path, TWO_EXPERIMENTS)).cells[1].config).assign(experiment="moons")
    files = {}
    for background in (False, True):
        directory = tmp_path / str(background)
        directory.mkdir()
        with FigureDrawer(2, background=background) as drawer:
            drawer.submit([FigureFile(write_niceness, frame, directory / "niceness.txt"),
                           FigureFile(plot_trajectories, frame, directory / "f1.png", {"metrics": ["f1"]})])
            drawer.wait()
        files[background] = (directory / "niceness.txt").read_text(), (directory / "f1.png").read_bytes()
    if hasattr(os, "nice"):
        assert int(files[True][0]) == 19 and int(files[False][0]) == os.nice(0)
    assert files[True][1] == files[False][1]

