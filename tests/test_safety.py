"""Never lose a user's files or finished work (issue 16): safe output paths, clean interrupts, and bad input
refused before anything runs, with one line naming the field, the value and what is allowed.

Every case here failed before the fix; docs/bad_inputs.md lists each bad input with its message.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from recourse_sim.cli import app
from recourse_sim.errors import ConfigError, DataError, RecourseSimError
from recourse_sim.experiments import Scenario, read_manifest
from recourse_sim.experiments.store import signals_held

runner = CliRunner()

TINY = """
name = "tiny"
rounds = 2
device = "cpu"
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
"""
DATA = '[data]\nname = "overlapping"\nn_samples = 100'
CSV_DATA = '[data]\nname = "csv"\npath = "{path}"\ntarget = "y"'
GENERIC = '[[generators]]\nname = "generic"'


def write(directory: Path, text: str, name: str = "scenario.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def run_cli(tmp_path: Path, text: str, *args: str):
    return runner.invoke(app, ["run", str(write(tmp_path, text)), "-q", *args])


def assert_refused(result, *messages: str) -> None:
    """Exit 2, one line starting with ``error:`` that holds every message, no traceback."""
    assert result.exit_code == 2, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for message in messages:
        assert message in lines[0], f"{message!r} not in {lines[0]!r}"
    assert "Traceback" not in result.output


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------- data loss
def test_run_refuses_a_directory_holding_a_users_file_and_force_keeps_it(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("three years of work")
    assert_refused(run_cli(tmp_path, TINY, "--out", str(out)), "out: got", "thesis.tex", "--force")
    assert snapshot(out) == {"thesis.tex": b"three years of work"}

    result = run_cli(tmp_path, TINY, "--out", str(out), "--force")
    assert result.exit_code == 0, result.output
    assert (out / "thesis.tex").read_text() == "three years of work" and (out / "run.json").exists()
    # A second forced run replaces our files and still keeps the user's.
    assert run_cli(tmp_path, TINY, "--out", str(out), "--force").exit_code == 0
    assert (out / "thesis.tex").read_text() == "three years of work"


def test_run_replaces_a_previous_run_but_not_one_a_user_added_files_to(tmp_path):
    out = tmp_path / "out"
    assert run_cli(tmp_path, TINY, "--out", str(out)).exit_code == 0
    assert run_cli(tmp_path, TINY, "--out", str(out)).exit_code == 0  # our own run.json: replaced
    (out / "notes.md").write_text("my notes")
    assert_refused(run_cli(tmp_path, TINY, "--out", str(out)), "notes.md")
    assert (out / "notes.md").read_text() == "my notes"


def test_a_previous_run_with_a_control_is_replaced(tmp_path):
    """A run with the no-recourse control also writes effects.csv; a rerun must recognise it as its own."""
    with_control = TINY.replace('[[generators]]\nname = "generic"', '[[generators]]\nname = "generic"\n'
                                '[[generators]]\nname = "none"')
    assert 'name = "none"' in with_control
    out = tmp_path / "out"
    assert run_cli(tmp_path, with_control, "--out", str(out)).exit_code == 0
    assert (out / "effects.csv").exists()
    assert run_cli(tmp_path, with_control, "--out", str(out)).exit_code == 0


def test_an_empty_directory_is_used(tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_cli(tmp_path, TINY, "--out", str(tmp_path / "empty")).exit_code == 0
    assert (tmp_path / "empty" / "results.parquet").exists()


@pytest.mark.parametrize("name", ["", "/tmp/elsewhere", "../escape", "a/b", "..", ".hidden", "x" * 101])
def test_scenario_name_must_be_a_slug(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "older").mkdir()
    (runs / "older" / "results.csv").write_text("precious")
    before = snapshot(tmp_path)
    result = run_cli(tmp_path, TINY.replace('name = "tiny"', f"name = {name!r}".replace("'", '"')))
    assert_refused(result, "name: got", "slug")
    assert snapshot(tmp_path) == before | {"scenario.toml": (tmp_path / "scenario.toml").read_bytes()}
    with pytest.raises(ConfigError, match="slug"):
        Scenario(name=name, models=["mlp"], generators=["generic"])


@pytest.mark.parametrize("out", [".", "../{cwd}", "..", "/"])
def test_out_that_is_or_contains_the_current_directory_is_refused_before_running(tmp_path, monkeypatch, out):
    work = tmp_path / "proj"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "code.py").write_text("print('mine')")
    write(work, TINY)
    start = time.perf_counter()
    result = runner.invoke(app, ["run", "scenario.toml", "-q", "--out", out.format(cwd="proj")])
    assert_refused(result, "out: got", "current directory")
    assert time.perf_counter() - start < 5  # refused before the simulation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # nothing moved to a hidden .proj.*.old
    assert (work / "code.py").read_text() == "print('mine')"


def test_step_size_inf_is_refused_before_running(tmp_path):
    result = run_cli(tmp_path, TINY.replace(GENERIC, GENERIC + "\nstep_size = inf"), "--out", str(tmp_path / "out"))
    assert_refused(result, "generator[generic].step_size: got inf", "a finite number")
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_scenario_that_cannot_be_written_back_is_refused_before_running():
    from recourse_sim.experiments.runner import check_writable_scenario

    scenario = Scenario(models=["mlp"], generators=["generic"])
    object.__setattr__(scenario, "rounds", float("nan"))  # what validation would refuse, forced past it
    with pytest.raises(ConfigError, match="scenario.toml"):
        check_writable_scenario(scenario)


def test_a_failure_while_writing_keeps_the_finished_rounds_and_says_where(tmp_path, monkeypatch):
    import recourse_sim.experiments.runner as runner_module

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runner_module, "plot_trajectories", explode)
    out = tmp_path / "out"
    result = run_cli(tmp_path, TINY, "--out", str(out))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No space left on device" in result.output and "rounds 0-2" in result.output
    assert not out.exists()
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.") and p.name.endswith(".partial")]
    assert str(staging / "results.csv") in result.output
    kept = pd.read_csv(staging / "results.csv")
    assert sorted(kept["round"].unique()) == [0, 1, 2]
    assert Scenario.from_toml(staging / "scenario.toml") == Scenario.from_toml(tmp_path / "scenario.toml")


# ------------------------------------------------------------------------------------------- signals
# Long enough (tens of seconds even with compiled retraining) that the run is always still going when the
# signal is sent after round 2: a run that finishes first would exit 0 and make the test flaky.
LONG = TINY.replace("rounds = 2", "rounds = 20000")


def _partial_rounds(directory: Path) -> int:
    for path in directory.glob(".out.*.partial/results.csv"):
        try:
            return int(pd.read_csv(path)["round"].max())
        except (ValueError, KeyError, pd.errors.EmptyDataError):
            return -1
    return -1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_keeps_the_finished_rounds_and_says_where(tmp_path, signum):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "recourse_sim.cli", "run", str(write(tmp_path, LONG)), "--out", str(out), "-q"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _partial_rounds(tmp_path) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, stdout + stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("interrupted after "), stderr
    (partial,) = tmp_path.glob(".out.*.partial/results.csv")
    assert f"are kept in {partial}" in lines[0]
    kept = pd.read_csv(partial)
    done = int(kept["round"].max())
    assert done >= 2 and f"rounds 0-{done} ({len(kept)} rows)" in lines[0]
    assert not out.exists()


def test_signals_held_deliver_after_the_block():
    """A Ctrl-C during the incremental table's write arrives after the write and its counts (the interrupted run
    above once reported round 2 while its file already held round 3)."""
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # twice: delivered once
            finished.append(True)
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


SWEEP = TINY.replace("rounds = 2", "rounds = 12") + "n_seeds = 4\n[grid]\nrecourse_share = [0.05, 0.2]\n"
SWEEP = SWEEP.replace('device = "cpu"', 'device = "cpu"\nn_seeds = 4').replace("n_seeds = 4\n[grid]", "[grid]")


def _start_sweep(tmp_path: Path, store: Path) -> tuple[subprocess.Popen, list[int]]:
    command = [sys.executable, "-m", "recourse_sim.cli", "sweep", str(write(tmp_path, SWEEP, "sweep.toml")),
               "--out", str(store), "--workers", "2", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, workers = time.monotonic() + 180, []
    while process.poll() is None and time.monotonic() < deadline:
        workers = [pid for pid in _children(process.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        if len(workers) == 2 and (store / "manifest.json").exists() and _done(store) >= 1:
            break
        time.sleep(0.05)
    assert process.poll() is None and len(workers) == 2, "the sweep needs to be killed mid-run with 2 workers"
    return process, workers


def _done(store: Path) -> int:
    try:
        return sum(entry["status"] == "done" for entry in read_manifest(store)["cells"])
    except (RecourseSimError, OSError, KeyError, ValueError):
        return 0


def _wait_gone(pids: list[int], seconds: float = 15) -> list[int]:
    deadline = time.monotonic() + seconds
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_on_a_two_worker_sweep_stops_every_worker_and_the_store_resumes(tmp_path):
    store = tmp_path / "store"
    process, workers = _start_sweep(tmp_path, store)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert "interrupted:" in stderr and "rerun the same command to resume" in stderr
    assert "leaked semaphore" not in stderr and "Traceback" not in stderr, stderr
    assert _wait_gone(workers) == [], "a worker outlived its sweep"
    done = _done(store)
    assert 1 <= done < 8
    rerun = runner.invoke(app, ["sweep", str(tmp_path / "sweep.toml"), "--out", str(store), "-q"])
    assert rerun.exit_code == 0, rerun.output
    assert f"({done} already in the store, {8 - done} run now)" in rerun.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_on_a_sweep_takes_its_workers_with_it(tmp_path):
    process, workers = _start_sweep(tmp_path, tmp_path / "store")
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert _wait_gone(workers) == [], "a worker survived its parent's kill -9 (orphaned)"


# --------------------------------------------------------------------------------- refuse before running
BAD_CSV = {
    "yes_no": "a,b,y\n" + "".join(f"{i},{i % 7},{'yes' if i % 2 else 'no'}\n" for i in range(40)),
    "two_rows": "a,b,y\n1,2,0\n3,5,1\n",
    "header_only": "a,b,y\n",
    "duplicate": "a,a,y\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(40)),
}

#: input -> (scenario text, fragments of the one-line message). Each was a traceback, a misleading message
#: or silently accepted before; docs/bad_inputs.md lists them with their messages.
REFUSED = {
    "seed = -1": (TINY.replace("rounds = 2", "rounds = 2\nseed = -1"), ["seed: got -1", "greater than or equal to 0"]),
    "data.seed = -1": (TINY.replace(DATA, DATA + "\nseed = -1"), ["data.seed: got -1", "greater than or equal to 0"]),
    'threshold = "0.9"': (TINY.replace(GENERIC, GENERIC + '\nthreshold = "0.9"'),
                          ["generator[generic].threshold: got '0.9'", "write it without quotes"]),
    "gravitational n_neighbours = 0": (TINY.replace(GENERIC, GENERIC.replace("generic", "gravitational")
                                                    + "\nn_neighbours = 0"),
                                       ["generator[gravitational].n_neighbours: got 0", "an integer >= 1"]),
    "step_size = inf": (TINY.replace(GENERIC, GENERIC + "\nstep_size = inf"),
                        ["generator[generic].step_size: got inf", "a finite number"]),
    "step_size = nan": (TINY.replace(GENERIC, GENERIC + "\nstep_size = nan"),
                        ["generator[generic].step_size: got nan", "a finite number"]),
    "eccco coverage = 1.5": (TINY.replace(GENERIC, '[[generators]]\nname = "eccco"\ncoverage = 1.5'),
                             ["generator[eccco].coverage: got 1.5", "(0, 1)"]),
    "eccco temperature = 0": (TINY.replace(GENERIC, '[[generators]]\nname = "eccco"\ntemperature = 0'),
                              ["generator[eccco].temperature: got 0", "> 0"]),
    "rounds = 10**9": (TINY.replace("rounds = 2", "rounds = 1_000_000_000"), ["rounds: got 1000000000", "memory"]),
    "n_samples = 10**9": (TINY.replace("n_samples = 100", "n_samples = 1_000_000_000"),
                          ["data.n_samples: got 1000000000", "memory"]),
    "repetitions = 10**6": (TINY.replace("rounds = 2", "rounds = 2\nrepetitions = 1_000_000"),
                            ["repetitions: got 1000000", "memory"]),
    "test_share = 0.99": (TINY.replace(DATA, DATA + "\ntest_share = 0.99"),
                          ["data.test_share: got 0.99", "at least 4 training rows"]),
    "n_samples = 4": (TINY.replace("n_samples = 100", "n_samples = 4"), ["data.n_samples: got 4", "1 test row"]),
    'rounds = "2"': (TINY.replace("rounds = 2", 'rounds = "2"'), ["rounds: got '2'", "valid integer"]),
    "n_samples = 100.0": (TINY.replace("n_samples = 100", "n_samples = 100.0"), ["data.n_samples: got 100.0"]),
    "csv target yes/no": (TINY.replace(DATA, CSV_DATA.format(path="{yes_no}")), ["'y' must hold 0/1", "'yes'"]),
    "csv with 2 rows": (TINY.replace(DATA, CSV_DATA.format(path="{two_rows}")),
                        ["data.path: got '2 rows'", "1 / 1 per class"]),
    "csv header only": (TINY.replace(DATA, CSV_DATA.format(path="{header_only}")), ["no data rows"]),
    "csv duplicate columns": (TINY.replace(DATA, CSV_DATA.format(path="{duplicate}")),
                              ["duplicate column names ['a']"]),
}


def _materialise(tmp_path: Path, text: str) -> str:
    for name, content in BAD_CSV.items():
        (tmp_path / f"{name}.csv").write_text(content)
        text = text.replace("{" + name + "}", str(tmp_path / f"{name}.csv"))
    return text


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_input_is_refused_before_running_by_run_and_validate(tmp_path, case):
    text, messages = REFUSED[case]
    text = _materialise(tmp_path, text)
    out = tmp_path / "out"
    start = time.perf_counter()
    assert_refused(run_cli(tmp_path, text, "--out", str(out)), *messages)
    assert time.perf_counter() - start < 20  # nothing was simulated or allocated
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    assert_refused(runner.invoke(app, ["validate", str(tmp_path / "scenario.toml")]), *messages)


def test_validate_loads_csv_data(tmp_path):
    (tmp_path / "data.csv").write_text(BAD_CSV["two_rows"])
    write(tmp_path, TINY.replace(DATA, CSV_DATA.format(path=tmp_path / "data.csv")))
    assert_refused(runner.invoke(app, ["validate", str(tmp_path / "scenario.toml")]), "data.path")


def test_csv_path_resolves_relative_to_the_scenario_file(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": (X[:, 0] > 0).astype(int)}).to_csv(folder / "data.csv", index=False)
    write(folder, TINY.replace(DATA, CSV_DATA.format(path="data.csv")))
    monkeypatch.chdir(tmp_path)  # not the scenario's folder
    result = runner.invoke(app, ["validate", "study/scenario.toml"])
    assert result.exit_code == 0, result.output
    assert Scenario.from_toml(folder / "scenario.toml").data.path == str(folder / "data.csv")


def test_reproduce_refuses_an_unknown_experiment(tmp_path):
    result = runner.invoke(app, ["reproduce", "satml", "--only", "nosuch", "--out", str(tmp_path / "out"), "-q"])
    assert_refused(result, "--only: got 'nosuch'", "moons")
    assert not (tmp_path / "out").exists()


def test_sweep_refuses_a_cell_too_large_for_memory(tmp_path):
    text = TINY.replace("rounds = 2", "rounds = 2\nn_seeds = 1") + '[grid]\n"data.n_samples" = [100, 1_000_000_000]\n'
    result = runner.invoke(app, ["sweep", str(write(tmp_path, text, "sweep.toml")), "--out", str(tmp_path / "s"), "-q"])
    assert_refused(result, "data.n_samples", "memory")
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------ Python API
def test_scenario_constructor_raises_one_line_config_error():
    with pytest.raises(ConfigError) as info:
        Scenario(models=["mlp"], generators=["generic"], rounds="2")
    assert "rounds" in str(info.value) and "\n" not in str(info.value)


def test_nan_or_inf_factuals_are_refused(fitted_lr, overlapping):
    from recourse_sim import generate_counterfactuals

    for bad in (float("nan"), float("inf")):
        X = overlapping.X[:3].clone()
        X[1, 0] = bad
        with pytest.raises(DataError, match="row 1"):
            generate_counterfactuals(fitted_lr, X, "generic", overlapping)


def test_unfitted_model_is_a_package_error(overlapping):
    from recourse_sim import generate_counterfactuals
    from recourse_sim.models import MLPClassifier

    with pytest.raises(RecourseSimError, match="not fitted"):
        MLPClassifier().predict(overlapping.X)
    with pytest.raises(RecourseSimError, match="fit"):
        generate_counterfactuals(MLPClassifier(), overlapping.X[:2], "generic", overlapping)


def test_unknown_keyword_is_a_config_error(fitted_lr, overlapping):
    from recourse_sim import generate_counterfactuals
    from recourse_sim.models import LogisticRegression, MLPClassifier

    with pytest.raises(ConfigError, match="hidden_sizes"):
        MLPClassifier(hiden_sizes=(8,))
    with pytest.raises(ConfigError, match="epochs"):
        LogisticRegression(epoch=3)
    with pytest.raises(ConfigError, match="generator\\[generic\\]: got 'thresold'"):
        generate_counterfactuals(fitted_lr, overlapping.X[:2], "generic", overlapping, thresold=0.9)


def test_three_class_y_is_refused_by_fit(overlapping):
    from recourse_sim.models import LogisticRegression

    y = overlapping.y.clone()
    y[:10] = 2
    with pytest.raises(DataError, match="binary labels 0/1"):
        LogisticRegression(epochs=1, device="cpu").fit(overlapping.X, y)


def test_catalogue_checks_python_calls_like_scenarios():
    from recourse_sim.generators import GENERATORS

    with pytest.raises(ConfigError, match="threshold"):
        GENERATORS["generic"](threshold="0.9")
    with pytest.raises(ConfigError, match="max_steps"):
        GENERATORS["generic"](max_steps=10.5)
    assert GENERATORS["greedy"](step_size=None).step_size == 0.1  # optional values stay optional
    assert torch.isfinite(torch.tensor(GENERATORS["eccco"]().step_size))


@pytest.mark.parametrize("study", ["satml", "faithful"])
def test_reproduce_refuses_a_directory_holding_files_it_did_not_write(tmp_path, study):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("mine")  # a report's name, but no sweep store beside it: not a previous run
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(app, ["reproduce", study, "--quick", "--only", "moons", "--out", str(out), "-q"])
    assert_refused(result, "out", "notes.txt", "summary.csv")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "summary.csv"]
    assert (out / "notes.txt").read_text() == "mine"
