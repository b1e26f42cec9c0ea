"""Classifier (re)training speed: the stepwise torch loop vs. the compiled loop (``StackedMLP.train`` backends).

What is measured (issue 12, "a retraining benchmark: steps per second for LR / MLP / ensemble stacks at S = 1,
35, 105, today vs now"):

- the SaTML retraining round: n = 800 rows (2 features, seeded Gaussian data) x 10 epochs at batch size 1 =
  8,000 Adam steps of every system in the stack, default Adam (lr 1e-3), no shuffle;
- models: LR (``hidden=()``), MLP (``(32,)``), deep ensemble (5 members x ``(32,)``), stacked over S = 1, 35,
  105 systems;
- **old**: ``backend="torch"``, one Python-dispatched step of the whole stack per row (the only path before);
  it is timed on ``--old-rows`` rows x 1 epoch and extrapolated to the 8,000-step round (its cost per step is
  constant); **new**: ``backend="compiled"``, one numba call for the whole round, timed on the full round;
- initial training at n = 100,000 rows, 100 epochs (10 million steps), LR and MLP, S = 1: new timed in full;
  old timed on ``--old-initial-rows`` rows of one epoch and extrapolated to 100 epochs (it would take tens of
  minutes);
- the real-data retraining round (scenarios/satml/credit_default.toml): the shipped UCI credit default data
  (balanced 5,000-row sample, seed 0: its first 4,000 rows, d = 29) x 10 epochs at batch size 500, MLP and
  5-member ensemble of (64, 64) with dropout 0.1, S = 40 (one model's systems in that cell: 8 generators x 5
  repetitions); old timed on one epoch and extrapolated to 10;
- both run with one torch intra-op thread, as the simulation does (``device.torch_threads(1)``), inside
  ``StackedMLP.train`` (so with denormals flushed); times are wall seconds (``time.perf_counter``), the best of
  ``--repeats``; every configuration is warmed up first. The first compiled call of the process (numba import +
  loading the cached machine code, or compiling it in a fresh environment) is reported separately.

"steps/s" counts optimiser steps of the whole stack (one step = one mini-batch for all S x M members);
"member-steps/s" multiplies by S x M.

Usage::

    python benchmarks/retraining.py                  # full table (~2-4 min on 2 busy cores)
    python benchmarks/retraining.py --systems 1 35 --no-initial
    python benchmarks/retraining.py --systems --no-initial       # the real-data round only

Writes ``benchmarks/results/retraining_cpu.md`` and ``.csv`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; find machine.py when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import describe, uptime  # noqa: E402
from tables import write_report  # noqa: E402

from recourse_sim.data.real import credit_default  # noqa: E402
from recourse_sim.device import torch_threads  # noqa: E402
from recourse_sim.models.network import StackedMLP  # noqa: E402

MODELS = {"LR": ((), 1), "MLP": ((32,), 1), "ensemble": ((32,), 5)}
N_FEATURES = 2
# the real-data protocol: (64, 64) with dropout 0.1, retrained at batch size 500 (scenarios/satml/*.toml)
REAL_MODELS = {"MLP": ((64, 64), 1), "ensemble": ((64, 64), 5)}
REAL_ROWS, REAL_BATCH, REAL_DROPOUT = 4_000, 500, 0.1


def _data(S: int, n: int, seed: int = 0, d: int = N_FEATURES) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(S, n, d, generator=g)
    y = ((X[..., 0] - X[..., 1] + 0.5 * torch.randn(S, n, generator=g)) > 0).float()
    return X, y


def _real_data(S: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``REAL_ROWS`` rows of the shipped credit default data (balanced sample, seed 0), for S systems."""
    data = credit_default(REAL_ROWS + 1_000, np.random.default_rng(0))
    X, y = data.X[:REAL_ROWS].float(), data.y[:REAL_ROWS].float()
    return X.expand(S, -1, -1).contiguous(), y.expand(S, -1).contiguous()


def _time(net: StackedMLP, X: torch.Tensor, y: torch.Tensor, epochs: int, backend: str, repeats: int,
          batch_size: int = 1) -> float:
    """Best wall seconds of ``repeats`` training calls, each from the same initial weights."""
    best = float("inf")
    for _ in range(repeats):
        trained = net.clone()
        start = time.perf_counter()
        trained.train(X, y, epochs, batch_size=batch_size, backend=backend, rng=torch.Generator().manual_seed(3))
        best = min(best, time.perf_counter() - start)
    return best


FIRST_CALL = '''
import time, torch
from recourse_sim.models.network import StackedMLP
net = StackedMLP(1, 1, 2, (), rng=torch.Generator().manual_seed(0))
start = time.perf_counter()
net.train(torch.zeros(1, 4, 2), torch.zeros(1, 4), 1, backend="compiled")
print(time.perf_counter() - start)
'''


def _first_call_seconds(cache_dir: str | None) -> float:
    """The first compiled training call of a fresh process: numba import plus loading the cached machine code,
    or, with an empty ``cache_dir`` (``NUMBA_CACHE_DIR``), compiling it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    done = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True, check=True, env=env)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", type=int, nargs="*", default=[1, 35, 105],
                        help="S for the batch-1 rounds (none: skip them)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--old-rows", type=int, default=200, help="rows (1 epoch) timed for the old path")
    parser.add_argument("--initial-rows", type=int, default=100_000)
    parser.add_argument("--initial-epochs", type=int, default=100)
    parser.add_argument("--old-initial-rows", type=int, default=2_000)
    parser.add_argument("--no-initial", action="store_true")
    parser.add_argument("--real-systems", type=int, nargs="*", default=[40],
                        help="S for the real-data round (none: skip it)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retraining_cpu.md")
    args = parser.parse_args()

    load_before = uptime()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as empty:
        first_call = {"compile": _first_call_seconds(empty), "cached": _first_call_seconds(None)}
    with torch_threads(1):

        steps = args.rows * args.epochs
        for name in args.models:
            hidden, members = MODELS[name]
            for S in args.systems:
                X, y = _data(S, args.rows)
                net = StackedMLP(S, members, N_FEATURES, hidden, rng=torch.Generator().manual_seed(1))
                net.clone().train(X[:, :20], y[:, :20], 1, backend="torch")  # warm-up
                net.clone().train(X[:, :20], y[:, :20], 1, backend="compiled")
                old = _time(net, X[:, : args.old_rows], y[:, : args.old_rows], 1, "torch", args.repeats)
                old_round = old / args.old_rows * steps
                new_round = _time(net, X, y, args.epochs, "compiled", args.repeats)
                rows.append(dict(
                    work=f"retrain {args.rows} x {args.epochs} ep", model=name, S=S, members=members,
                    steps=steps, old_s=old_round, new_s=new_round, old_steps_per_s=steps / old_round,
                    new_steps_per_s=steps / new_round, new_member_steps_per_s=steps * S * members / new_round,
                    speedup=old_round / new_round, old_note=f"extrapolated from {args.old_rows} steps",
                ))
                print(_row_md(rows[-1]), flush=True)
        if not args.no_initial:
            n, epochs = args.initial_rows, args.initial_epochs
            for name in ("LR", "MLP"):
                hidden, members = MODELS[name]
                X, y = _data(1, n, seed=2)
                net = StackedMLP(1, members, N_FEATURES, hidden, rng=torch.Generator().manual_seed(1))
                old = _time(net, X[:, : args.old_initial_rows], y[:, : args.old_initial_rows], 1, "torch", 1)
                old_total = old / args.old_initial_rows * n * epochs
                new_total = _time(net, X, y, epochs, "compiled", 1)
                total_steps = n * epochs
                rows.append(dict(
                    work=f"initial {n:,} x {epochs} ep", model=name, S=1, members=members, steps=total_steps,
                    old_s=old_total, new_s=new_total, old_steps_per_s=total_steps / old_total,
                    new_steps_per_s=total_steps / new_total, new_member_steps_per_s=total_steps / new_total,
                    speedup=old_total / new_total, old_note=f"extrapolated from {args.old_initial_rows} steps",
                ))
                print(_row_md(rows[-1]), flush=True)
        for name, (hidden, members) in REAL_MODELS.items():
            for S in args.real_systems:
                X, y = _real_data(S)
                net = StackedMLP(S, members, X.shape[-1], hidden, dropout=REAL_DROPOUT,
                                 rng=torch.Generator().manual_seed(1))
                for backend in ("torch", "compiled"):  # warm-up
                    net.clone().train(X[:, :20], y[:, :20], 1, batch_size=REAL_BATCH, backend=backend)
                old_round = _time(net, X, y, 1, "torch", 1, REAL_BATCH) * args.epochs
                new_round = _time(net, X, y, args.epochs, "compiled", args.repeats, REAL_BATCH)
                steps = -(-REAL_ROWS // REAL_BATCH) * args.epochs
                rows.append(dict(
                    work=f"real retrain {REAL_ROWS} x {args.epochs} ep, batch {REAL_BATCH}", model=f"{name} 64-64",
                    S=S, members=members, steps=steps, old_s=old_round, new_s=new_round,
                    old_steps_per_s=steps / old_round, new_steps_per_s=steps / new_round,
                    new_member_steps_per_s=steps * S * members / new_round, speedup=old_round / new_round,
                    old_note="extrapolated from 1 epoch",
                ))
                print(_row_md(rows[-1]), flush=True)
    load_after = uptime()
    _write(args, rows, first_call, load_before, load_after)


HEADER = ("| work | model | S | S x M | old s | new s | old steps/s | new steps/s | new member-steps/s | speed-up |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def _row_md(r: dict) -> str:
    return (f"| {r['work']} | {r['model']} | {r['S']} | {r['S'] * r['members']} | {r['old_s']:.3g} | "
            f"{r['new_s']:.3g} | {r['old_steps_per_s']:,.0f} | {r['new_steps_per_s']:,.0f} | "
            f"{r['new_member_steps_per_s']:,.0f} | {r['speedup']:.{0 if r['speedup'] >= 10 else 1}f}x |")


def _write(args: argparse.Namespace, rows: list[dict], first_call: dict, load_before: str, load_after: str) -> None:
    import numba

    table = "\n".join([HEADER, *(_row_md(r) for r in rows)])
    md = f"""# Retraining speed: stepwise torch loop (old) vs. one compiled call (new), CPU

Generated by `python benchmarks/retraining.py` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.
Machine: {describe(threads=1)}; numba {numba.__version__}. The simulation, too, uses one
intra-op thread.

Machine load (`uptime`), before: `{load_before}`; after: `{load_after}`. The machine was shared with other
work while this ran, so absolute times are pessimistic; old and new ran interleaved under the same load.

Batch size 1, default Adam (lr 1e-3), no shuffle, d = {N_FEATURES} features; ensemble = 5 members x (32,).
The "real retrain" rows are the real-data protocol instead: the shipped credit default data ({REAL_ROWS:,} rows,
d = 29), hidden (64, 64), dropout {REAL_DROPOUT}, batch size {REAL_BATCH} ({-(-REAL_ROWS // REAL_BATCH)} steps per
epoch; new multiplies these mini-batches through BLAS, on one thread); there a member-step is one mini-batch of one
member, and old is timed on one epoch.
A step is one optimiser step of the whole stack; member-steps count S x M members. **Old** (`backend="torch"`):
timed on {args.old_rows} steps (retraining) / {args.old_initial_rows} steps (initial training) and
extrapolated linearly to the full work (its cost per step is constant). **New** (`backend="compiled"`): the full
work in one call, best of {args.repeats} (initial training: 1 run).

{table}

First compiled call of a fresh process (measured in a subprocess): {first_call['cached']:.2f} s with numba's
cache in place (numba import + loading the cached machine code; every later call pays nothing), and
{first_call['compile']:.1f} s in a fresh environment (empty `NUMBA_CACHE_DIR`: numba import + JIT compilation,
once per installation). Both include nothing of the training itself beyond one 4-step call.
"""
    write_report(args.out, md, rows)
    print()
    print(md)


if __name__ == "__main__":
    main()
