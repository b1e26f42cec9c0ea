"""Sweeps: grid expansion, the results store, resume after kill -9, parallel and Ray executors, and one clear
error (and nothing written) for each bad input."""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recourse_sim.cli import app
from recourse_sim.errors import ConfigError
from recourse_sim.experiments import load_results, load_sweep, read_manifest, run_sweep, run_sweeps
from recourse_sim.experiments import executors as executors_module
from recourse_sim.experiments.executors import run_cell
from recourse_sim.experiments.sweep import StoreWriteError, SweepStore

runner = CliRunner()

#: 2 shares x 2 thresholds x 2 seeds = 8 real (tiny) cells, ~0.3-0.5 s each on one thread.
#: 2 shares x 2 seeds = 4 cells (run with the fast fake cell function where the simulation is not the point).
SMALL = """
name = "small"
rounds = 2
device = "cpu"
n_seeds = 2
[data]
name = "overlapping"
n_samples = 100
[[models]]
name = "logistic_regression"
epochs = 3
[[generators]]
name = "generic"
[metrics]
evaluate_every = 1
permutations = 0
grid_points = 10
[grid]
recourse_share = [0.05, 0.2]
"""

#: SMALL with a second grid axis and another name: 2 shares x 2 thresholds x 2 seeds = 8 cells.
SWEEP = SMALL.replace('name = "small"', 'name = "tiny-sweep"') + '"generators.generic.threshold" = [0.5, 0.9]\n'


def write(directory: Path, text: str, name: str = "sweep.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


# Cell functions for the tests. They live at module level so worker processes (spawn) can import them; Ray
# gets them by value (see the ray_cluster fixture). Production code has no test hooks.
def fake_cell(config: dict) -> pd.DataFrame:
    """A deterministic tidy table without simulating (milliseconds instead of a second)."""
    rng = np.random.default_rng(config["seed"])
    rows = [(f"{m['name']}/{g['name']}/rep{r}", m["name"], g["name"], r, t, metric, rng.normal() + config["recourse_share"])
            for m in config["models"] for g in config["generators"] for r in range(config["repetitions"])
            for t in range(config["rounds"] + 1) for metric in ("disagreement", "f1")]
    frame = pd.DataFrame(rows, columns=["system", "model", "generator", "repetition", "round", "metric", "value"])
    return frame.astype({"repetition": "int64", "round": "int64", "value": "float64"})


def crash_on_share_02_seed_43(config: dict) -> pd.DataFrame:
    if config["recourse_share"] == 0.2 and config["seed"] == 43:
        os._exit(3)  # the worker process dies mid-cell
    return fake_cell(config)


def raise_on_share_02_seed_43(config: dict) -> pd.DataFrame:
    if config["recourse_share"] == 0.2 and config["seed"] == 43:
        raise RuntimeError("boom in cell")
    return run_cell(config)


def die_in_cell(attempts_dir: str, always: bool, config: dict) -> pd.DataFrame:
    """Kill the worker on the first attempt (``always``: on every attempt) of one cell: share 0.2, seed 43
    (and threshold 0.9 where the sweep has that axis)."""
    threshold = config["generators"][0].get("threshold", 0.9)
    if config["recourse_share"] == 0.2 and config["seed"] == 43 and threshold == 0.9:
        log = Path(attempts_dir) / "attempts"
        previous = log.read_text().count("x") if log.exists() else 0
        with log.open("a") as handle:
            handle.write("x")
        if always or previous == 0:
            os._exit(1)
    return run_cell(config)


def assert_same_store(store: Path, reference: pd.DataFrame) -> None:
    manifest = read_manifest(store)
    assert all(entry["status"] == "done" for entry in manifest["cells"])
    files = sorted(p.name for p in (store / "cells").iterdir())
    assert files == sorted(f"{e['id']}{s}" for e in manifest["cells"] for s in (".parquet", ".toml"))
    pd.testing.assert_frame_equal(load_results(store), reference, check_exact=True)


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("sweep"), SWEEP)


@pytest.fixture(scope="module")
def reference(sweep_file) -> pd.DataFrame:
    """A clean, uninterrupted, serial run of SWEEP (in this process)."""
    result = run_sweep(load_sweep(sweep_file), sweep_file.parent / "reference")
    assert result.ok and result.done == 8
    return load_results(sweep_file.parent / "reference")


# ------------------------------------------------------------------------------------------ the grid
def test_grid_expands_into_validated_cells_with_stable_ids(sweep_file):
    sweep = load_sweep(sweep_file)
    assert len(sweep.cells) == 8 and sweep.shape().endswith("= 8 cells")
    assert [c.seed for c in sweep.cells[:2]] == [42, 43]
    assert {(c.axes["recourse_share"], c.axes["generators.generic.threshold"]) for c in sweep.cells} == {
        (0.05, 0.5), (0.05, 0.9), (0.2, 0.5), (0.2, 0.9)}
    assert sweep.cells[0].scenario.generators[0].params == {"threshold": 0.5}
    assert len({c.id for c in sweep.cells}) == 8
    again = load_sweep(sweep_file)
    assert [c.id for c in again.cells] == [c.id for c in sweep.cells] and again.fingerprint == sweep.fingerprint
    # The resolved sweep file is itself a sweep with the same cells.
    resolved = write(sweep_file.parent, sweep.to_toml(), "resolved.toml")
    assert [c.id for c in load_sweep(resolved).cells] == [c.id for c in sweep.cells]


def test_nested_and_quoted_grid_keys_and_list_valued_axes(tmp_path):
    text = SMALL.replace('[grid]\nrecourse_share = [0.05, 0.2]',
                         '[[models]]\nname = "mlp"\nlabel = "net"\n[grid]\ndata.name = ["overlapping", "moons"]\n'
                         '"models.net.hidden_sizes" = [[4], [8, 8]]\n')
    sweep = load_sweep(write(tmp_path, text))
    assert list(sweep.axes) == ["data.name", "models.net.hidden_sizes"] and len(sweep.cells) == 8
    assert sweep.cells[2].scenario.models[1].hidden_sizes == [8, 8]
    assert sweep.cells[2].axes["models.net.hidden_sizes"] == "[8, 8]"  # non-scalar axis values as JSON text


def test_validate_accepts_a_sweep_and_prints_the_number_of_cells(sweep_file):
    result = runner.invoke(app, ["validate", str(sweep_file)])
    assert result.exit_code == 0, result.output
    assert "valid sweep, 8 cells" in result.output and "recourse_share: 2 x" in result.output


def test_results_identify_cell_seed_and_axes(reference):
    assert list(reference.columns[:4]) == ["cell_id", "seed", "recourse_share", "generators.generic.threshold"]
    assert reference.groupby("cell_id")["seed"].nunique().eq(1).all()
    assert set(reference["generator"]) == {"generic(threshold=0.5)", "generic(threshold=0.9)"}


# -------------------------------------------------------------------------- resume, parallel, serial
def _done(store: Path) -> int:
    try:
        return sum(e["status"] == "done" for e in json.loads((store / "manifest.json").read_text())["cells"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def test_resume_after_kill_9_equals_a_clean_run(sweep_file, reference, tmp_path):
    store = tmp_path / "store"
    command = [sys.executable, "-m", "recourse_sim.cli", "sweep", str(sweep_file), "--out", str(store), "-q"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while _done(store) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = _done(store)
    assert process.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    assert 2 <= finished < 8, f"killed after {finished} of 8 cells; the test needs a kill mid-sweep"
    kept = {e["id"]: (store / e["file"]).stat().st_mtime_ns
            for e in read_manifest(store)["cells"] if e["status"] == "done"}

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"({len(kept)} already in the store, {8 - len(kept)} run now)" in rerun.stdout
    assert {cid: (store / "cells" / f"{cid}.parquet").stat().st_mtime_ns for cid in kept} == kept  # not redone
    assert not list(store.rglob("*.tmp"))
    assert_same_store(store, reference)


def test_rerun_of_a_finished_sweep_runs_nothing(sweep_file, reference):
    result = run_sweep(load_sweep(sweep_file), sweep_file.parent / "reference")
    assert result.skipped == 8 and result.ran == [] and result.ok


def test_parallel_workers_give_the_same_store_as_serial(sweep_file, reference, tmp_path):
    result = runner.invoke(app, ["sweep", str(sweep_file), "--out", str(tmp_path / "store"), "--workers", "2", "-q"])
    assert result.exit_code == 0, result.output
    assert_same_store(tmp_path / "store", reference)


def test_worker_process_crash_is_reported_and_the_other_cells_finish(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    result = run_sweep(sweep, tmp_path / "store", workers=2, cell_fn=crash_on_share_02_seed_43)
    crashed = next(c for c in sweep.cells if c.axes["recourse_share"] == 0.2 and c.seed == 43)
    assert list(result.failed) == [crashed.id] and "worker process died" in result.failed[crashed.id]
    assert result.done == 3
    entry = next(e for e in read_manifest(tmp_path / "store")["cells"] if e["id"] == crashed.id)
    assert entry["status"] == "failed" and not (tmp_path / "store" / entry["file"]).exists()
    # Rerunning retries only the failed cell.
    again = run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell)
    assert again.ran == [crashed.id] and again.skipped == 3 and again.ok


def test_run_sweeps_shares_one_queue_in_the_given_order_and_keeps_each_store_its_own(tmp_path):
    first = load_sweep(write(tmp_path, SMALL))
    # The same sweep under another name: equal configs, so equal cell ids in both stores.
    second = load_sweep(write(tmp_path, SMALL.replace('name = "small"', 'name = "small-2"'), "second.toml"))
    seen: list[tuple[str, int]] = []

    def recording_cell(config: dict) -> pd.DataFrame:
        seen.append((config["name"], config["seed"]))
        return fake_cell(config)

    results = run_sweeps([(second, tmp_path / "b"), (first, tmp_path / "a")], cell_fn=recording_cell)
    assert [name for name, _ in seen] == ["small-2"] * 4 + ["small"] * 4  # the sweeps in the order given
    assert [r.done for r in results] == [4, 4] and all(r.ok for r in results)
    for sweep, store in ((first, "a"), (second, "b")):
        alone = run_sweep(sweep, tmp_path / f"{store}-alone", cell_fn=fake_cell)
        assert alone.ok
        pd.testing.assert_frame_equal(load_results(tmp_path / store), load_results(tmp_path / f"{store}-alone"))
    # Two workers over both stores: same stores; a rerun of either finds everything done.
    parallel = run_sweeps([(first, tmp_path / "pa"), (second, tmp_path / "pb")], workers=2, cell_fn=fake_cell)
    assert [r.done for r in parallel] == [4, 4]
    pd.testing.assert_frame_equal(load_results(tmp_path / "pa"), load_results(tmp_path / "a"))
    assert run_sweeps([(first, tmp_path / "pa")], cell_fn=fake_cell)[0].skipped == 4


def test_on_done_reports_each_cell_once_its_table_is_in_the_store_and_previous_runs_cells_first(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    failing = next(c for c in sweep.cells if c.axes["recourse_share"] == 0.2 and c.seed == 43)
    events: list[tuple] = []

    def cell(config: dict) -> pd.DataFrame:
        events.append(("runs", config["seed"], config["recourse_share"]))
        if (config["seed"], config["recourse_share"]) == (43, 0.2):
            raise RuntimeError("boom in cell")
        return fake_cell(config)

    def on_done(job: int, done) -> None:
        assert job == 0 and not load_results(tmp_path / "store", {done.id}).empty  # already in the store
        events.append(("done", done.seed, done.axes["recourse_share"]))

    run_sweeps([(sweep, tmp_path / "store")], cell_fn=cell, on_done=on_done)
    expected = []
    for c in sweep.cells:  # grid order, serially: each cell is reported right after it ran, a failed one never
        expected.append(("runs", c.seed, c.axes["recourse_share"]))
        if c is not failing:
            expected.append(("done", c.seed, c.axes["recourse_share"]))
    assert events == expected
    events.clear()
    run_sweeps([(sweep, tmp_path / "store")], cell_fn=fake_cell, on_done=on_done)  # the rerun retries the failed
    done_before = [("done", c.seed, c.axes["recourse_share"]) for c in sweep.cells if c is not failing]
    assert events == [*done_before, ("done", failing.seed, failing.axes["recourse_share"])]


def test_failing_cell_is_reported_by_the_cli_and_retried_on_rerun(tmp_path, monkeypatch):
    path = write(tmp_path, SMALL)
    monkeypatch.setattr(executors_module, "run_cell", raise_on_share_02_seed_43)
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "store"), "-q"])
    assert result.exit_code == 1
    assert "1 cells failed" in result.output and "RuntimeError: boom in cell" in result.output
    assert "recourse_share=0.2, seed=43" in result.output
    monkeypatch.setattr(executors_module, "run_cell", fake_cell)
    result = runner.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "store"), "-q"])
    assert result.exit_code == 0 and "(3 already in the store, 1 run now)" in result.output


def test_disk_full_leaves_no_partial_cell(tmp_path, monkeypatch):
    sweep = load_sweep(write(tmp_path, SMALL))
    store = tmp_path / "store"
    real, calls = pd.DataFrame.to_parquet, []

    def disk_full_on_second_cell(self, handle, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            handle.write(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, handle, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full_on_second_cell)
    with pytest.raises(StoreWriteError, match="No space left on device"):
        run_sweep(sweep, store, cell_fn=fake_cell)
    manifest = read_manifest(store)
    done = [e["id"] for e in manifest["cells"] if e["status"] == "done"]
    assert len(done) == 1 and [e["status"] for e in manifest["cells"]][1:] == ["pending"] * 3
    assert sorted(p.name for p in (store / "cells").iterdir()) == [f"{done[0]}.parquet", f"{done[0]}.toml"]
    assert not list(store.rglob("*.tmp"))
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    result = run_sweep(sweep, store, cell_fn=fake_cell)
    assert result.skipped == 1 and len(result.ran) == 3 and result.ok


def test_force_reruns_every_cell(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell)
    result = run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell, force=True)
    assert result.skipped == 0 and len(result.ran) == 4


def test_missing_cell_file_is_recomputed(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell)
    (tmp_path / "store" / "cells" / f"{sweep.cells[0].id}.parquet").unlink()
    result = run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell)
    assert result.ran == [sweep.cells[0].id] and "missing or changed" in result.warnings[0]


# ----------------------------------------------------------------------------- bad inputs (catalogue)
CSV = {
    "nan": "a,b,y\n1,2,0\n3,,1\n5,6,0\n7,8,1\n2,1,0\n4,3,1\n6,5,0\n8,7,1\n",
    "constant": "a,b,y\n1,5,0\n3,5,1\n5,5,0\n7,5,1\n2,5,0\n4,5,1\n6,5,0\n8,5,1\n",
    "no_target": "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n2,1,0\n4,3,1\n6,5,0\n8,7,1\n",
}
CSV_DATA = '[data]\nname = "csv"\npath = "{path}"\ntarget = "y"'
TINY_DATA = '[data]\nname = "overlapping"\nn_samples = 100'

BAD = {
    "malformed toml": ("name = [unclosed", ["sweep file", "valid TOML"]),
    "unknown top-level key": (SMALL.replace("n_seeds = 2", "n_seed = 2"), ["n_seed", "did you mean 'n_seeds'"]),
    "unknown key in a section": (SMALL.replace("permutations = 0", "permutatons = 0"),
                                 ["metrics.permutatons", "did you mean 'permutations'"]),
    "unknown grid path": (SMALL + "roundz = [1, 2]\n", ["grid.roundz", "did you mean 'rounds'"]),
    "unknown nested grid path": (SMALL + '"metrics.permutatons" = [0, 5]\n',
                                 ["grid.metrics.permutatons", "did you mean 'permutations'"]),
    "unknown generator parameter in grid": (SMALL + '"generators.generic.threshhold" = [0.5]\n',
                                            ["grid.generators.generic.threshhold", "did you mean 'threshold'"]),
    "grid path to an absent generator": (SMALL + '"generators.wachter.threshold" = [0.5]\n',
                                         ["grid.generators.wachter.threshold", "'wachter'", "['generic']"]),
    "grid index out of range": (SMALL + '"models.3.epochs" = [3]\n', ["grid.models.3.epochs", "index 0..0"]),
    "grid value not a list": (SMALL + "rounds = 3\n", ["grid.rounds", "got 3", "a non-empty list"]),
    "empty grid": (SMALL + "rounds = []\n", ["grid.rounds", "got []", "non-empty list"]),
    "repeated grid values": (SMALL + "rounds = [2, 2]\n", ["grid.rounds", "distinct values"]),
    # (an int for a float field resolves to the float; issue 16 made integer fields strict, so not rounds = [2, 2.0])
    "values resolving to the same cell": (SMALL + '"search.init_noise" = [0, 0.0]\n', ["grid", "resolve to the same scenario"]),
    "seed as a grid axis": (SMALL + "seed = [1, 2]\n", ["grid.seed", "n_seeds"]),
    "n_seeds zero": (SMALL.replace("n_seeds = 2", "n_seeds = 0"), ["n_seeds", "got 0", "integer >= 1"]),
    "n_seeds wrong type": (SMALL.replace("n_seeds = 2", 'n_seeds = "three"'), ["n_seeds", "'three'"]),
    "grid not a table": (SMALL.replace("n_seeds = 2", "n_seeds = 2\ngrid = [1, 2]").split("[grid]")[0],
                         ["grid", "got [1, 2]", "a table"]),
    "list outside the grid": (SMALL.replace("rounds = 2", "rounds = [2, 3]"),
                              ["rounds", "got [2, 3]", "[grid]"]),
    "wrong type in grid": (SMALL + 'rounds = ["many"]\n', ["grid.rounds", "'many'"]),
    "mu zero in grid": (SMALL.replace("[0.05, 0.2]", "[0.05, 0]"), ["grid.recourse_share", "got 0", "a share in (0, 1]"]),
    "mu above one in grid": (SMALL.replace("[0.05, 0.2]", "[0.05, 1.5]"), ["grid.recourse_share", "got 1.5"]),
    "rounds below one in grid": (SMALL + "rounds = [0, 2]\n", ["grid.rounds", "got 0"]),
    "gamma outside (0, 1) in grid": (SMALL + '"generators.generic.threshold" = [0.5, 1.0]\n',
                                     ["grid.generators.generic.threshold", "got 1.0", "(0, 1)"]),
    "negative lambda in grid": (SMALL + '"generators.generic.lambda_cost" = [-0.1]\n',
                                ["grid.generators.generic.lambda_cost", "got -0.1", ">= 0"]),
    "unknown dataset in grid": (SMALL + 'data.name = ["overlapping", "mons"]\n',
                                ["grid.data.name", "did you mean 'moons'"]),
    "unknown model in grid": (SMALL + '"models.0.name" = ["logistic_regression", "svm"]\n',
                              ["grid.models.0.name", "'svm'"]),
    "unknown generator name": (SMALL.replace('name = "generic"', 'name = "generik"'),
                               ["generators.0.name", "did you mean 'generic'"]),
    "dataset with NaN": (SMALL.replace(TINY_DATA, CSV_DATA.format(path="{nan}")), ["data", "non-finite"]),
    "dataset with a constant column": (SMALL.replace(TINY_DATA, CSV_DATA.format(path="{constant}")),
                                       ["data", "constant feature"]),
    "csv without the target column": (SMALL.replace(TINY_DATA, CSV_DATA.format(path="{no_target}")),
                                      ["data", "target column 'y' is missing"]),
    "csv file missing": (SMALL.replace(TINY_DATA, CSV_DATA.format(path="{missing}")), ["data", "does not exist"]),
    "csv without a target key": (SMALL.replace(TINY_DATA, '[data]\nname = "csv"\npath = "{nan}"'),
                                 ["data", "needs data.path and data.target"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweeps_fail_with_one_clear_error_and_write_nothing(tmp_path, case):
    text, messages = BAD[case]
    files = {name: tmp_path / f"{name}.csv" for name in CSV}
    for name, content in CSV.items():
        files[name].write_text(content)
    text = text.replace("{missing}", str(tmp_path / "absent.csv"))
    for name, path in files.items():
        text = text.replace("{" + name + "}", str(path))
    out = tmp_path / "out"
    result = runner.invoke(app, ["sweep", str(write(tmp_path, text)), "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    for message in messages:
        assert message in result.output, f"{message!r} not in {result.output!r}"
    assert not out.exists()
    assert runner.invoke(app, ["validate", str(tmp_path / "sweep.toml")]).exit_code == 2


def test_missing_sweep_file(tmp_path):
    result = runner.invoke(app, ["sweep", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "an existing TOML file" in result.output


def test_output_directory_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("")
    result = runner.invoke(app, ["sweep", str(write(tmp_path, SMALL)), "--out", str(tmp_path / "taken"), "-q"])
    assert result.exit_code == 2 and "out: got" in result.output and "existing file" in result.output


def test_read_only_output_directory(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: let the check see what a user would
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))
        result = runner.invoke(app, ["sweep", str(write(tmp_path, SMALL)), "--out", str(locked / "store"), "-q"])
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 2 and "not writable" in result.output
    assert not (locked / "store").exists()


def test_directory_with_other_files_is_not_used_as_a_store(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["sweep", str(write(tmp_path, SMALL)), "--out", str(tmp_path / "store"), "-q"])
    assert result.exit_code == 2 and "holds other files: notes.txt" in result.output
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["notes.txt"]  # nothing added


def test_leftovers_of_a_kill_during_the_first_write_do_not_block_the_rerun(tmp_path):
    store = tmp_path / "store"
    (store / "cells").mkdir(parents=True)
    for leftover in (".lock", ".manifest.json.x1.tmp", "sweep.toml", "cells/.abc.parquet.x2.tmp"):
        (store / leftover).write_text("partial")
    result = run_sweep(load_sweep(write(tmp_path, SMALL)), store, cell_fn=fake_cell)
    assert result.ok and result.done == 4 and not list(store.rglob("*.tmp"))


def test_store_of_a_different_sweep_is_refused_unless_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(executors_module, "run_cell", fake_cell)
    store = tmp_path / "store"
    first = write(tmp_path, SMALL, "first.toml")
    assert runner.invoke(app, ["sweep", str(first), "--out", str(store), "-q"]).exit_code == 0
    before = (store / "manifest.json").read_text()
    second = write(tmp_path, SMALL.replace("rounds = 2", "rounds = 3"), "second.toml")
    result = runner.invoke(app, ["sweep", str(second), "--out", str(store), "-q"])
    assert result.exit_code == 2 and "different sweep" in result.output and "--force" in result.output
    assert (store / "manifest.json").read_text() == before  # untouched
    result = runner.invoke(app, ["sweep", str(second), "--out", str(store), "-q", "--force"])
    assert result.exit_code == 0
    ids = {c.id for c in load_sweep(second).cells}
    assert set(load_results(store)["cell_id"]) == ids
    assert {p.stem for p in (store / "cells").iterdir()} == ids


def test_a_store_in_use_by_another_sweep_is_refused(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    holder = SweepStore.open(tmp_path / "store", sweep)
    try:
        with pytest.raises(ConfigError, match="another `recourse-sim sweep` is running"):
            run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell)
    finally:
        holder.close()
    assert run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell).ok


def test_corrupt_manifest_is_refused(tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL))
    run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell)
    (tmp_path / "store" / "manifest.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="corrupt"):
        run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell)
    assert run_sweep(sweep, tmp_path / "store", cell_fn=fake_cell, force=True).ok


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "workers: got 0; allowed: an integer >= 1"),
    (["--ray-address", "auto"], "ray address: got 'auto'; allowed: only with executor 'ray'"),
])
def test_bad_executor_options(tmp_path, args, message):
    result = runner.invoke(app, ["sweep", str(write(tmp_path, SMALL)), "--out", str(tmp_path / "out"), "-q", *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_ray_executor_without_ray_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(executors_module, "ray_available", lambda: False)
    result = runner.invoke(app, ["sweep", str(write(tmp_path, SMALL)), "--out", str(tmp_path / "out"), "-q",
                                 "--executor", "ray"])
    assert result.exit_code == 2 and "pip install 'recourse_sim[ray]'" in result.output


# ------------------------------------------------------------------------------------------------ Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'recourse_sim[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    # Ray workers cannot import this test module: ship its cell functions by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_gives_the_same_store_as_serial_and_retries_a_killed_worker(ray_cluster, sweep_file, reference, tmp_path):
    cell_fn = functools.partial(die_in_cell, str(tmp_path), False)
    result = run_sweep(load_sweep(sweep_file), tmp_path / "store", executor="ray", cell_fn=cell_fn)
    assert result.ok, result.failed
    assert (tmp_path / "attempts").read_text() == "xx"  # killed once, retried once, then finished
    assert_same_store(tmp_path / "store", reference)


@pytest.mark.ray
def test_ray_worker_killed_twice_is_reported_and_the_other_cells_finish(ray_cluster, tmp_path):
    sweep = load_sweep(write(tmp_path, SMALL.replace("rounds = 2", "rounds = 1")))
    cell_fn = functools.partial(die_in_cell, str(tmp_path), True)
    result = run_sweep(sweep, tmp_path / "store", executor="ray", cell_fn=cell_fn)
    killed = next(c for c in sweep.cells if c.axes["recourse_share"] == 0.2 and c.seed == 43)
    assert list(result.failed) == [killed.id] and "also on its retry" in result.failed[killed.id]
    assert (tmp_path / "attempts").read_text() == "xx" and result.done == 3
    entry = next(e for e in read_manifest(tmp_path / "store")["cells"] if e["id"] == killed.id)
    assert entry["status"] == "failed" and entry["attempts"] == 2


def raise_long_error_on_share_02_seed_43(config: dict) -> pd.DataFrame:
    if config["recourse_share"] == 0.2 and config["seed"] == 43:
        raise RuntimeError("x" * 6000)
    return fake_cell(config)


def test_long_error_detail_is_truncated_to_its_last_4000_characters(tmp_path):
    """A failed cell's traceback is kept in the manifest, cut to its last 4,000 characters behind a "...\\n"
    marker (mutation check survivor M33: the concatenation was never exercised). Margin: exact length."""
    sweep = load_sweep(write(tmp_path, SMALL))
    result = run_sweep(sweep, tmp_path / "store", cell_fn=raise_long_error_on_share_02_seed_43)
    assert not result.ok
    failed = [e for e in read_manifest(tmp_path / "store")["cells"] if e["status"] == "failed"]
    assert len(failed) == 1
    detail = failed[0]["detail"]
    assert detail.startswith("...\nxxx") and len(detail) == 4 + 4000 and detail.rstrip().endswith("x")
