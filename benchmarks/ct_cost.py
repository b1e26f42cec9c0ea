"""The cost of a Counterfactual Training round relative to conventional retraining (issue 13), CPU.

What is measured: one retraining round of the simulation, ``refit`` = 10 warm-started epochs, on the default
scenario's data (``overlapping``, 1,000 samples, 800 training rows, d = 2, seed 42) with the package's ``mlp``
(``Linear(2, 32)-ReLU-Linear(32, 1)``, Adam 1e-3), for a stack of S = 1 system and S = 5 (the default scenario's
stack: 1 model x 5 generators), at the reference protocol's batch size 1 and at the CT paper's synthetic-data batch
size 30. Every variant starts from the same conventionally trained weights (100 epochs) and is timed as the best
of ``--repeats`` runs (wall seconds, one torch intra-op thread as in the simulation):

- **conventional**: ``MLPClassifier.refit``, the package's compiled training loop (the CPU default);
- **conventional, torch loop**: the same training through ``StackedMLP.train(backend="torch")``, the stepwise loop
  of torch ops (the GPU path), for a like-for-like comparison of per-step costs;
- **CT, baseline objective**: :class:`~recourse_sim.training.CounterfactualTraining` with ``objective="baseline"``:
  CT's autograd training loop without any counterfactual search;
- **CT, full objective**: the default CT round: one batched ECCo search per epoch (n_CE = min(1000, n) factuals
  per system) plus the CT objective at every step; the search's share is timed separately as 10 calls of the
  epoch's tuple generation on the trained model.

Usage::

    python benchmarks/ct_cost.py                # ~2-4 min on 2 busy cores
    python benchmarks/ct_cost.py --systems 1 --repeats 1

Writes ``benchmarks/results/ct_cost_cpu.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; find machine.py when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import describe, uptime  # noqa: E402

from recourse_sim.data import DATASETS
from recourse_sim.device import torch_threads
from recourse_sim.generators import make_context
from recourse_sim.models import MLPClassifier
from recourse_sim.models.network import AdamSettings
from recourse_sim.training import CounterfactualTraining
from recourse_sim.training.counterfactuals import ecco_spec, sample_tuples
from recourse_sim.training.parameters import trainable


def _data(seed: int = 42):
    """The default scenario's training data: overlapping, 1,000 samples, 20 % held out."""
    rng = np.random.default_rng(seed)
    return DATASETS["overlapping"](1000, rng).stratified_split(0.2, rng)[0]


def _best(run, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _ct(conventional: MLPClassifier, objective: str, batch_size: int, context, X, y) -> CounterfactualTraining:
    """A CT wrapper holding the conventionally trained weights (a 1-epoch fit, then the weights copied in)."""
    model = MLPClassifier(epochs=1, batch_size=batch_size, retrain_batch_size=batch_size)
    ct = CounterfactualTraining(model, objective=objective, seed=0, device="cpu").use_search_context(context)
    ct.fit(X, y)
    ct.model_.network_.flat.copy_(conventional.network_.flat)
    return ct


def _measure(S: int, batch_size: int, repeats: int, train, context) -> list[dict]:
    X, y = train.X.expand(S, -1, -1).contiguous(), train.y.expand(S, -1).contiguous()
    start = MLPClassifier(batch_size=batch_size, retrain_batch_size=batch_size, seed=0, device="cpu").fit(X, y)
    epochs = start.retrain_epochs

    def fresh():
        return start.select_systems(torch.arange(S))

    rows = []
    conventional = _best(lambda: fresh().refit(X, y), repeats)
    network = start.network_
    loop = _best(lambda: network.clone().train(X, y, epochs, batch_size, AdamSettings(), backend="torch"), repeats)
    baseline = _ct(start, "baseline", batch_size, context, X, y)
    ct_baseline = _best(lambda: baseline.select_systems(torch.arange(S)).refit(X, y), repeats)
    full = _ct(start, "full", batch_size, context, X, y)
    last = {}

    def full_round():
        fitted = full.select_systems(torch.arange(S)).refit(X, y)
        last.update(fitted.last_training_)

    ct_full = _best(full_round, repeats)
    spec = ecco_spec(full.search_threshold, full.search_steps, full.search_step_size, full.lambda_cost,
                     full.lambda_energy)
    view, n_ce = trainable(full.model_), min(full.n_counterfactuals, X.shape[1])
    search = _best(lambda: [sample_tuples(view, X, y, n_ce, spec, context, full.epsilon, full.rng_)
                            for _ in range(epochs)], repeats)
    steps = epochs * -(-X.shape[1] // batch_size)
    converged = float(np.mean(last["converged_share"]))
    for variant, seconds, note in (
        ("conventional (compiled, the CPU default)", conventional, ""),
        ("conventional, torch loop", loop, ""),
        ("CT, baseline objective (no search)", ct_baseline, ""),
        ("CT, full objective", ct_full, (f"search {search:.2f} s ({search / ct_full:.0%}); "
                                         f"{n_ce} CFs/epoch/system, {converged:.0%} mature")),
    ):
        rows.append({"variant": variant, "S": S, "batch": batch_size, "steps": steps, "seconds": seconds,
                     "vs_conventional": seconds / conventional, "vs_loop": seconds / loop, "note": note})
        print(_row_md(rows[-1]), flush=True)
    return rows


HEADER = ("| variant | S | batch | Adam steps | s per round | x conventional | x torch loop | notes |\n"
          "|---|---:|---:|---:|---:|---:|---:|---|")


def _row_md(r: dict) -> str:
    return (f"| {r['variant']} | {r['S']} | {r['batch']} | {r['steps']:,} | {r['seconds']:.3g} | "
            f"{r['vs_conventional']:,.0f}x | {r['vs_loop']:.2g}x | {r['note']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 30])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ct_cost_cpu.md")
    args = parser.parse_args()
    load_before = uptime()
    train = _data()
    context = make_context(train)
    rows = []
    print(HEADER)
    with torch_threads(1):
        for batch_size in args.batch_sizes:
            for S in args.systems:
                rows += _measure(S, batch_size, args.repeats, train, context)
    table = "\n".join([HEADER, *(_row_md(r) for r in rows)])
    md = f"""# Counterfactual Training: cost of a retraining round vs conventional retraining, CPU

Generated by `python benchmarks/ct_cost.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.
Machine: {describe(threads=1)}. The simulation, too, uses one intra-op thread.
Machine load (`uptime`), before: `{load_before}`; after: `{uptime()}`. The machine was shared with other work
while this ran, so absolute times are pessimistic; all variants ran under the same load.

One round = `refit`, 10 warm-started epochs over the default scenario's 800 training rows (overlapping, d = 2),
the package's `mlp` (2-32-1 ReLU, Adam 1e-3); S systems stacked (S = 5: the default scenario's stack); best of
{args.repeats} runs from the same trained weights. CT uses its defaults (lambda = 1, 0.5, 0.25, 0.1; ECCo with tau =
0.5, T = 30, step 0.25; n_CE = min(1000, n) = 800 per epoch and system; epsilon = 0.3). "x torch loop" compares
with the package's stepwise torch training loop (its GPU path), the like-for-like per-step reference; the CPU
default trains in one compiled call, which CT's autograd objective cannot use.

{table}

An initial CT fit is 100 epochs from fresh weights, about 10 rounds of the cost above.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    print()
    print(md)


if __name__ == "__main__":
    main()
