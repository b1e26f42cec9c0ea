"""The faithful-first study (issue 13): its scenarios, its sweeps, its report tables by hand, and one tiny run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recourse_sim.cli import app
from recourse_sim.experiments import faithful
from recourse_sim.experiments.reproduce import STUDIES, reproduce_study
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.reporting.faithful import generator_differences, level_table, shift_effects_table
from recourse_sim.scenarios import embedded

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family", ["synthetic", "real"])
def test_repository_copies_match_the_embedded_scenarios(family):
    assert (ROOT / "scenarios" / "faithful" / f"{family}.toml").read_text() == \
        embedded(f"faithful/{family}").read_text()


@pytest.mark.parametrize("family", ["synthetic", "real"])
def test_the_mlp_and_the_ct_mlp_differ_only_in_their_training(family):
    scenario = Scenario.from_toml(embedded(f"faithful/{family}"))
    mlp, jem, ct = scenario.models
    assert (mlp.name, jem.name, ct.name) == ("mlp", "jem", "mlp")
    assert mlp.params == ct.params and (mlp.training_params, ct.training_params) == (None, {})
    assert [g.key for g in scenario.generators] == ["generic", "revise", "eccco", "gravitational", "none"]
    assert (scenario.rounds, scenario.repetitions, scenario.metrics.faithfulness) == (50, 5, True)


def test_sweeps_cover_every_dataset_and_the_quick_variant_shrinks_them():
    sweeps = faithful.faithful_sweeps()
    assert {family: sweep.axes["data.name"] for family, sweep in sweeps.items()} == {
        "real": ["california_housing"], "synthetic": ["overlapping", "linearly_separable", "circles", "moons"]}
    quick = faithful.faithful_sweeps(quick=True, only=["moons"])
    base = quick["synthetic"].base
    assert list(quick) == ["synthetic"] and (base.rounds, base.repetitions, base.data.n_samples) == (10, 2, 400)
    assert base.metrics.sgld_steps == 100


def test_an_unknown_experiment_is_refused():
    result = CliRunner().invoke(app, ["reproduce", "faithful", "--only", "mnist", "--out", "unused", "-q"])
    assert result.exit_code == 2 and "--only: got 'mnist'" in result.output


def _frame() -> pd.DataFrame:
    """Two repetitions; unfaithfulness at the final round: eccco 1.0/2.0, generic 3.0/5.0; domain_mmd: generic
    0.3/0.5 vs the control's 0.1/0.1."""
    rows = []
    values = {("eccco", "unfaithfulness"): (1.0, 2.0), ("generic", "unfaithfulness"): (3.0, 5.0),
              ("generic", "domain_mmd"): (0.3, 0.5), ("none", "domain_mmd"): (0.1, 0.1)}
    for (generator, metric), per_rep in values.items():
        for rep, value in enumerate(per_rep):
            for round_ in (0, 10):
                rows.append({"experiment": "moons", "system": f"mlp/{generator}/rep{rep}", "model": "mlp",
                             "generator": generator, "repetition": rep, "round": round_, "metric": metric,
                             "value": value if round_ == 10 else 0.0})
    return pd.DataFrame(rows)


def test_report_tables_by_hand():
    frame = _frame()
    levels = level_table(frame, ["unfaithfulness"]).set_index("generator")["unfaithfulness"]
    half = 12.706204736 * 0.5  # t(0.975, 1) * sd / sqrt(2): sd(1, 2) = 0.707
    assert levels["eccco"] == f"1.5 [{1.5 - half:.3g}, {1.5 + half:.3g}]"
    difference = generator_differences(frame, "unfaithfulness", others=("generic",))
    # Paired: 1 - 3 = -2 and 2 - 5 = -3 -> mean -2.5, sd 0.707.
    assert difference["eccco - other"].iloc[0].startswith(f"-2.5 [{-2.5 - half:+.3g}, {-2.5 + half:+.3g}]")
    effects = shift_effects_table(frame, metrics=["domain_mmd"]).set_index("generator")["domain_mmd"]
    assert effects["generic"].startswith("+0.3 [")  # (0.3 - 0.1 + 0.5 - 0.1) / 2


def test_a_tiny_study_runs_end_to_end_and_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(faithful, "QUICK", {"rounds": 2, "repetitions": 1})
    monkeypatch.setattr(faithful, "QUICK_METRICS", {"evaluate_every": 1, "permutations": 0, "sgld_steps": 5,
                                                    "protected_samples": 5, "mmd_samples": 50, "grid_points": 50})
    monkeypatch.setattr(faithful, "QUICK_SAMPLES", {"synthetic": 100, "real": 100})
    result = reproduce_study(STUDIES["faithful"], tmp_path / "out", quick=True, only=["moons"])
    assert not result.failed
    frame = result.results
    assert set(frame["model"]) == {"mlp", "jem", "mlp+ct"} and frame["round"].max() == 2
    unfaithful = frame[(frame["metric"] == "unfaithfulness") & (frame["generator"] != "none") & (frame["round"] > 0)]
    assert len(unfaithful) == 3 * 4 * 2 and np.isfinite(unfaithful["value"]).all()
    report = (tmp_path / "out" / "report.md").read_text()
    for section in ("## 1. Faithfulness", "## 2. Shift attributable", "## 3. The CT claims"):
        assert section in report
    assert (tmp_path / "out" / "figures" / "moons_faithfulness.png").exists()
