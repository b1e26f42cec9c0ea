"""Per-generator throughput: counterfactuals per second at batch 10,000 (K = 1) for every registered generator.

What is measured (issue: "report the per-generator throughput table (CF/s at batch 10k for every generator on
CPU; on CUDA too where a GPU is available)"):

- data, model and factuals exactly as in ``benchmarks/cf_throughput.py`` (its helpers are imported, not copied):
  two seeded Gaussian classes in R^10, ``MLPClassifier(hidden_sizes=(32,))`` = Linear(10, 32)-ReLU-Linear(32, 1)
  trained briefly with mini-batches, and B factuals drawn with replacement from the rows it predicts negative;
- every generator in ``recourse_sim.generators.GENERATORS`` with its catalogue defaults (threshold, step size,
  iteration cap, weights), ``SearchSettings(n_counterfactuals=1)``, one ``engine.search`` call with all B rows
  (S = 1 system), on one shared search context from ``make_context``;
- latent generators (revise, clue) train a VAE at their first search: the context's ``LatentCache`` keeps it,
  and every generator is warmed up once with the same context, model and factuals before timing, so VAE
  training is never inside the timed region (its time is reported separately as the warm-up);
- the median of ``--repeats`` timed calls is reported (``time.perf_counter``; ``torch.cuda.synchronize`` on
  CUDA); CF/s counts B x K counterfactuals, valid or not; validity = share with p(y=1) >= 0.5; mean steps =
  iterations per individual (at most the generator's cap, 100);
- on CPU, ``--threads 1 0`` measures once with ``torch.set_num_threads(1)`` and once with torch's default (0).

Usage::

    python benchmarks/generator_throughput.py                    # CPU (+ CUDA when available)
    python benchmarks/generator_throughput.py --device cpu --threads 1 --repeats 1

Writes ``benchmarks/results/generator_throughput_<device>.md`` and a CSV next to it, and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; reuse cf_throughput's helpers
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from cf_throughput import (  # noqa: E402
    HIDDEN, N_FEATURES, CpuMonitor, Setup, build, cpu_busy, factuals, machine_info, sync,
)
from machine import load_average  # noqa: E402

from recourse_sim.generators import GENERATORS  # noqa: E402
from recourse_sim.generators.engine import PARALLEL_ROWS, search  # noqa: E402
from recourse_sim.generators.problem import SearchSettings  # noqa: E402

DEFAULT_OUT = "benchmarks/results/generator_throughput_<device>.md"
SHARED_WARNING = (" -- **the machine was shared with other jobs: these timings are noisy and pessimistic; rerun on an "
                  "idle machine for trustworthy numbers**")


@dataclass
class Measure:
    generator: str
    strategy: str
    n_rows: int
    K: int
    seconds: float  # median of the timed calls
    all_seconds: list[float]
    warmup_seconds: float  # the first call (for latent generators: includes training the VAE)
    mean_steps: float
    validity: float
    converged: float

    @property
    def cf(self) -> int:
        return self.n_rows * self.K

    @property
    def rate(self) -> float:
        return self.cf / self.seconds


BACKEND = "auto"  # --backend: the engine's search backend


def run_one(setup: Setup, name: str, x: torch.Tensor, K: int, seed: int):
    spec = GENERATORS[name]()
    rng = torch.Generator(device=setup.device).manual_seed(seed)
    return spec, search(setup.model, x, [spec], setup.context, settings=SearchSettings(n_counterfactuals=K),
                        rng=rng, backend=BACKEND)


def time_generator(setup: Setup, name: str, x: torch.Tensor, K: int, args: argparse.Namespace) -> Measure:
    sync(setup.device)
    t0 = time.perf_counter()
    spec, _ = run_one(setup, name, x, K, args.seed)  # warm-up: fills the LatentCache for revise/clue
    sync(setup.device)
    warmup = time.perf_counter() - t0
    runs = []
    for _ in range(args.repeats):
        sync(setup.device)
        t0 = time.perf_counter()
        _, result = run_one(setup, name, x, K, args.seed)
        sync(setup.device)
        runs.append((time.perf_counter() - t0, result))
    result = runs[0][1]
    return Measure(
        generator=name, strategy=spec.strategy, n_rows=x.shape[1], K=K,
        seconds=statistics.median(s for s, _ in runs), all_seconds=[s for s, _ in runs], warmup_seconds=warmup,
        mean_steps=float(result.steps.float().mean()), validity=float((result.proba >= 0.5).float().mean()),
        converged=float(result.converged.float().mean()),
    )


def table(measures: list[Measure]) -> list[str]:
    lines = [
        "| generator | strategy | CFs | seconds | CF/s | mean steps | validity | converged | warm-up s (not timed) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measures:
        lines.append(
            f"| {m.generator} | {m.strategy} | {m.cf:,} | {m.seconds:.3f} | {m.rate:,.0f} | {m.mean_steps:.1f} | "
            f"{m.validity:.3f} | {m.converged:.3f} | {m.warmup_seconds:.2f} |"
        )
    return lines


def markdown(device: torch.device, setup: Setup, sections: list[dict], args: argparse.Namespace, command: str) -> str:
    lines = [f"# Per-generator throughput at B = {args.batch:,}, K = 1, {device.type.upper()}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_info(device) if k != "torch.get_num_threads()"]
    lines += [
        f"- command: `{command}`",
        "- the machine may be shared with other jobs: see the load average above and the CPU share used by other "
        "processes under each table (~0% for trustworthy numbers)",
        f"- data: two Gaussian classes in R^{N_FEATURES} (means -0.5 / +0.5, unit variance), {args.n_train} rows, "
        f"seed {args.seed}, unconstrained schema (as `benchmarks/cf_throughput.py`)",
        f"- model: MLPClassifier(hidden_sizes=({HIDDEN},)) = Linear({N_FEATURES}, {HIDDEN})-ReLU-Linear({HIDDEN}, 1), "
        f"trained {args.epochs} epochs, batch 64 ({setup.fit_seconds:.2f} s), training accuracy "
        f"{setup.train_accuracy:.3f}",
        f"- factuals: B = {args.batch:,} rows drawn with replacement from the {setup.pool.shape[0]} rows predicted "
        "negative; the same factuals for every generator",
        "- each generator: its catalogue defaults, `SearchSettings(n_counterfactuals=1)`, one `engine.search` call "
        f"with all B rows on one shared `make_context` context; one warm-up call, then the median of {args.repeats} "
        "timed calls (all in the CSV)",
        f"- revise and clue train a VAE at their first search (hidden 32, latent min(8, d) = {min(8, N_FEATURES)}, "
        "100 epochs): the context's `LatentCache` keeps it (one VAE per model, shared by revise and clue), so the "
        "first latent generator's warm-up call pays for the training and no timed call includes it; the warm-up "
        "column shows each generator's untimed first call",
        "- threads: with torch's default of one intra-op thread per core, every small op synchronises its threads; "
        "when other processes keep the cores busy those waits stall, and the same call can take 10-100x longer "
        "than with one thread (seen on this 2-core machine). On a shared machine the one-thread table is the more "
        "reliable one. The engine runs torch searches of fewer than "
        f"{PARALLEL_ROWS:,} candidate rows (S x B x K) on one thread by itself, so the torch-loop generators run "
        "single-threaded in both tables; the compiled kernel (the feature-space gradient generators, search backend "
        f"`{args.backend}`) uses as many threads as the table's torch setting",
        "- CF/s counts B x K counterfactuals, valid or not; validity = share with p(y=1) >= 0.5; converged = share "
        "of individuals meeting their generator's convergence rule; mean steps = iterations per individual (cap 100)",
        "- clue has no target class (it minimises predictive entropy), so its validity is low by design; eccco "
        "converges only when the gradient is small, which a ReLU network rarely allows: it runs to the cap",
        "",
    ]
    before = {}
    if args.before:
        with open(args.before, newline="") as fh:
            before = {(r["threads"], r["generator"]): float(r["cf_per_s"]) for r in csv.DictReader(fh)}
    for sec in sections:
        lines += [f"## torch threads = {sec['threads']}", ""]
        lines += table(sec["measures"])
        lines.append("")
        pairs = [(m, before.get((sec["threads"], m.generator))) for m in sec["measures"]]
        if any(old for _, old in pairs):
            lines += [f"Before / after (before: `{args.before}`, same threads setting):", "",
                      "| generator | before CF/s | now CF/s | ratio |", "|---|---:|---:|---:|"]
            lines += [f"| {m.generator} | {old:,.0f} | {m.rate:,.0f} | {m.rate / old:.2f}x |"
                      for m, old in pairs if old]
            lines.append("")
        if sec["busy"] is not None:
            lines.append(f"- CPU used by other processes during these measurements: {sec['busy']:.0%} of all cores"
                         + (SHARED_WARNING if sec["busy"] > 0.05 else ""))
        lines.append(f"- load average (1/5/15 min) after these measurements: {sec['load']}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, plus CUDA when available")
    parser.add_argument("--batch", type=int, default=10_000, help="factuals per call (B)")
    parser.add_argument("--generators", nargs="+", default=None, help="subset of GENERATORS (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per generator (median reported)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                        help="CPU only: torch thread counts, in order (0: torch's default)")
    parser.add_argument("--n-train", type=int, default=2_000, help="training rows of the synthetic data")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (batch size 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help="markdown table; '<device>' becomes cpu/cuda; CSV next to it")
    parser.add_argument("--backend", choices=("auto", "compiled", "torch"), default="auto",
                        help="the gradient search's backend (auto: the compiled kernel on the CPU where it applies)")
    parser.add_argument("--before", default="", help="an earlier run's CSV, shown next to this run's numbers")
    args = parser.parse_args(argv)
    global BACKEND
    BACKEND = args.backend

    if args.device == "auto":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    else:
        devices = [torch.device(args.device)]
    names = list(GENERATORS) if args.generators is None else args.generators
    for name in names:
        GENERATORS[name]  # fail early, with the registry's "did you mean" message
    command = "python " + " ".join([os.path.relpath(__file__, Path.cwd()), *(sys.argv[1:] if argv is None else argv)])
    default_threads = torch.get_num_threads()

    before = cpu_busy()
    if before is not None:
        print(f"CPU used by other processes before the benchmark: {before:.0%} of all cores", flush=True)
    for device in devices:
        setup = build(device, args)
        x = factuals(setup, args.batch, args.seed)
        print(f"[{device.type}] model trained in {setup.fit_seconds:.2f} s, accuracy {setup.train_accuracy:.3f}",
              flush=True)
        sections = []
        for threads in (args.threads if device.type == "cpu" else [0]):
            torch.set_num_threads(threads if threads > 0 else default_threads)
            label = f"{torch.get_num_threads()}" + (" (torch default)" if threads == 0 else "")
            monitor = CpuMonitor().start()
            measures = []
            for name in names:
                m = time_generator(setup, name, x, 1, args)
                measures.append(m)
                print(f"[{device.type}, threads {label}] {name:>13}: {m.seconds:7.3f} s, {m.rate:>9,.0f} CF/s, "
                      f"steps {m.mean_steps:5.1f}, validity {m.validity:.3f} (warm-up {m.warmup_seconds:.2f} s)",
                      flush=True)
            busy = monitor.stop()
            load = load_average()
            sections.append({"threads": label, "measures": measures, "busy": busy, "load": load})
        torch.set_num_threads(default_threads)

        text = markdown(device, setup, sections, args, command)
        md_path = Path(args.out.replace("<device>", device.type))
        if "<device>" not in args.out and len(devices) > 1:
            md_path = md_path.with_name(f"{md_path.stem}_{device.type}{md_path.suffix}")
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(text)
        csv_path = md_path.with_suffix(".csv")
        with csv_path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["device", "threads", "generator", "strategy", "B", "K", "CFs", "seconds", "cf_per_s",
                             "mean_steps", "validity", "converged", "warmup_seconds", "timed_seconds"])
            for sec in sections:
                for m in sec["measures"]:
                    writer.writerow([device.type, sec["threads"], m.generator, m.strategy, m.n_rows, m.K, m.cf,
                                     m.seconds, m.rate, m.mean_steps, m.validity, m.converged, m.warmup_seconds,
                                     " ".join(f"{s:.4f}" for s in m.all_seconds)])
        print()
        print(text)
        print(f"wrote {md_path} and {csv_path}")


if __name__ == "__main__":
    main()
