"""Lent cores (recourse_sim.cores): the compiled loops give the same bits on any number of threads, the work is
split into whole, disjoint ranges, a simulation keeps its caller's cores for them, and the process executor lends
an idle worker's core to the cell still running."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest
import torch

import recourse_sim.generators.engine as engine
import recourse_sim.models.network as network
from recourse_sim.cores import CoreShare, compiled_threads, small_tensor_threads, split_over_threads, usable_cores
from recourse_sim.device import flush_denormals, torch_threads
from recourse_sim.experiments.executors import CellTask, ProcessExecutor, SerialExecutor
from recourse_sim.experiments.runner import run_scenario
from recourse_sim.experiments.scenario import Scenario
from recourse_sim.models.network import StackedMLP
from recourse_sim.models.vae import VAE


@pytest.mark.parametrize("pieces, threads", [(10, 2), (7, 3), (2, 4), (1, 2), (5, 1)])
def test_split_over_threads_runs_every_piece_once_in_contiguous_ranges(pieces, threads):
    ranges, names = [], set()
    lock = threading.Lock()

    def run(first: int, end: int) -> None:
        with lock:
            ranges.append((first, end))
            names.add(threading.current_thread().name)

    split_over_threads(pieces, run, threads=threads)
    covered = sorted(p for first, end in ranges for p in range(first, end))
    assert covered == list(range(pieces))
    assert all(end > first for first, end in ranges)  # no empty range: never more threads than pieces
    assert len(ranges) == min(pieces, threads)
    assert "MainThread" in names and len(names) <= len(ranges)  # the first range on the calling thread
    assert max(end - first for first, end in ranges) - min(end - first for first, end in ranges) <= 1  # even


def test_split_over_threads_raises_a_helper_threads_error_after_all_stopped():
    finished = []

    def run(first: int, end: int) -> None:
        if first > 0:
            raise ValueError(f"piece {first}")
        time.sleep(0.05)
        finished.append(first)

    with pytest.raises(ValueError, match="piece 2"):
        split_over_threads(4, run, threads=2)
    assert finished == [0]  # the calling thread's range ran to its end


def _train(threads: int, members: int, hidden: tuple[int, ...], dropout: float, batch_size: int) -> torch.Tensor:
    data = torch.Generator().manual_seed(0)
    X = torch.randn(6, 300, 5, generator=data)
    y = (X[..., 0] + 0.3 * torch.randn(6, 300, generator=data) > 0).float()
    net = StackedMLP(6, members, 5, hidden, dropout, rng=torch.Generator().manual_seed(1))
    with torch_threads(threads):  # outside a worker process, the compiled loops use torch's thread count
        assert compiled_threads() == threads
        net.train(X, y, epochs=3, batch_size=batch_size, shuffle=True, rng=torch.Generator().manual_seed(2))
    return net.flat.clone()


@pytest.mark.parametrize("members, hidden, dropout, batch_size", [
    (3, (16, 16), 0.1, 64),  # mini-batches through BLAS, dropout streams per (system, member) pair
    (1, (8,), 0.0, 1),  # the synthetic protocol's batch size 1, in the loops
    (1, (), 0.0, 50),  # logistic regression
])
def test_compiled_training_gives_the_same_bits_on_one_or_several_threads(members, hidden, dropout, batch_size):
    one = _train(1, members, hidden, dropout, batch_size)
    assert torch.equal(_train(2, members, hidden, dropout, batch_size), one)
    assert torch.equal(_train(4, members, hidden, dropout, batch_size), one)  # more threads than cores: same
    assert not torch.equal(one, StackedMLP(6, members, 5, hidden, dropout, rng=torch.Generator().manual_seed(1)).flat)


def test_compiled_vae_training_gives_the_same_bits_on_one_or_several_threads():
    X = torch.randn(5, 200, 4, generator=torch.Generator().manual_seed(0))

    def trained(threads: int) -> dict[str, torch.Tensor]:
        vae = VAE(epochs=3, seed=7)
        with torch_threads(threads):
            vae.fit(X)
        return {name: value.clone() for name, value in vae.params_.items()}

    one = trained(1)
    for threads in (2, 3):
        assert all(torch.equal(value, one[name]) for name, value in trained(threads).items())


def test_small_tensor_threads_pins_torch_to_one_thread_and_keeps_the_callers_budget():
    with torch_threads(2):
        with small_tensor_threads():
            assert torch.get_num_threads() == 1
            assert compiled_threads() == 2
            with small_tensor_threads():  # nested: still the outermost caller's
                assert compiled_threads() == 2
        assert torch.get_num_threads() == 2
    with torch_threads(1), small_tensor_threads():
        assert compiled_threads() == 1


#: Every compiled loop of a round: mini-batch (BLAS) and batch-1 training with dropout, a 3-member ensemble, the
#: gradient, greedy and latent searches (more individuals than one task's lanes) and the VAE's training.
THREADED_CELL = {
    "name": "threads", "seed": 3, "rounds": 2, "recourse_share": 0.3, "repetitions": 2, "device": "cpu",
    "data": {"name": "overlapping", "n_samples": 600, "seed": 1},
    "models": [{"name": "mlp", "hidden_sizes": [16, 16], "dropout": 0.1, "epochs": 5, "batch_size": 50},
               {"name": "deep_ensemble", "hidden_sizes": [8], "n_members": 3, "epochs": 3, "batch_size": 1}],
    "generators": ["generic", "greedy", "revise", "none"],
    "metrics": {"evaluate_every": 2, "permutations": 20},
    "vae": {"epochs": 3},
}


def test_a_simulation_gives_its_callers_cores_to_the_compiled_loops_with_the_same_results(monkeypatch):
    """Inside a round torch runs on one thread, yet the search and the training get the caller's threads (a
    ``recourse-sim run`` uses every core), and the whole results table is the same bits on one or two."""
    seen: dict[str, set[int]] = {}
    for owner, name in ((engine, "compiled_threads"), (network, "split_over_threads")):
        def spy(*args, _original=getattr(owner, name), _name=name, **kwargs):
            seen.setdefault(_name, set()).add(compiled_threads())  # the budget where the loop asks for it
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, spy)
    results = {}
    for threads in (1, 2):
        seen.clear()
        with torch_threads(threads):  # as `recourse-sim run` calls it
            results[threads] = run_scenario(Scenario.from_dict(THREADED_CELL)).results
        assert seen == {"compiled_threads": {threads}, "split_over_threads": {threads}}
    pd.testing.assert_frame_equal(results[2], results[1], check_exact=True)
    assert (results[1]["metric"] == "domain_mmd").any() and len(results[1]) > 100


def test_a_serial_sweep_gives_its_cells_the_callers_cores():
    with torch_threads(2), SerialExecutor() as executor:
        outcomes = list(executor.run([CellTask("cell", {"long": False, "want": 1})], report_threads))
    assert int(outcomes[0].frame["threads"].iloc[0]) == 2


@pytest.mark.parametrize("cores, workers, running, waiting, share", [
    (2, 2, 2, 3, 1), (2, 2, 2, 0, 1), (2, 2, 1, 0, 2), (2, 2, 1, 4, 1), (4, 4, 3, 0, 1), (4, 4, 2, 0, 2),
    (8, 8, 3, 0, 2), (2, 2, 0, 0, 2),
    (8, 2, 2, 5, 4), (8, 2, 1, 0, 8), (8, 3, 3, 1, 2), (2, 4, 4, 2, 1), (1, 2, 1, 0, 1),  # more or fewer cores
])
def test_core_share_splits_the_cores_among_workers_and_lends_idle_ones_once_nothing_waits(cores, workers, running,
                                                                                       waiting, share):
    import multiprocessing

    lender = CoreShare(multiprocessing.get_context("spawn"), cores=cores)
    assert lender.update(workers, running, waiting) == share
    assert lender.shared_count.value == share


def report_threads(config: dict) -> pd.DataFrame:
    """A cell that reports its thread budget; the long one waits (at most 60 s) for it to reach ``want``."""
    deadline = time.monotonic() + (60.0 if config["long"] else 0.0)
    while compiled_threads() < config["want"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return pd.DataFrame({"threads": [compiled_threads()]})


def test_the_process_executor_lends_an_idle_workers_core_to_the_cell_still_running():
    want = min(2, usable_cores())
    tasks = [CellTask("long", {"long": True, "want": want}), CellTask("short", {"long": False, "want": 1})]
    with torch_threads(2), ProcessExecutor(2) as executor:  # the caller's budget: 2 threads
        outcomes = {outcome.id: outcome for outcome in executor.run(tasks, report_threads)}
    assert all(outcome.ok for outcome in outcomes.values())
    # the long cell ends with both cores once the short one has ended (and never more than the machine has)
    assert int(outcomes["long"].frame["threads"].iloc[0]) == want


def test_the_process_executor_gives_each_cell_its_part_of_more_cores_than_workers():
    """4 threads for 2 workers: at least 2 per cell from the start, while a third cell waits (1 before: only lent
    cores went beyond one), at most 4 (a cell alone), never more than the machine has."""
    tasks = [CellTask(name, {"long": False, "want": 1}) for name in ("a", "b", "c")]
    with torch_threads(4), ProcessExecutor(2) as executor:
        outcomes = list(executor.run(tasks, report_threads))
    assert all(outcome.ok for outcome in outcomes)
    threads = [int(outcome.frame["threads"].iloc[0]) for outcome in outcomes]
    assert all(min(2, usable_cores()) <= count <= min(4, usable_cores()) for count in threads), threads
