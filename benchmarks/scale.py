"""Scale: one round of the dynamics with a million individuals and 100 systems, on the available device.

What is measured (issue 12, item 5), each step timed on its own (wall seconds) with the process's peak memory:

1. data: the overlapping SaTML dataset with ``--n`` individuals (2 features, shuffled);
2. initial training: logistic regression on all rows, ``--epochs`` epochs at batch size 1 (the SaTML protocol:
   100 epochs; the compiled loop on CPU); also an MLP (32) at n = 100,000 for the issue's "initial training at
   n = 100k must not take minutes";
3. the population: one copy of the data per system, ``(S, n, d)`` (S = ``--systems``), the model fanned out to
   S systems (``select_systems``);
4. prediction of every individual by every system, and the paired choice of recipients (mu = 0.05 of the
   rows every system predicts negative);
5. the batched counterfactual search: S systems x B recipients x K copies, generic generator (gamma 0.5,
   Descent(0.01), T = 100), all systems in one engine call;
6. retraining: every system refitted on its (moved) copy, ``--retrain-epochs`` epochs at batch size 1 (SaTML:
   10);
7. one domain-shift MMD test per system (1,000 samples a side, 100 permutations).

Usage::

    python benchmarks/scale.py                                  # n = 1,000,000, S = 100 (minutes on 2 cores)
    python benchmarks/scale.py --n 100000 --systems 10          # a quick look

Writes ``benchmarks/results/scale_<device>.md`` and prints the table. What does not fit (memory) is reported,
not hidden: the script estimates each step's memory before running it and skips a step that would not fit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; find machine.py when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import describe, load_average  # noqa: E402

from recourse_sim.data import DATASETS  # noqa: E402
from recourse_sim.device import resolve_device, torch_threads  # noqa: E402
from recourse_sim.generators import GENERATORS, SearchSettings, make_context, search  # noqa: E402
from recourse_sim.metrics.mmd import mmd_permutation_tests  # noqa: E402
from recourse_sim.models import MODELS  # noqa: E402
from recourse_sim.models.base import DECISION_THRESHOLD  # noqa: E402
from recourse_sim.simulation.population import choose_recipients  # noqa: E402


TITLE = "# One round at scale"  # the first line of every table this script writes (it overwrites only those)


def peak_gib() -> float:
    """Peak resident memory of this process so far (GiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def available_gib() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


class Timer:
    def __init__(self, device: torch.device) -> None:
        self.device, self.rows = device, []

    def __call__(self, step: str, detail: str, fn):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        self.rows.append((step, detail, seconds, peak_gib()))
        print(f"{step:<22} {detail:<58} {seconds:9.2f} s  peak {peak_gib():6.2f} GiB", flush=True)
        return value


@torch_threads(1)  # like the simulation: parallelism comes from stacking systems
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="individuals")
    parser.add_argument("--systems", type=int, default=100)
    parser.add_argument("--k", type=int, default=5, help="counterfactuals per recipient")
    parser.add_argument("--epochs", type=int, default=100, help="initial training epochs (SaTML: 100)")
    parser.add_argument("--retrain-epochs", type=int, default=10, help="SaTML: 10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    out = args.out or ROOT / "benchmarks" / "results" / f"scale_{device.type}.md"
    if out.exists() and not out.read_text(errors="replace").startswith(TITLE):
        parser.error(f"--out {out} exists and is not a table this script wrote; pick another path")
    timer = Timer(device)
    S, n, K = args.systems, args.n, args.k
    load = load_average()

    data = timer("data", f"overlapping, n = {n:,}", lambda: DATASETS["overlapping"](n, np.random.default_rng(0)))
    X, y = data.X.to(device), data.y.to(device)
    d = X.shape[1]

    lr = MODELS["logistic_regression"](epochs=args.epochs, seed=0, device=str(device))
    timer("initial training", f"LR, {n:,} rows x {args.epochs} epochs, batch 1", lambda: lr.fit(X, y))
    small = min(n, 100_000)
    mlp = MODELS["mlp"](epochs=args.epochs, seed=0, device=str(device))
    timer("initial training", f"MLP (32), {small:,} rows x {args.epochs} epochs, batch 1",
          lambda: mlp.fit(X[:small], y[:small]))

    population_gib = S * n * (d + 1) * 4 / 2**30
    if population_gib * 2.5 > available_gib():
        print(f"population of {S} x {n:,} rows needs ~{population_gib:.1f} GiB (x2.5 working): does not fit")
        return
    stack = timer("population", f"{S} systems x {n:,} rows x {d} features ({population_gib:.2f} GiB)",
                  lambda: lr.select_systems(torch.zeros(S, dtype=torch.long)))
    pop_X = X.unsqueeze(0).expand(S, n, d).clone()
    pop_y = y.unsqueeze(0).expand(S, n).clone()

    negative = timer("predict", f"every system scores every individual ({S * n:,} scores)",
                     lambda: stack.predict(pop_X) == 0)
    rows, valid = timer("recipients", "mu = 0.05 of the rows every system predicts negative",
                        lambda: choose_recipients(negative, [torch.arange(S, device=device)], 0.05,
                                                  np.random.default_rng(1)))
    B = rows.shape[1]
    factual = torch.gather(pop_X, 1, rows.unsqueeze(-1).expand(-1, -1, d))
    context = make_context(data, device)
    spec = GENERATORS["generic"]()
    result = timer("search", f"generic, {S} systems x {B:,} recipients x K = {K} ({S * B * K:,} counterfactuals)",
                   lambda: search(stack, factual, [spec] * S, context, settings=SearchSettings(n_counterfactuals=K),
                                  rng=torch.Generator(device=device).manual_seed(2)))
    chosen = result.counterfactuals[:, :, 0]
    pop_X.scatter_(1, rows.unsqueeze(-1).expand(-1, -1, d), chosen)
    pop_y.scatter_(1, rows, (result.proba[:, :, 0] >= DECISION_THRESHOLD).float())
    timer("retraining", f"{S} systems x {n:,} rows x {args.retrain_epochs} epochs, batch 1",
          lambda: stack.refit(pop_X, pop_y, epochs=args.retrain_epochs))
    reference = X[y == 1][:1000].unsqueeze(0).expand(S, -1, -1)
    current = torch.stack([pop_X[s][pop_y[s] == 1][:1000] for s in range(S)])
    timer("domain MMD", f"{S} tests, 1,000 samples a side, 100 permutations",
          lambda: mmd_permutation_tests(current.double(), reference.double(), n_permutations=100, length_scale=1.0,
                                        rng=torch.Generator(device=device).manual_seed(3)))

    total = sum(row[2] for row in timer.rows[3:])
    lines = [
        f"{TITLE} ({device.type})",
        "",
        f"`python benchmarks/scale.py --n {n} --systems {S} --k {K} --epochs {args.epochs} "
        f"--retrain-epochs {args.retrain_epochs}` on {dt.date.today()}, {describe(threads=1)}; "
        f"load average (1/5/15 min) before: {load}.",
        "",
        "| step | what | seconds | peak memory (GiB) |",
        "|---|---|---:|---:|",
        *[f"| {step} | {detail} | {seconds:.2f} | {peak:.2f} |" for step, detail, seconds, peak in timer.rows],
        "",
        f"One round (population to MMD) took **{total:.1f} s**; the process peaked at **{peak_gib():.2f} GiB**.",
    ]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
