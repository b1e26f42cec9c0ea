"""Aggregate a sweep store across seeds: mean and confidence interval per grid point x system x round x metric.

The replicate is the seed: each seed is an independent run (its own data draw, split, initialisation and
recipients). Repetitions inside one cell share that cell's data split, so they are averaged first and each
seed contributes one value; the interval is Student's t across seeds,
``mean +/- t_{(1+c)/2, n-1} * sd / sqrt(n)`` with n the number of seeds that have a (non-NaN) value.
With one seed the interval collapses to the mean.

Outputs (``RESULTS_DIR/report`` by default): ``summary.csv`` (every round), ``summary.md`` (the last recorded
round of every metric, and an index of the figures) and ``figures/trajectories_<k>.png``, one per grid point,
with the mean trajectory per generator and a 95% band across seeds. When the sweep has a no-recourse control
(generator ``"none"``), also ``effects.csv`` and a section of ``summary.md`` with the final-round effects
attributable to recourse, and ``hidden_costs.csv`` with a section on the hidden costs of recourse (both paired
per seed and repetition: every repetition of every seed is a replicate; see ``reporting.attribution`` and
``reporting.hidden_costs``); with groups, ``group_gaps.csv`` and a section on the gaps between them. With
``versus = (axis, value)``, also ``versus.csv`` and a section with every other grid point minus its twin at
``axis = value`` (same seed, repetition, system and other axes: a paired comparison of one setting with another,
e.g. ``data.bounds = "data_range"`` against ``"schema"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from recourse_sim.errors import ConfigError
from recourse_sim.experiments.store import atomic_directory
from recourse_sim.experiments.sweep import REPORT, load_results, read_manifest
from recourse_sim.reporting.attribution import has_control, paired_differences, paired_effects, summarise_effects
from recourse_sim.reporting.hidden_costs import group_gap_table, hidden_costs_table
from recourse_sim.reporting.summary import summarise

SYSTEM = ["model", "generator"]
#: The metrics whose gap between groups the report shows (when the sweep has groups).
GAP_METRICS = ("approval_rate", "lender_loss")
#: The metrics of the ``versus`` section of summary.md, where present (versus.csv has every metric and round).
VERSUS_METRICS = ("domain_mmd", "model_mmd", "disagreement", "accuracy", "validity", "recourse_cost",
                  "implausibility", "unfaithfulness", "lender_loss")


def aggregate_seeds(
    frame: pd.DataFrame, axes: list[str] | tuple[str, ...] = (), confidence: float = 0.95
) -> pd.DataFrame:
    """Mean, sd, n (seeds) and a t-interval per ``axes`` x model x generator x round x metric.

    ``frame`` is a store's tidy table (columns ``seed``, the axes, ``model``, ``generator``, ``repetition``,
    ``round``, ``metric``, ``value``). Repetitions are averaged within each seed first.
    """
    if not 0.0 < confidence < 1.0:
        raise ConfigError("confidence", confidence, "a number in (0, 1), e.g. 0.95")
    keys = [*axes, *SYSTEM, "round", "metric"]
    missing = [c for c in [*keys, "seed", "value"] if c not in frame.columns]
    if missing:
        raise ConfigError("results table", f"missing columns {missing}",
                          f"a sweep store's table with {keys + ['seed', 'value']}")
    per_seed = frame.groupby([*keys, "seed"], sort=False)["value"].mean().reset_index()
    return summarise(per_seed, confidence=confidence, by=keys)


@dataclass
class Report:
    """Where the report went and what it covers."""

    out: Path
    summary: pd.DataFrame
    cells_done: int
    cells_total: int
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def report_sweep(results_dir: str | Path, out: str | Path | None = None, confidence: float = 0.95,
                 versus: str | None = None) -> Report:
    """Write ``summary.csv``, ``summary.md`` (at ``confidence``) and one figure per grid point (95% bands) for
    the store at ``results_dir``; ``versus = "AXIS=VALUE"`` adds the paired comparison with that setting."""
    import matplotlib.pyplot as plt

    from recourse_sim.reporting.trajectories import plot_trajectories

    results_dir = Path(results_dir)
    manifest = read_manifest(results_dir)
    axes = list(manifest["axes"])
    reference = parse_versus(versus, manifest) if versus is not None else None
    frame = load_results(results_dir)
    total = len(manifest["cells"])
    done = sum(entry["status"] == "done" for entry in manifest["cells"])
    if frame.empty:
        raise ConfigError("results store", str(results_dir), "a store with at least one finished cell (run "
                          "`recourse-sim sweep` first)")
    out = Path(out) if out is not None else results_dir / REPORT
    summary = aggregate_seeds(frame, axes, confidence)
    notes = []
    if done < total:
        notes.append(f"{total - done} of {total} cells are not finished (failed or not run yet); the report covers "
                     f"the {done} finished ones")
    if int(summary["n"].max()) <= 1:
        notes.append("one seed per grid point: the intervals collapse to the mean (set n_seeds > 1)")

    per_seed = frame.groupby([*axes, *SYSTEM, "round", "metric", "seed"], sort=False)["value"].mean().reset_index()
    points = per_seed[axes].drop_duplicates().reset_index(drop=True) if axes else pd.DataFrame(index=[0])
    figures: list[Path] = []
    sections, tables = _recourse_sections(frame, axes)
    if reference is not None:
        versus_section, versus_table = _versus_section(frame, axes, *reference)
        sections += versus_section
        tables["versus.csv"] = versus_table
    with atomic_directory(out) as staging:
        summary.to_csv(staging / "summary.csv", index=False)
        for name, table in tables.items():
            table.to_csv(staging / name, index=False)
        (staging / "figures").mkdir()
        index_rows = []
        for k, point in points.iterrows():
            part = per_seed
            for axis in axes:
                part = part[part[axis] == point[axis]]
            name = f"trajectories_{k + 1:02d}.png"
            figure = plot_trajectories(part)
            title = ", ".join(f"{a} = {point[a]}" for a in axes) or manifest["name"]
            figure.suptitle(f"{title}  (mean, 95% CI across seeds)", fontsize=10)
            figure.savefig(staging / "figures" / name, dpi=150)
            plt.close(figure)
            figures.append(out / "figures" / name)
            index_rows.append([f"[{name}](figures/{name})", *(str(point[a]) for a in axes)])
        (staging / "summary.md").write_text(
            _markdown(manifest, summary, axes, index_rows, done, total, confidence, notes) + sections,
            encoding="utf-8")
    return Report(out, summary, done, total, figures, notes)


def _recourse_sections(frame: pd.DataFrame, axes: list[str]) -> tuple[str, dict[str, pd.DataFrame]]:
    """With a control: the final-round attributable effects and the hidden costs as markdown, and their tables
    (file name -> table); nothing without one."""
    if not has_control(frame):
        return "", {}
    by = [*axes, *SYSTEM]
    effects = summarise_effects(paired_effects(frame), by=[*by, "round", "metric"])
    final = effects[effects["round"] == effects["round"].max()]
    costs = hidden_costs_table(frame, by=by)
    rows = [[*(str(r[a]) for a in axes), r["model"], r["generator"], r["metric"], _number(r["mean"]),
             f"[{_number(r['ci_low'])}, {_number(r['ci_high'])}]", _number(r["p_value"]), str(int(r["n"]))]
            for _, r in final.iterrows()]
    parts = [
        "", "## Effects attributable to recourse (final round)", "",
        "System minus its paired no-recourse control (same seed and repetition), mean, 95% t-interval and paired "
        "t-test across seeds x repetitions.", "",
        _table([*axes, "model", "generator", "metric", "effect", "95% CI", "p", "pairs"], rows),
    ]
    if not costs.empty:
        parts += ["", "## Hidden costs of recourse (mean over rounds)", "",
                  "`vs control`: paired difference to the no-recourse control, mean [95% CI] (p).", "",
                  _table(list(costs.columns), [[_cell(v) for v in row] for row in costs.itertuples(index=False)])]
    tables = {"effects.csv": effects, "hidden_costs.csv": costs}
    gaps = pd.concat([group_gap_table(frame, metric, by=by) for metric in GAP_METRICS], ignore_index=True)
    if not gaps.empty:
        tables["group_gaps.csv"] = gaps
        parts += ["", "## Gaps between groups (final round)", "",
                  "Gap between the groups in each metric, mean [95% CI] across seeds x repetitions; `vs control`: "
                  "the paired difference to the no-recourse control's gap (> 0: recourse widens a positive gap).", "",
                  _table(list(gaps.columns), [[_cell(v) for v in row] for row in gaps.itertuples(index=False)])]
    return "\n".join(parts) + "\n", tables


def parse_versus(text: str, manifest: dict) -> tuple[str, object]:
    """``"AXIS=VALUE"`` -> the grid axis and the value as the grid holds it (compared as text, so ``0.5`` finds
    the number 0.5); anything else is refused naming the axes and values there are."""
    axis, sep, value = text.partition("=")
    grid = manifest.get("grid", {})
    if not sep or axis.strip() not in grid:
        allowed = ", ".join(f"{a}=VALUE ({', '.join(map(str, values))})" for a, values in grid.items())
        raise ConfigError("--versus", text, f"AXIS=VALUE with a grid axis of this sweep: {allowed or 'none (no grid)'}")
    axis = axis.strip()
    for candidate in grid[axis]:
        if str(candidate) == value.strip():
            return axis, candidate
    raise ConfigError("--versus", text, f"a value of {axis}: {', '.join(map(str, grid[axis]))}")


def _versus_section(frame: pd.DataFrame, axes: list[str], axis: str, value) -> tuple[str, pd.DataFrame]:
    """Every grid point minus its twin at ``axis = value``: markdown for the final round and the summary table."""
    differences = paired_differences(frame, axis, value)
    by = [*axes, *SYSTEM, "round", "metric"]
    table = summarise_effects(differences, by=by) if not differences.empty else pd.DataFrame(columns=by)
    final = table[(table["round"] == frame["round"].max()) & table["metric"].isin(VERSUS_METRICS)
                  & (table["n"] > 0)] if not table.empty else table  # n = 0: e.g. the control's validity
    final = final.assign(order=final["metric"].map(VERSUS_METRICS.index)).sort_values([*axes, *SYSTEM, "order"])
    rows = [[*(str(r[a]) for a in axes), r["model"], r["generator"], r["metric"], _number(r["mean"]),
             f"[{_number(r['ci_low'])}, {_number(r['ci_high'])}]", _number(r["p_value"]), str(int(r["n"]))]
            for _, r in final.iterrows()]
    parts = [
        "", f"## Versus {axis} = {value} (final round)", "",
        f"Each grid point minus its twin with {axis} = {value} (same seed, repetition, model, generator and other "
        "axes), mean, 95% t-interval and paired t-test across seeds x repetitions; every metric and round is in "
        "versus.csv.", "",
        _table([*axes, "model", "generator", "metric", "difference", "95% CI", "p", "pairs"], rows),
    ]
    return "\n".join(parts) + "\n", table


def _cell(value) -> str:
    return _number(value) if isinstance(value, float) else str(value)


def _final(summary: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """The last round at which each metric was recorded, per grid point and system."""
    keys = [*axes, *SYSTEM, "metric"]
    recorded = summary[summary["n"] > 0]
    return recorded.sort_values("round").groupby(keys, sort=True).tail(1).sort_values(keys)


def _table(header: list[str], rows: list[list[str]]) -> str:
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: float) -> str:
    return "nan" if pd.isna(value) else f"{value:.4g}"


def _markdown(manifest, summary, axes, index_rows, done, total, confidence, notes) -> str:
    level = f"{confidence:.0%}"
    parts = [
        f"# Sweep report: {manifest['name']}",
        "",
        f"{done} of {total} cells; seeds {manifest['seeds']}; mean and {level} Student-t interval across seeds "
        "(repetitions within a cell averaged first).",
        "",
        *[f"- note: {note}" for note in notes],
        "",
        "## Figures",
        "",
        _table(["figure", *axes], index_rows),
        "",
        "## Last recorded round",
        "",
    ]
    final = _final(summary, axes)
    rows = [[*(str(r[a]) for a in axes), r["model"], r["generator"], r["metric"], str(int(r["round"])),
             _number(r["mean"]), f"[{_number(r['ci_low'])}, {_number(r['ci_high'])}]", str(int(r["n"]))]
            for _, r in final.iterrows()]
    parts.append(_table([*axes, "model", "generator", "metric", "round", "mean", f"{level} CI", "seeds"], rows))
    return "\n".join(parts) + "\n"
