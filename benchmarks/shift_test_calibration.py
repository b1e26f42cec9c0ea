"""Calibration and power of the domain-shift test on every dataset we ship (issue 11).

For each dataset and seed: a fresh balanced sample and stratified 80/20 split (as the simulation draws them),
then the domain test of the training positives

- under **no change** (the positives as they are): a false positive is p < alpha;
- under a **planted shift**: ``--planted`` shares (default 20 % and 50 %) of the training positives replaced by
  training negatives (what recourse that relabels negatives as positives without moving them far would do).

Three variants of the test, as ``MetricSettings`` selects them:

- ``default``: current training positives vs the never-moved held-out positives, median-heuristic
  length-scale, float64 (the package's default);
- ``held_out_l0.5``: the same comparison with the paper's length-scale 0.5;
- ``reference``: the reference code's test (initial positives, train + test, vs current positives, l = 0.5).

Writes ``benchmarks/results/shift_test_calibration.md`` and ``.csv``.

    python benchmarks/shift_test_calibration.py                  # 100 seeds per dataset, 100 permutations
    python benchmarks/shift_test_calibration.py --seeds 20 --datasets overlapping credit_default
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recourse_sim.data import DATASETS
from recourse_sim.simulation import MetricSettings
from recourse_sim.simulation.evaluation import ShiftEvaluator

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = {
    "default": {},
    "held_out_l0.5": {"domain_length_scale": 0.5},
    "reference": {"domain_reference": "initial", "domain_length_scale": 0.5},
}
N_SAMPLES = {"linearly_separable": 1000, "overlapping": 1000, "circles": 1000, "moons": 1000,
             "give_me_some_credit": 5000, "credit_default": 5000, "california_housing": 5000}


def p_values(name: str, seed: int, planted: list[float], permutations: int) -> dict[tuple[str, float], float]:
    """p-values per (variant, planted share); share 0 is the null."""
    rng = np.random.default_rng(seed)
    train, test = DATASETS[name](N_SAMPLES[name], rng).stratified_split(0.2, rng)
    positives, negatives = train.X[train.y == 1], train.X[train.y == 0]
    X0, y0 = torch.cat([train.X, test.X]), torch.cat([train.y, test.y])
    out = {}
    for variant, options in VARIANTS.items():
        settings = MetricSettings(permutations=permutations, **options)
        evaluator = ShiftEvaluator(X0, y0, test.X, test.y, settings, torch.Generator().manual_seed(seed))
        for share in [0.0, *planted]:
            k = int(share * len(positives))
            out[variant, share] = evaluator.domain_shift(torch.cat([positives[k:], negatives[:k]]))[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(N_SAMPLES))
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--planted", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.datasets:
        start = time.perf_counter()
        draws = [p_values(name, seed, args.planted, args.permutations) for seed in range(args.seeds)]
        for variant in VARIANTS:
            null = np.array([d[variant, 0.0] for d in draws])
            row = {"dataset": name, "test": variant, "seeds": args.seeds,
                   "false_positive_rate": float((null < args.alpha).mean()), "mean_p_null": float(null.mean())}
            for share in args.planted:
                planted = np.array([d[variant, share] for d in draws])
                row[f"power_{share:.0%}"] = float((planted < args.alpha).mean())
            rows.append(row)
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / "shift_test_calibration.csv", index=False)
    header = (f"# Domain-shift test: calibration and power\n\n`python benchmarks/shift_test_calibration.py "
              f"--seeds {args.seeds}` on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}. alpha = {args.alpha}; "
              f"planted shift: {', '.join(f'{p:.0%}' for p in args.planted)} of the training positives replaced by "
              "negatives; "
              f"{args.permutations} permutations. Samples as the SaTML experiments draw them (synthetic 1,000, "
              f"real 5,000 balanced rows, 80/20 split).\n\n")
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    (RESULTS / "shift_test_calibration.md").write_text(header + "\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
