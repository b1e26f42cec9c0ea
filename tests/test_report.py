"""`recourse-sim report`: mean and confidence interval across seeds, checked against scipy on known tables."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from recourse_sim.cli import app
from recourse_sim.errors import ConfigError
from recourse_sim.experiments import aggregate_seeds, load_results, load_sweep, report_sweep, run_sweep

runner = CliRunner()

SWEEP = """
name = "report-sweep"
rounds = 2
device = "cpu"
n_seeds = 3
[data]
name = "overlapping"
n_samples = 100
[[models]]
name = "logistic_regression"
[[generators]]
name = "generic"
[[generators]]
name = "gravitational"
[grid]
recourse_share = [0.05, 0.2]
"""


def fake_cell(config: dict) -> pd.DataFrame:
    """A deterministic tidy table (no simulation): two repetitions, two metrics."""
    rng = np.random.default_rng(config["seed"])
    rows = [(f"{m['name']}/{g['name']}/rep{r}", m["name"], g["name"], r, t, metric, rng.normal(t, 1.0))
            for m in config["models"] for g in config["generators"] for r in range(2)
            for t in range(config["rounds"] + 1) for metric in ("disagreement", "f1")]
    frame = pd.DataFrame(rows, columns=["system", "model", "generator", "repetition", "round", "metric", "value"])
    return frame.astype({"repetition": "int64", "round": "int64", "value": "float64"})


def fail_on_seed_44(config: dict) -> pd.DataFrame:
    if config["seed"] == 44:
        raise RuntimeError("no")
    return fake_cell(config)


def known_table() -> pd.DataFrame:
    """Two grid points x 5 seeds x 2 repetitions, one system, rounds 0-1; a NaN in one repetition."""
    rng = np.random.default_rng(7)
    rows = []
    for share in (0.05, 0.2):
        for seed in range(5):
            for rep in range(2):
                for t in (0, 1):
                    value = float(rng.normal(10 * share + t, 1.0))
                    if (share, seed, rep, t) == (0.2, 3, 1, 1):
                        value = np.nan
                    rows.append((f"c{share}{seed}", seed, share, "lr", "generic", rep, t, "f1", value))
    return pd.DataFrame(rows, columns=["cell_id", "seed", "recourse_share", "model", "generator", "repetition",
                                       "round", "metric", "value"])


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_interval_across_seeds_matches_scipy(confidence):
    table = known_table()
    summary = aggregate_seeds(table, ["recourse_share"], confidence=confidence)
    assert len(summary) == 4
    for (share, t), part in table.groupby(["recourse_share", "round"]):
        per_seed = part.groupby("seed")["value"].apply(lambda v: np.nanmean(v.to_numpy())).to_numpy()
        mean, sem = per_seed.mean(), stats.sem(per_seed)
        low, high = stats.t.interval(confidence, len(per_seed) - 1, loc=mean, scale=sem)
        row = summary[(summary["recourse_share"] == share) & (summary["round"] == t)].iloc[0]
        assert row["n"] == 5  # seeds, not seeds x repetitions
        assert row["mean"] == pytest.approx(mean, rel=1e-12)
        assert row["std"] == pytest.approx(np.std(per_seed, ddof=1), rel=1e-12)
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))
    # Hand check of one interval: mean +- t_{0.975, 4} * sd / sqrt(5).
    values = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    table = pd.DataFrame({"seed": range(5), "model": "m", "generator": "g", "round": 0, "metric": "x", "value": values})
    row = aggregate_seeds(table).iloc[0]
    half = 2.7764451051977987 * values.std(ddof=1) / np.sqrt(5)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(3.2 - half), pytest.approx(3.2 + half))


def test_one_seed_collapses_the_interval_to_the_mean():
    table = known_table()
    row = aggregate_seeds(table[table["seed"] == 0], ["recourse_share"]).iloc[0]
    assert row["n"] == 1 and row["ci_low"] == row["ci_high"] == row["mean"]


def test_bad_confidence_and_missing_columns():
    with pytest.raises(ConfigError, match="confidence: got 1.5"):
        aggregate_seeds(known_table(), confidence=1.5)
    with pytest.raises(ConfigError, match="missing columns"):
        aggregate_seeds(known_table().drop(columns="seed"))


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(SWEEP))
    assert run_sweep(load_sweep(path), tmp_path / "store", cell_fn=fake_cell).ok
    return tmp_path / "store"


def test_report_writes_the_table_and_figures_with_bands(store):
    result = runner.invoke(app, ["report", str(store)])
    assert result.exit_code == 0, result.output
    out = store / "report"
    assert sorted(p.name for p in out.iterdir()) == ["figures", "summary.csv", "summary.md"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["trajectories_01.png", "trajectories_02.png"]
    summary = pd.read_csv(out / "summary.csv")
    expected = aggregate_seeds(load_results(store), ["recourse_share"])
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False)
    # 2 grid points x 2 generators x 3 rounds x 2 metrics, each over 3 seeds, with a non-degenerate interval.
    assert len(summary) == 24 and (summary["n"] == 3).all()
    assert ((summary["ci_low"] < summary["mean"]) & (summary["mean"] < summary["ci_high"])).all()
    markdown = (out / "summary.md").read_text()
    assert "| recourse_share | model | generator | metric | round | mean | 95% CI | seeds |" in markdown
    assert "trajectories_02.png" in markdown


def test_report_of_a_partial_store_says_what_is_missing(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(SWEEP))
    assert not run_sweep(load_sweep(path), tmp_path / "store", cell_fn=fail_on_seed_44).ok
    report = report_sweep(tmp_path / "store", tmp_path / "report")
    assert report.cells_done == 4 and report.cells_total == 6
    assert "2 of 6 cells are not finished" in report.notes[0]
    assert (report.summary["n"] == 2).all()


def test_report_refuses_a_directory_that_is_not_a_store(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "results store: got" in result.output and "manifest.json" in result.output


def test_report_refuses_a_store_without_finished_cells(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(SWEEP).replace("n_seeds = 3", "n_seeds = 1\nseed = 44"))
    run_sweep(load_sweep(path), tmp_path / "store", cell_fn=fail_on_seed_44)
    result = runner.invoke(app, ["report", str(tmp_path / "store")])
    assert result.exit_code == 2 and "at least one finished cell" in result.output


def test_report_output_that_is_a_file(store, tmp_path):
    (tmp_path / "taken").write_text("")
    result = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "existing file" in result.output


def test_paired_t_p_value_and_interval_equal_scipy_stats():
    """reporting uses scipy.special (scipy.stats is slow to import); independent truth: scipy.stats itself.
    Margin: 1e-12 relative (float rounding of the same formula)."""
    from recourse_sim.reporting.attribution import _paired_t_p
    from recourse_sim.reporting.summary import summarise

    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10, 40):
        d = rng.normal(0.3, 1.0, n)
        assert _paired_t_p(pd.Series(d)) == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, rel=1e-12)
    frame = pd.DataFrame({"model": "m", "generator": "g", "round": np.repeat([1, 2], 7), "metric": "x",
                          "value": rng.normal(size=14)})
    summary = summarise(frame)
    for _, row in summary.iterrows():
        values = frame.loc[frame["round"] == row["round"], "value"]
        low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-12)


def fake_cell_with_control(config: dict) -> pd.DataFrame:
    """Like :func:`fake_cell` with a control ("none"), hidden costs and two groups: generic = control + 0.1 in
    disagreement and collateral rejections, and widens the approval gap between the groups by 0.05."""
    rng = np.random.default_rng(config["seed"])
    rows = []
    for r in range(2):
        for t in range(config["rounds"] + 1):
            base = {metric: rng.normal(0.3, 0.05) for metric in ("disagreement", "collateral_rejections",
                                                                  "approval_rate[a]", "approval_rate[b]")}
            for generator in ("generic", "none"):
                shift = 0.1 if generator == "generic" else 0.0
                values = {"disagreement": base["disagreement"] + shift,
                          "collateral_rejections": base["collateral_rejections"] + shift + rng.normal(0, 0.01),
                          "approval_rate[a]": base["approval_rate[a]"],
                          "approval_rate[b]": base["approval_rate[b]"] + shift / 2}
                rows += [(f"lr/{generator}/rep{r}", "lr", generator, r, t, metric, value)
                         for metric, value in values.items()]
    frame = pd.DataFrame(rows, columns=["system", "model", "generator", "repetition", "round", "metric", "value"])
    return frame.astype({"repetition": "int64", "round": "int64", "value": "float64"})


def test_report_with_a_control_adds_effects_hidden_costs_and_group_gaps(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(SWEEP).replace('name = "gravitational"', 'name = "none"'))
    assert run_sweep(load_sweep(path), tmp_path / "store", cell_fn=fake_cell_with_control).ok
    report = report_sweep(tmp_path / "store")
    names = sorted(p.name for p in report.out.iterdir())
    assert names == ["effects.csv", "figures", "group_gaps.csv", "hidden_costs.csv", "summary.csv", "summary.md"]
    effects = pd.read_csv(report.out / "effects.csv")
    final = effects[(effects["metric"] == "disagreement") & (effects["round"] == 2)]
    assert np.allclose(final["mean"], 0.1) and (final["n"] == 6).all()  # 3 seeds x 2 repetitions, paired
    costs = pd.read_csv(report.out / "hidden_costs.csv").set_index(["recourse_share", "generator"])
    frame = load_results(tmp_path / "store")
    rejections = frame[(frame["metric"] == "collateral_rejections") & (frame["round"] >= 1)]
    expected = rejections[(rejections["generator"] == "generic") & (rejections["recourse_share"] == 0.05)]["value"]
    assert costs.loc[(0.05, "generic"), "collateral_rejections"] == pytest.approx(expected.mean())
    paired = costs.loc[(0.05, "generic"), "collateral_rejections vs control"]  # "+0.098 [+0.096, +0.1] (p=...)"
    assert float(paired.split(" [")[0]) == pytest.approx(0.1, abs=0.01)
    gaps = pd.read_csv(report.out / "group_gaps.csv")
    widened = gaps[(gaps["generator"] == "generic") & (gaps["metric"] == "approval_rate gap (b - a)")]
    assert np.allclose(widened["vs control"], 0.05)
    markdown = (report.out / "summary.md").read_text()
    assert "## Effects attributable to recourse" in markdown and "## Gaps between groups" in markdown


def test_paired_effects_test_is_calibrated_under_no_change_and_has_power_against_a_planted_one():
    """The paired t-test behind every "vs control" cell (effects, hidden costs, group gaps): with 5 repetitions,
    about 5% of null comparisons are significant at 0.05, and a planted shift of 1.5 sd is found most times."""
    from recourse_sim.reporting.attribution import summarise_effects

    rng = np.random.default_rng(0)
    n_tests, reps = 2000, 5

    def rejection_rate(shift: float) -> float:
        effect = rng.normal(shift, 1.0, size=(n_tests, reps))
        frame = pd.DataFrame({"metric": np.repeat(np.arange(n_tests), reps),
                              "repetition": np.tile(np.arange(reps), n_tests), "effect": effect.ravel()})
        return float((summarise_effects(frame, by=["metric"])["p_value"] < 0.05).mean())

    null = rejection_rate(0.0)
    assert abs(null - 0.05) < 3 * np.sqrt(0.05 * 0.95 / n_tests)  # 0.035-0.065
    assert rejection_rate(1.5) > 0.7  # non-central t, df 4, delta = 1.5 sqrt(5): power ~0.8


def fake_cell_by_share(config: dict) -> pd.DataFrame:
    """:func:`fake_cell` plus 10 x recourse_share: the same seed's draws at both grid points, so twins differ by
    exactly 10 x (0.2 - 0.05) = 1.5."""
    frame = fake_cell(config)
    return frame.assign(value=frame["value"] + 10 * config["recourse_share"])


def test_report_versus_pairs_each_grid_point_with_its_twin(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(SWEEP))
    assert run_sweep(load_sweep(path), tmp_path / "store", cell_fn=fake_cell_by_share).ok
    result = runner.invoke(app, ["report", str(tmp_path / "store"), "--versus", "recourse_share=0.05"])
    assert result.exit_code == 0, result.output
    versus = pd.read_csv(tmp_path / "store" / "report" / "versus.csv")
    # only the other grid point, every system, round and metric; paired per seed and repetition (3 x 2)
    assert set(versus["recourse_share"]) == {0.2} and len(versus) == 2 * 3 * 2
    assert np.allclose(versus["mean"], 1.5) and (versus["n"] == 6).all() and (versus["p_value"] < 1e-10).all()
    markdown = (tmp_path / "store" / "report" / "summary.md").read_text()
    assert "## Versus recourse_share = 0.05 (final round)" in markdown
    assert "| 0.2 | logistic_regression | generic | disagreement | 1.5 |" in markdown
    assert "| f1 |" not in markdown.split("## Versus")[1]  # the section shows VERSUS_METRICS only


def test_report_versus_finds_no_difference_where_the_setting_changes_nothing(store):
    """No change (``fake_cell`` ignores recourse_share): every paired difference is 0 with p = 1, not a finding."""
    result = runner.invoke(app, ["report", str(store), "--versus", "recourse_share=0.2"])
    assert result.exit_code == 0, result.output
    versus = pd.read_csv(store / "report" / "versus.csv")
    assert set(versus["recourse_share"]) == {0.05} and len(versus) == 2 * 3 * 2
    assert (versus["mean"] == 0).all() and (versus["p_value"] == 1).all() and (versus["n"] == 6).all()


@pytest.mark.parametrize(("versus", "allowed"), [
    ("recourse_share", "AXIS=VALUE with a grid axis of this sweep: recourse_share=VALUE (0.05, 0.2)"),
    ("seed=42", "AXIS=VALUE with a grid axis"),
    ("recourse_share=0.3", "a value of recourse_share: 0.05, 0.2"),
])
def test_report_versus_refuses_what_the_grid_does_not_have(store, versus, allowed):
    result = runner.invoke(app, ["report", str(store), "--versus", versus])
    assert result.exit_code == 2 and f"--versus: got {versus!r}" in result.output and allowed in result.output
    assert not (store / "report").exists()  # refused before anything is written


def refuse_to_draw(frame: pd.DataFrame, path: Path) -> None:
    raise ValueError(f"cannot draw {path.name}")


def test_figures_drawn_in_other_processes_are_the_files_drawn_here(tmp_path):
    from recourse_sim.reporting.comparisons import plot_final_bars
    from recourse_sim.reporting.figure_files import FigureDrawer, FigureFile
    from recourse_sim.reporting.trajectories import plot_trajectories

    config = {"seed": 1, "rounds": 3, "models": [{"name": "lr"}, {"name": "mlp"}],
              "generators": [{"name": "generic"}, {"name": "none"}]}
    frame = fake_cell(config)
    for workers in (1, 2):
        (tmp_path / str(workers)).mkdir()
        with FigureDrawer(workers) as drawer:
            drawer.submit([FigureFile(plot_trajectories, frame, tmp_path / str(workers) / "trajectories.png",
                                      {"metrics": ["disagreement", "f1"]}),
                           FigureFile(plot_final_bars, frame, tmp_path / str(workers) / "final.png",
                                      {"metrics": ["f1"]})])
            drawer.wait()
    for name in ("trajectories.png", "final.png"):
        assert (tmp_path / "2" / name).read_bytes() == (tmp_path / "1" / name).read_bytes()  # same function, data
    with FigureDrawer(2) as drawer:  # a figure that fails is an error of the report, raised where it waits
        drawer.submit([FigureFile(refuse_to_draw, frame, tmp_path / "broken.png")])
        with pytest.raises(ValueError, match="cannot draw broken.png"):
            drawer.wait()
