"""MMD permutation tests: today's implementation vs the one before issue 12 (item 2).

- **per test**: one ``mmd_permutation_test`` with 1,000 samples a side and 100 permutations, for 1-D float32
  predicted probabilities (l = 0.5, the model-shift test) and float64 samples in d = 2 and d = 29 (the domain
  test; median-heuristic length-scale);
- **evaluate**: one ``ShiftEvaluator.evaluate`` call for a stack of 105 systems on synthetic data as the SaTML
  experiments draw it (overlapping, 1,000 rows, 80/20 split: 1,000 initial points, a 1,000-point grid, the
  held-out positives as domain reference), i.e. 315 tests; the models are fixed random logistic regressions so
  that only the metrics are timed;
- **memory**: peak resident memory added by one batched call of 105 systems x 2,000 pooled points (1-D, the
  low-rank path; and 2-D, the kernel path), measured first, in a fresh process.

"old" is a verbatim copy of the previous ``mmd_permutation_test`` (permutations by argsort of uniform noise,
the pooled kernel from ``torch.cdist``, one ``(P, N) @ (N, N)`` product) kept in this script, and of the previous
per-system loop of ``ShiftEvaluator.evaluate``. Times are the best of ``--repeats`` runs.

    python benchmarks/mmd_speed.py                  # writes benchmarks/results/mmd_speed_cpu.md and .csv
    python benchmarks/mmd_speed.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

try:
    from machine import describe, load_average, uptime
except ImportError:  # imported as benchmarks.mmd_speed rather than run as a script
    from benchmarks.machine import describe, load_average, uptime

from recourse_sim.data import DATASETS
from recourse_sim.metrics import accuracy, decisiveness, disagreement, f1_score, median_length_scale, perturbation
from recourse_sim.metrics.mmd import MMDTest, mmd_permutation_test, mmd_permutation_tests
from recourse_sim.simulation import MetricSettings
from recourse_sim.simulation.evaluation import ShiftEvaluator
from recourse_sim.simulation.population import Population

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------ the previous implementation (for timing)
def _old_kernel(X: torch.Tensor, Y: torch.Tensor, length_scale: float) -> torch.Tensor:
    mode = "donot_use_mm_for_euclid_dist" if X.shape[-1] <= 4 else "use_mm_for_euclid_dist_if_necessary"
    sq_dist = torch.cdist(X, Y, compute_mode=mode).square()
    floor = math.log(torch.finfo(X.dtype).tiny) + 1.0
    return torch.exp((sq_dist * (-0.5 / length_scale**2)).clamp_(min=floor))


def _old_draw(fn, *args, generator, device, **kwargs):
    if generator is None:
        return fn(*args, device=device, **kwargs)
    return fn(*args, generator=generator, device=generator.device, **kwargs).to(device)


def _old_subsample(X, k, generator):
    if X.shape[0] <= k:
        return X
    return X[_old_draw(torch.randperm, X.shape[0], generator=generator, device=X.device)[:k]]


def _old_split_statistics(A, K, row_sums, diag, total, n_x):
    n_y = K.shape[0] - n_x
    AK = (A @ K).double()
    A = A.double()
    q = (AK * A).sum(1)
    a_r = A @ row_sums
    a_diag = A @ diag
    xx = (q - a_diag) / (n_x * n_x - n_x)
    yy = (total - 2 * a_r + q - (diag.sum() - a_diag)) / (n_y * n_y - n_y)
    xy = (a_r - q) / (n_x * n_y)
    return xx + yy - 2 * xy


def old_mmd_permutation_test(X, Y, *, n_permutations=100, length_scale=0.5, max_samples=1000, generator=None):
    """The package's ``mmd_permutation_test`` before issue 12 (validation omitted)."""
    X = X.unsqueeze(-1) if X.dim() == 1 else X
    Y = Y.unsqueeze(-1) if Y.dim() == 1 else Y
    X, Y = _old_subsample(X, max_samples, generator), _old_subsample(Y, max_samples, generator)
    n_x, n_y = X.shape[0], Y.shape[0]
    N, device = n_x + n_y, X.device
    dtype = torch.promote_types(X.dtype, Y.dtype)
    Z = torch.cat([X.to(dtype), Y.to(dtype)])
    K = _old_kernel(Z, Z, length_scale)
    row_sums = K.sum(1, dtype=torch.float64)
    diag = K.diagonal().double()
    total = row_sums.sum()
    a0 = torch.zeros(1, N, dtype=K.dtype, device=device)
    a0[0, :n_x] = 1
    observed = _old_split_statistics(a0, K, row_sums, diag, total, n_x)[0]
    bytes_per_perm = N * (4 + 8 + 2 * K.element_size() + 16)
    chunk = max(1, (200 * 2**20) // bytes_per_perm)
    n_ge = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, n_permutations, chunk):
        P = min(chunk, n_permutations - start)
        keys = _old_draw(torch.rand, P, N, generator=generator, device=device)
        x_side = keys.argsort(dim=1)[:, :n_x]
        A = torch.zeros(P, N, dtype=K.dtype, device=device).scatter_(1, x_side, 1.0)
        n_ge += (_old_split_statistics(A, K, row_sums, diag, total, n_x) >= observed).sum()
    return MMDTest(mmd2=float(observed), p_value=float(n_ge) / n_permutations, n_x=n_x, n_y=n_y)


class OldEvaluator(ShiftEvaluator):
    """``ShiftEvaluator`` with the previous per-system loop: three single tests per system."""

    def _old_two_sample(self, x, y, length_scale, cap_to_x=True):
        s = self.settings
        if len(x) < 2 or len(y) < 2:
            return math.nan, math.nan
        test = old_mmd_permutation_test(
            x, y, n_permutations=s.permutations, length_scale=length_scale,
            max_samples=min(len(x), s.mmd_samples) if cap_to_x else s.mmd_samples, generator=self.rng,
        )
        return test.mmd2, test.p_value

    def evaluate(self, name, model, population, systems):
        ref = self._reference[name]
        p_now = model.proba_positive(self.X_initial)
        p_grid = model.proba_positive(self.grid)
        predictions = model.predict(self.X_test)
        per_system = {
            "perturbation": perturbation(model.parameters_stacked(), ref["params"], stacked=True),
            "disagreement": disagreement(ref["p_initial"], p_now),
            "decisiveness": decisiveness(ref["p_initial"], p_now),
            "accuracy": accuracy(self.y_test, predictions),
            "f1": f1_score(self.y_test, predictions),
        }
        per_system["f1_change"] = per_system["f1"] - ref["f1"]
        for local, system in enumerate(systems.tolist()):
            for metric, values in per_system.items():
                yield system, metric, float(values[local])
            positives = population.X[system][population.y[system] == 1].double()
            cap = self.settings.domain_reference == "initial"
            tests = {
                "domain_mmd": self._old_two_sample(self.domain_reference, positives, self.domain_length_scale, cap),
                "model_mmd": self._old_two_sample(ref["p_initial"][local], p_now[local], self.settings.length_scale),
                "model_mmd_grid": self._old_two_sample(ref["p_grid"][local], p_grid[local], self.settings.length_scale),
            }
            for metric, (value, p_value) in tests.items():
                yield system, metric, value
                yield system, f"{metric}_pvalue", p_value


# ------------------------------------------------------------------------------------------ the benchmark
class FixedLogistic:
    """S fixed logistic regressions (only what ``ShiftEvaluator`` calls)."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor) -> None:
        self.W, self.b = W, b

    def proba_positive(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(X @ self.W.T + self.b).T  # (S, n)

    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return (self.proba_positive(X) >= 0.5).long()

    def parameters_stacked(self) -> list[torch.Tensor]:
        return [self.W, self.b]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def per_test_rows(repeats: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = []
    cases = [("1-D probabilities (float32)", 1, torch.float32), ("d = 2 (float64)", 2, torch.float64),
             ("d = 29 (float64)", 29, torch.float64)]
    for label, d, dtype in cases:
        if d == 1:
            x, y = torch.rand(1000, generator=g, dtype=dtype), torch.rand(1000, generator=g, dtype=dtype).sqrt()
            scale = 0.5
        else:
            x, y = torch.randn(1000, d, generator=g, dtype=dtype), torch.randn(1000, d, generator=g, dtype=dtype) + 0.05
            scale = median_length_scale(x)
        old = _best(lambda: old_mmd_permutation_test(x, y, length_scale=scale,
                                                     generator=torch.Generator().manual_seed(1)), repeats)
        new = _best(lambda: mmd_permutation_test(x, y, length_scale=scale, rng=torch.Generator().manual_seed(1)),
                    repeats)
        rows.append({"case": f"one test, {label}, 1,000 a side, 100 permutations", "old_ms": 1e3 * old,
                     "new_ms": 1e3 * new, "speedup": old / new})
    return rows


def evaluate_rows(repeats: int, n_systems: int = 105) -> list[dict]:
    rng = np.random.default_rng(0)
    train, test = DATASETS["overlapping"](1000, rng).stratified_split(0.2, rng)
    X0, y0 = torch.cat([train.X, test.X]), torch.cat([train.y, test.y])
    g = torch.Generator().manual_seed(0)
    W0, b0 = torch.randn(n_systems, 2, generator=g), torch.randn(n_systems, generator=g) * 0.1
    initial = FixedLogistic(W0, b0)
    current = FixedLogistic(W0 + 0.2 * torch.randn(n_systems, 2, generator=g), b0 + 0.2)
    population = Population.replicate(train.X, train.y, n_systems)
    # Some negatives of each system became positives (as after recourse): positive counts differ by system.
    for s in range(n_systems):
        negatives = (population.y[s] == 0).nonzero().squeeze(1)
        moved = negatives[torch.randperm(len(negatives), generator=g)[: 5 + s % 40]]
        population.y[s, moved] = 1
    systems = torch.arange(n_systems)
    rows = []
    times = {}
    for label, cls in (("old", OldEvaluator), ("new", ShiftEvaluator)):
        evaluator = cls(X0, y0, test.X, test.y, MetricSettings(), torch.Generator().manual_seed(1))
        evaluator.set_reference("lr", initial)
        times[label] = _best(lambda: list(evaluator.evaluate("lr", current, population, systems)), repeats)
    rows.append({"case": f"ShiftEvaluator.evaluate, {n_systems} systems (3 tests each), synthetic",
                 "old_ms": 1e3 * times["old"], "new_ms": 1e3 * times["new"], "speedup": times["old"] / times["new"]})
    return rows


def memory_probe(d: int) -> None:
    """Run in a fresh process: print the peak RSS added by one batched call of 105 systems x 2,000 points."""
    g = torch.Generator().manual_seed(0)
    dtype = torch.float32 if d == 1 else torch.float64
    X, Y = torch.rand(105, 1000, d, generator=g, dtype=dtype), torch.rand(105, 1000, d, generator=g, dtype=dtype)
    mmd_permutation_tests(X[:1].squeeze(-1), Y[:1].squeeze(-1), rng=g)  # warm-up (allocator, kernels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mmd_permutation_tests(X.squeeze(-1) if d == 1 else X, Y.squeeze(-1) if d == 1 else Y, rng=g)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)


def memory_rows() -> list[dict]:
    rows = []
    for d, label in ((1, "1-D (low-rank path)"), (2, "d = 2 (kernel path)")):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", str(d)], capture_output=True, text=True,
                             check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        rows.append({"case": f"peak memory added, batched call, 105 systems x 2,000 points, {label}",
                     "new_MiB": float(out.stdout.strip().splitlines()[-1])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-probe", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    load_before = load_average()
    memory = memory_rows()
    rows = per_test_rows(args.repeats) + evaluate_rows(args.repeats)
    load_after = load_average()
    uptime_after = uptime()
    frame = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    frame.assign(threads=torch.get_num_threads()).to_csv(RESULTS / "mmd_speed_cpu.csv", index=False)
    lines = [
        "# MMD permutation tests: before vs after issue 12 (item 2)",
        "",
        f"{describe(threads=torch.get_num_threads())}; best of {args.repeats}. Load average (1/5/15 min) "
        f"before: {load_before}, after: {load_after}; `uptime` at the end: `{uptime_after}`.",
        "",
        "| case | old (ms) | new (ms) | speed-up |",
        "|---|---:|---:|---:|",
        *(f"| {r['case']} | {r['old_ms']:.1f} | {r['new_ms']:.1f} | {r['speedup']:.1f}x |" for r in rows),
        "",
        "| memory | MiB |",
        "|---|---:|",
        *(f"| {r['case']} | {r['new_MiB']:.0f} |" for r in memory),
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "mmd_speed_cpu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
