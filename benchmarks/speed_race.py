"""Side-by-side speed race: dice-ml's gradient method vs. recourse_sim's ``dice`` and ``generic`` generators on
the same trained MLP and the same 1,000 factuals from a real dataset, in one run.

What is measured (issue: "On the same trained torch MLP and the same 1,000 factuals from a real tabular dataset,
time dice-ml's gradient method (one CF per query) against recourse_sim's dice and generic generators, in one run,
and report CF/s and the ratio. Target: >= 1,000x dice-ml per counterfactual on 2 CPU cores."):

- data: California Housing as shipped by :func:`recourse_sim.data.real.california_housing` (8 continuous
  features, z-scored by the loader, class-balanced sample of ``--n-samples`` rows, the package's default schema:
  HouseAge/Latitude/Longitude immutable, non-negative raw features bounded below);
- model: one ``MLPClassifier(hidden_sizes=--hidden)`` (ReLU MLP, one logit + sigmoid), trained with mini-batches
  (``--batch-size``, ``--epochs``, Adam 1e-3). Its weights are copied into a plain ``torch.nn.Sequential``
  (Linear/ReLU/.../Linear/Sigmoid) for dice-ml, so both packages explain the identical function; the script
  checks that the two give the same p(y=1) on every row;
- dice-ml's gradient method (``dice_ml.Dice(..., method="gradient")``, PyTorch backend) searches in its own
  min-max-normalised [0, 1] space and feeds the model that normalised input (``dice_ml.Model(...,
  func="ohe-min-max")``). The Sequential therefore starts with a fixed layer mapping [0, 1] back to the
  dataset's scale: dice-ml's model and ours are the same function of the same features. With one output node
  dice-ml reads that node as p(y=1) (``get_model_output`` slices ``[num_output_nodes - 1:]``), so no 2-class
  head is needed;
- factuals: ``--n-factuals`` (1,000) distinct rows the model predicts negative (p < 0.5), drawn with a seeded RNG;
- recourse_sim: ``generate_counterfactuals(model, factuals, name, reference, settings=SearchSettings(K))`` with
  all factuals in one call: ``generic`` K = 1, ``dice`` K = 1 (like-for-like with dice-ml's one CF per query)
  and ``dice`` K = 5 (the generator's default; CFs counted as B x K, plus the per-individual rate). Each row is
  warmed up once and timed ``--repeats`` times; the median is reported;
- dice-ml: ``generate_counterfactuals(query, total_CFs=1, desired_class="opposite", features_to_vary=<the
  mutable features>)`` one query at a time (how dice-ml works: its gradient search handles one query per
  optimisation), with dice-ml's defaults otherwise. It takes seconds to minutes per query, so only the first
  ``--dice-queries`` factuals of the same 1,000 are timed (after one untimed warm-up query) and the rate is
  **extrapolated** to 1,000. Two dice-ml rows come from the same runs: the whole call, and its optimisation loop
  alone (dice-ml's own ``elapsed`` timer, without its post-processing and post-hoc sparsity search);
- dice-ml infers each feature's decimal precision from the string of the data's modes, which for z-scored
  floats gives 4-8 decimals; its post-hoc sparsity search then moves features in steps of 1e-4..1e-8 for up to
  10,000 model calls per feature (minutes per query). ``--dice-precision`` (default 3) sets
  ``continuous_features_precision`` to 3 decimals (0.001 standard deviations) for every feature instead, which
  makes dice-ml faster, not slower; ``--dice-precision 0`` keeps dice-ml's inference;
- validity: p(y=1) >= 0.5 under our model (identical to the exported one) for every returned counterfactual; a
  dice-ml query that returns none counts as one invalid counterfactual;
- ``--threads 1 0`` runs everything once with ``torch.set_num_threads(1)`` and once with torch's default thread
  count (0), and reports both.

Usage::

    pip install -e '.[bench]'                          # dice-ml
    python benchmarks/speed_race.py                    # writes benchmarks/results/speed_race.{md,csv}
    python benchmarks/speed_race.py --dice-queries 5 --threads 1   # quicker

The machine may be shared: the report records the load average and the CPU share used by other processes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import inspect
import io
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # dice-ml wraps its query loop in tqdm

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; reuse cf_throughput's helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from cf_throughput import CpuMonitor, cpu_busy, machine_info  # noqa: E402
from machine import load_average  # noqa: E402

from recourse_sim.data.real import california_housing  # noqa: E402
from recourse_sim.generators import GENERATORS, generate_counterfactuals  # noqa: E402
from recourse_sim.generators.problem import SearchSettings  # noqa: E402
from recourse_sim.models.classifier import MLPClassifier  # noqa: E402

TARGET_RATIO = 1_000.0
OUTCOME = "above_median"
DEFAULT_OUT = "benchmarks/results/speed_race.md"
SHARED_WARNING = (" -- **the machine was shared with other jobs: these timings are noisy; rerun on an idle machine "
                  "for trustworthy numbers**")


# ----------------------------------------------------------------------------------------------- setup
def import_dice_ml():
    try:
        import dice_ml
        from raiutils.exceptions import UserConfigValidationException  # what dice-ml raises
    except ImportError as error:
        raise SystemExit(f"dice-ml is not installed ({error}); install the bench extra: pip install -e '.[bench]'")
    return dice_ml, UserConfigValidationException


class FromUnitBox(torch.nn.Module):
    """Maps dice-ml's min-max-normalised input back to the dataset's scale: ``x * (max - min) + min``."""

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("lower", lower.clone())
        self.register_buffer("scale", (upper - lower).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.lower


def export_sequential(model: MLPClassifier, lower: torch.Tensor, upper: torch.Tensor) -> torch.nn.Sequential:
    """The fitted single-system, single-member MLP as ``FromUnitBox-Linear-ReLU-...-Linear-Sigmoid``.

    ``StackedMLP`` stores ``W`` (S, M, fan_in, fan_out) and computes ``h @ W + b``; ``nn.Linear`` holds ``W.T``.
    """
    net = model.network_
    if net.n_systems != 1 or net.n_members != 1:
        raise ValueError("export_sequential expects a single-system, single-member model")
    layers: list[torch.nn.Module] = [FromUnitBox(lower, upper)]
    last = len(net.weights) - 1
    for layer, (W, b) in enumerate(zip(net.weights, net.biases)):
        linear = torch.nn.Linear(W.shape[-2], W.shape[-1])
        with torch.no_grad():
            linear.weight.copy_(W[0, 0].T)
            linear.bias.copy_(b[0, 0, 0])
        layers.append(linear)
        if layer < last:
            layers.append(torch.nn.ReLU())
    layers.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*layers).eval()


@dataclass
class Setup:
    data: object
    model: MLPClassifier
    sequential: torch.nn.Sequential
    frame: pd.DataFrame  # the dataset as dice-ml sees it (features + outcome)
    factuals: torch.Tensor  # (B, d)
    mutable: list[str]
    fit_seconds: float
    train_accuracy: float
    n_negative: int
    max_abs_diff: float  # |p_sequential - p_ours| over the dataset


def build(args: argparse.Namespace) -> Setup:
    data = california_housing(args.n_samples, np.random.default_rng(args.seed))
    t0 = time.perf_counter()
    model = MLPClassifier(
        hidden_sizes=tuple(args.hidden), epochs=args.epochs, batch_size=args.batch_size, shuffle=True,
        device="cpu", seed=args.seed,
    ).fit(data.X, data.y)
    fit_seconds = time.perf_counter() - t0
    names = list(data.schema.names)
    frame = pd.DataFrame(data.X.double().numpy(), columns=names)
    frame[OUTCOME] = data.y.numpy().astype(int)
    lower = torch.tensor(frame[names].min().to_numpy(), dtype=torch.float32)
    upper = torch.tensor(frame[names].max().to_numpy(), dtype=torch.float32)
    sequential = export_sequential(model, lower, upper)
    p_ours = model.proba_positive(data.X)
    with torch.no_grad():
        p_seq = sequential((data.X - lower) / (upper - lower)).squeeze(-1)
    max_abs_diff = float((p_seq - p_ours).abs().max())
    if max_abs_diff > 1e-4:
        raise SystemExit(f"the exported Sequential differs from the model: max |dp| = {max_abs_diff:.2e}")
    negative = torch.nonzero(p_ours < 0.5).flatten()
    if negative.numel() < args.n_factuals:
        raise SystemExit(f"only {negative.numel()} rows are predicted negative; need {args.n_factuals}")
    pick = np.random.default_rng(args.seed + 1).choice(negative.numel(), args.n_factuals, replace=False)
    factuals = data.X[negative[torch.as_tensor(pick)]]
    mutable = [n for n, m in zip(names, data.schema.mutability) if m != "none"]
    accuracy = float((model.predict(data.X) == data.y).float().mean())
    return Setup(data, model, sequential, frame, factuals, mutable, fit_seconds, accuracy, int(negative.numel()),
                 max_abs_diff)


def make_explainer(setup: Setup, args: argparse.Namespace):
    dice_ml, _ = import_dice_ml()
    names = list(setup.data.schema.names)
    extra = {}
    if args.dice_precision > 0:
        extra["continuous_features_precision"] = {n: args.dice_precision for n in names}
    d = dice_ml.Data(dataframe=setup.frame, continuous_features=names, outcome_name=OUTCOME, **extra)
    m = dice_ml.Model(model=setup.sequential, backend="PYT", func="ohe-min-max")
    return dice_ml.Dice(d, m, method="gradient")


def inferred_precision(setup: Setup) -> str:
    """The decimals dice-ml would infer for each feature of this data (``--dice-precision 0``)."""
    dice_ml, _ = import_dice_ml()
    names = list(setup.data.schema.names)
    d = dice_ml.Data(dataframe=setup.frame, continuous_features=names, outcome_name=OUTCOME)
    return ", ".join(f"{n} {p}" for n, p in zip(names, d.get_decimal_precisions()))


def dice_ml_defaults() -> dict[str, object]:
    """The defaults of dice-ml's PyTorch gradient search, read from its signatures."""
    from dice_ml.explainer_interfaces.dice_pytorch import DicePyTorch
    from dice_ml.explainer_interfaces.explainer_base import ExplainerBase

    inner = inspect.signature(DicePyTorch._generate_counterfactuals).parameters
    outer = inspect.signature(ExplainerBase.generate_counterfactuals).parameters
    keys = ("proximity_weight", "diversity_weight", "categorical_penalty", "yloss_type", "diversity_loss_type",
            "feature_weights", "optimizer", "learning_rate", "min_iter", "max_iter", "loss_diff_thres",
            "loss_converge_maxiter", "init_near_query_instance", "stopping_threshold")
    values = {k: inner[k].default for k in keys}
    values.update({k: outer[k].default for k in ("posthoc_sparsity_param", "posthoc_sparsity_algorithm")})
    values["limit_steps_ls"] = inner["limit_steps_ls"].default
    return values


# ---------------------------------------------------------------------------------------------- timing
@dataclass
class Row:
    method: str
    K: int
    individuals: int
    cfs: int
    seconds: float  # measured seconds (for dice-ml: of the timed sample)
    validity: float  # share of the CFs with p(y=1) >= 0.5
    mean_steps: float
    mean_p: float  # mean p(y=1) of the valid CFs
    mean_l1: float  # mean L1 distance (standardised features) of the valid CFs to their factual
    extrapolated: bool = False
    seconds_spread: str = ""

    @property
    def rate(self) -> float:
        return self.cfs / self.seconds

    @property
    def individual_rate(self) -> float:
        return self.individuals / self.seconds


def quality(cfs: torch.Tensor, p: torch.Tensor, factual: torch.Tensor) -> tuple[float, float, float]:
    """(validity, mean p of valid CFs, mean L1 distance of valid CFs) for CFs (N, d), p (N,), factual (N, d)."""
    valid = p >= 0.5
    if not valid.any():
        return 0.0, float("nan"), float("nan")
    l1 = (cfs - factual).abs().sum(-1)
    return float(valid.float().mean()), float(p[valid].mean()), float(l1[valid].mean())


def time_ours(setup: Setup, name: str, K: int, args: argparse.Namespace) -> Row:
    settings = SearchSettings(n_counterfactuals=K)

    def call():
        return generate_counterfactuals(setup.model, setup.factuals, name, setup.data, settings=settings,
                                        seed=args.seed)

    call()  # warm-up
    runs = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = call()
        runs.append((time.perf_counter() - t0, result))
    seconds = statistics.median(s for s, _ in runs)
    result = runs[0][1]
    B = setup.factuals.shape[0]
    cfs = result.counterfactuals.reshape(B * K, -1)
    factual = setup.factuals.unsqueeze(1).expand(B, K, -1).reshape(B * K, -1)
    validity, mean_p, mean_l1 = quality(cfs, result.proba.reshape(-1), factual)
    spread = " / ".join(f"{s:.3f}" for s, _ in runs)
    return Row(f"recourse_sim {name}", K, B, B * K, seconds, validity, float(result.steps.float().mean()),
               mean_p, mean_l1, seconds_spread=spread)


def dice_query(explainer, query: pd.DataFrame, setup: Setup, no_cf_error) -> dict:
    """One dice-ml query: wall seconds, its optimisation-loop seconds, iterations and both CFs (or None)."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # dice-ml prints a line per query
        try:
            result = explainer.generate_counterfactuals(
                query, total_CFs=1, desired_class="opposite", features_to_vary=setup.mutable
            )
            example = result.cf_examples_list[0]
        except no_cf_error:  # raised when no query got a counterfactual (here: this one)
            example = None
    seconds = time.perf_counter() - t0
    names = list(setup.data.schema.names)

    def first(frame):
        if frame is None or len(frame) == 0:
            return None
        return torch.tensor(frame[names].to_numpy(dtype=np.float64)[0], dtype=torch.float32)

    return {
        "seconds": seconds,
        "search_seconds": float(explainer.elapsed),
        "iterations": int(explainer.max_iterations_run),
        "cf": first(example.final_cfs_df_sparse) if example is not None else None,
        "cf_search": first(example.final_cfs_df) if example is not None else None,
    }


def time_dice_ml(setup: Setup, explainer, args: argparse.Namespace) -> tuple[Row, Row]:
    _, no_cf_error = import_dice_ml()
    names = list(setup.data.schema.names)
    queries = pd.DataFrame(setup.factuals.double().numpy(), columns=names)
    np.random.seed(args.seed)
    dice_query(explainer, queries.iloc[[len(queries) - 1]], setup, no_cf_error)  # warm-up, not timed
    runs = []
    for i in range(args.dice_queries):
        runs.append(dice_query(explainer, queries.iloc[[i]], setup, no_cf_error))
        print(f"  dice-ml query {i + 1}/{args.dice_queries}: {runs[-1]['seconds']:.2f} s "
              f"({runs[-1]['iterations']} iterations)", flush=True)
    n = len(runs)
    factual = setup.factuals[:n]
    iterations = float(np.mean([r["iterations"] for r in runs]))
    rows = []
    for key, seconds_key, label in (
        ("cf", "seconds", "dice-ml gradient (whole call)"),
        ("cf_search", "search_seconds", "dice-ml gradient (optimisation loop only)"),
    ):
        found = [r[key] is not None for r in runs]
        cfs = torch.stack([r[key] if r[key] is not None else factual[i] for i, r in enumerate(runs)])
        p = setup.model.proba_positive(cfs) * torch.tensor(found, dtype=torch.float32)  # none returned: invalid
        validity, mean_p, mean_l1 = quality(cfs, p, factual)
        per_query = [r[seconds_key] for r in runs]
        spread = (f"per query: min {min(per_query):.2f}, median {statistics.median(per_query):.2f}, "
                  f"max {max(per_query):.2f}")
        rows.append(Row(label, 1, n, n, sum(per_query), validity, iterations, mean_p, mean_l1, extrapolated=True,
                        seconds_spread=spread))
    return rows[0], rows[1]


# --------------------------------------------------------------------------------------------- reports
def table(rows: list[Row], reference: Row, search_only: Row, n_factuals: int) -> list[str]:
    lines = [
        "| method | K | CFs | seconds | CF/s | individuals/s | validity | mean steps | mean p (valid) | "
        "mean L1 (valid) | ratio vs dice-ml (whole call) | ratio vs dice-ml (loop only) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cfs = f"{r.cfs:,}"
        seconds = f"{r.seconds:,.3f}"
        if r.extrapolated:
            cfs = f"{r.cfs:,} timed ({n_factuals:,} extrapolated)"
            seconds = f"{r.seconds:,.1f} ({n_factuals / r.rate:,.0f} extrapolated)"
        lines.append(
            f"| {r.method} | {r.K} | {cfs} | {seconds} | {r.rate:,.3f} | {r.individual_rate:,.3f} | {r.validity:.3f} | "
            f"{r.mean_steps:,.1f} | {r.mean_p:.3f} | {r.mean_l1:.3f} | {r.rate / reference.rate:,.0f}x | "
            f"{r.rate / search_only.rate:,.0f}x |"
        )
    return lines


def markdown(setup: Setup, results: list[dict], args: argparse.Namespace, command: str, versions: dict) -> str:
    spec_generic, spec_dice = GENERATORS["generic"](), GENERATORS["dice"]()
    settings = SearchSettings()
    defaults = dice_ml_defaults()
    lines = ["# Speed race: dice-ml gradient vs recourse_sim (dice, generic), same MLP, same factuals, CPU", ""]
    lines += [f"- {k}: {v}" for k, v in machine_info(torch.device("cpu")) if k != "torch.get_num_threads()"]
    lines += [
        f"- packages: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        f"- command: `{command}`",
        "- the machine may be shared with other jobs: see the load average above and the CPU share used by other "
        "processes under each table (~0% for trustworthy numbers); both packages ran in the same process, one "
        "after the other within minutes, under the same conditions",
        f"- data: California Housing (shipped, `california_housing({args.n_samples}, default_rng({args.seed}))`): "
        f"{setup.data.n_samples} rows, 8 continuous features z-scored by the loader; mutable features "
        f"{', '.join(setup.mutable)} (HouseAge, Latitude, Longitude immutable in both packages)",
        f"- model: `MLPClassifier(hidden_sizes={tuple(args.hidden)})`, trained {args.epochs} epochs, batch "
        f"{args.batch_size}, Adam 1e-3 ({setup.fit_seconds:.1f} s), training accuracy {setup.train_accuracy:.3f}; "
        f"exported to `torch.nn.Sequential` (min-max -> data scale, Linear/ReLU layers, Sigmoid) for dice-ml; "
        f"max |p_sequential - p_recourse_sim| over the data = {setup.max_abs_diff:.1e}",
        f"- factuals: {setup.factuals.shape[0]:,} distinct rows predicted negative (of {setup.n_negative:,}), the "
        f"same for both packages; dice-ml is timed on the first {args.dice_queries} of them after one untimed "
        "warm-up query and its rate is **extrapolated** to all 1,000",
        f"- recourse_sim: `generate_counterfactuals(model, factuals, name, reference, "
        f"settings=SearchSettings(n_counterfactuals=K))`, all {setup.factuals.shape[0]:,} factuals in one call; "
        f"median of {args.repeats} timed calls after one warm-up (each call's seconds are in the CSV)",
        "- threads: with torch's default of one intra-op thread per core, every small op synchronises its threads; "
        "when other processes keep the cores busy those waits stall, and the same call can take 10-100x longer "
        "than with one thread (seen on this 2-core machine). On a shared machine the one-thread table is the more "
        "reliable one",
        "- CF/s counts every counterfactual produced (B x K for recourse_sim, one per query for dice-ml), valid or "
        "not; individuals/s counts factuals explained; validity = share of counterfactuals with p(y=1) >= 0.5 "
        "(a dice-ml query that returns none counts as invalid); mean p and mean L1 distance (in the z-scored "
        "features) are over the valid counterfactuals; mean steps = gradient steps per individual (dice-ml: "
        "optimisation iterations per query)",
        "",
    ]
    for res in results:
        rows = res["rows"]
        ref, loop = res["dice_ml"], res["dice_ml_loop"]
        lines += [f"## torch threads = {res['threads']}", ""]
        lines += table([ref, loop, *rows], ref, loop, setup.factuals.shape[0])
        lines.append("")
        if res["busy"] is not None:
            lines.append(f"- CPU used by other processes during these measurements: {res['busy']:.0%} of all cores"
                         + (SHARED_WARNING if res["busy"] > 0.05 else ""))
        lines.append(f"- load average (1/5/15 min) after these measurements: {res['load']}")
        lines.append(f"- dice-ml seconds {ref.seconds_spread} (whole call); {loop.seconds_spread} (loop only)")
        lines.append("- recourse_sim timed calls (s): "
                     + "; ".join(f"{r.method} K={r.K}: {r.seconds_spread}" for r in rows))
        like = [r for r in rows if r.K == 1]
        slowest = min(like, key=lambda r: r.rate)
        verdict = "met" if slowest.rate / ref.rate >= TARGET_RATIO else "NOT met"
        valid_ratio = (f"{slowest.rate * slowest.validity / (ref.rate * ref.validity):,.0f}x" if ref.validity > 0
                       else "n/a (dice-ml found no valid counterfactual)")
        lines.append(
            f"- target >= {TARGET_RATIO:,.0f}x dice-ml per counterfactual (K = 1 rows vs dice-ml's whole call): "
            f"slowest K = 1 row {slowest.method} at {slowest.rate / ref.rate:,.0f}x -> **{verdict}** "
            f"(vs dice-ml's optimisation loop alone: {slowest.rate / loop.rate:,.0f}x; counting valid counterfactuals "
            f"only, vs the whole call: {valid_ratio})"
        )
        lines.append("")
    lines += [
        "## Settings",
        "",
        f"- dice-ml {versions.get('dice-ml')} gradient method (PyTorch backend), its defaults: "
        + ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        + "; total_CFs=1, desired_class='opposite', features_to_vary = the mutable features, permitted_range = "
        "the data's min/max (dice-ml's default), continuous_features_precision = "
        + (f"{args.dice_precision} decimals for every feature (set by this script, see below)" if args.dice_precision
           > 0 else "inferred by dice-ml"),
        f"- recourse_sim generic: yloss (BCE toward y = 1) + {spec_generic.costs[0][0]} ||x' - x||_2 in the "
        f"standardised space, plain gradient descent with step {spec_generic.step_size} (x K), at most "
        f"{spec_generic.max_steps} steps, stops per individual once all K copies reach p >= {spec_generic.threshold}",
        f"- recourse_sim dice: as generic plus {spec_dice.extcosts[0][0]} x DPP diversity over the K copies "
        f"(constant for K = 1), step {spec_dice.step_size} (x K), at most {spec_dice.max_steps} steps, "
        f"threshold {spec_dice.threshold}; copies start at x + {settings.init_noise} N(0, I); the schema's "
        "mutability and bounds are enforced after every step",
        "",
        "## Caveats: the two searches are not the same algorithm",
        "",
        "- Objectives differ: dice-ml minimises a hinge loss on the logit of p(y=1) (it keeps pushing until "
        "logit >= 1, p >= 0.73) + 0.5 x a MAD-weighted L1 distance in its min-max [0, 1] space; recourse_sim "
        "minimises BCE + 0.1 x the L2 distance in the z-scored space. So dice-ml's counterfactuals sit deeper in "
        "the positive class (see mean p) and differ in distance (see mean L1).",
        "- Stopping rules differ: dice-ml runs at least 500 and at most 5,000 Adam steps (lr 0.05) per query and "
        "stops only when the loss changes by <= 1e-5 and the CF is valid; recourse_sim takes plain gradient steps "
        "of 0.01 and stops each individual as soon as p >= 0.5, at most 100 steps. Much of the ratio is the "
        "iteration budget, not only batching (compare the mean steps column).",
        "- dice-ml also rounds the CF to the feature precision, clamps it to the data's range, and (whole-call row) "
        "runs a post-hoc sparsity search that moves features back toward the factual one precision step at a time; "
        "recourse_sim does none of these. The 'optimisation loop only' row removes this post-processing.",
        "- dice-ml's gradient method explains one query per optimisation and calls the model on one row at a time "
        "from Python loops; recourse_sim batches all factuals in one tensor program. The ratio therefore measures "
        "the whole tool as used, not the same arithmetic done two ways.",
        "- Precision: dice-ml infers each feature's decimals from the data's modes; for these z-scored floats it "
        f"infers {inferred_precision(setup)}, and its post-hoc sparsity search then moves a feature by 10^-decimals "
        "per model call, up to 10,000 calls per feature (minutes per query). "
        + (f"This script sets {args.dice_precision} decimals for every feature instead, which shortens dice-ml's "
           "post-processing, i.e. errs in dice-ml's favour." if args.dice_precision > 0 else
           "This run kept dice-ml's inferred precision (--dice-precision 0)."),
        "",
    ]
    return "\n".join(lines)


def write_csv(path: Path, results: list[dict], n_factuals: int) -> None:
    fields = ["threads", "method", "K", "individuals", "CFs", "seconds", "cf_per_s", "individuals_per_s", "validity",
              "mean_steps", "mean_p_valid", "mean_l1_valid", "extrapolated", "seconds_1000_factuals",
              "ratio_vs_dice_ml", "ratio_vs_dice_ml_loop", "seconds_detail"]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for res in results:
            ref, loop = res["dice_ml"], res["dice_ml_loop"]
            for r in [ref, loop, *res["rows"]]:
                writer.writerow({
                    "threads": res["threads"], "method": r.method, "K": r.K, "individuals": r.individuals,
                    "CFs": r.cfs, "seconds": r.seconds, "cf_per_s": r.rate, "individuals_per_s": r.individual_rate,
                    "validity": r.validity, "mean_steps": r.mean_steps, "mean_p_valid": r.mean_p,
                    "mean_l1_valid": r.mean_l1, "extrapolated": r.extrapolated,
                    "seconds_1000_factuals": n_factuals * r.K / r.rate if r.extrapolated else r.seconds,
                    "ratio_vs_dice_ml": r.rate / ref.rate, "ratio_vs_dice_ml_loop": r.rate / loop.rate,
                    "seconds_detail": r.seconds_spread,
                })


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n-samples", type=int, default=5_000, help="balanced California Housing rows")
    parser.add_argument("--n-factuals", type=int, default=1_000, help="factuals (predicted negative)")
    parser.add_argument("--dice-queries", type=int, default=30, help="dice-ml queries timed (rate extrapolated)")
    parser.add_argument("--dice-precision", type=int, default=3,
                        help="dice-ml continuous_features_precision for every feature (0: let dice-ml infer it)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64, 64], help="MLP hidden sizes")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed recourse_sim calls per row (median reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                        help="torch thread counts to run with, in order (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT, help="markdown report; a CSV is written next to it")
    args = parser.parse_args(argv)
    if args.dice_queries < 1 or args.dice_queries >= args.n_factuals:
        parser.error("--dice-queries must be in [1, n_factuals)")
    command = "python " + " ".join([os.path.relpath(__file__, Path.cwd()), *(sys.argv[1:] if argv is None else argv)])
    import_dice_ml()
    versions = {name: importlib.metadata.version(name) for name in ("dice-ml", "torch", "numpy", "pandas")}
    default_threads = torch.get_num_threads()

    before = cpu_busy()
    if before is not None:
        print(f"CPU used by other processes before the benchmark: {before:.0%} of all cores", flush=True)
    setup = build(args)
    print(f"model trained in {setup.fit_seconds:.1f} s, accuracy {setup.train_accuracy:.3f}; {setup.n_negative} "
          f"predicted negative; exported Sequential max |dp| = {setup.max_abs_diff:.1e}", flush=True)
    explainer = make_explainer(setup, args)
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads if threads > 0 else default_threads)
        label = f"{torch.get_num_threads()}" + (" (torch default)" if threads == 0 else "")
        print(f"--- torch threads = {label}", flush=True)
        monitor = CpuMonitor().start()
        rows = []
        for name, K in (("generic", 1), ("dice", 1), ("dice", 5)):
            rows.append(time_ours(setup, name, K, args))
            r = rows[-1]
            print(f"  recourse_sim {name} K={K}: {r.seconds:.3f} s, {r.rate:,.0f} CF/s, validity {r.validity:.3f}",
                  flush=True)
        ref, loop = time_dice_ml(setup, explainer, args)
        print(f"  dice-ml: {ref.rate:.4f} CF/s (whole call), {loop.rate:.4f} CF/s (loop only), validity "
              f"{ref.validity:.3f}", flush=True)
        busy = monitor.stop()
        load = load_average()
        results.append({"threads": label, "rows": rows, "dice_ml": ref, "dice_ml_loop": loop, "busy": busy,
                        "load": load})
    torch.set_num_threads(default_threads)

    text = markdown(setup, results, args, command, versions)
    md_path = Path(args.out)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    csv_path = md_path.with_suffix(".csv")
    write_csv(csv_path, results, setup.factuals.shape[0])
    print()
    print(text)
    print(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    main()
