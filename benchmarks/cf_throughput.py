"""Counterfactual throughput of the batched search engine: batched call vs. a per-row loop of the same engine.

What is measured (issue: "counterfactuals per second for generic (100 steps max) on a 10-32-2 MLP with 10-feature
data at batch sizes 1k, 10k, 100k, batched vs. a per-row loop of the same engine"):

- data: two seeded Gaussian classes in R^10 (class means at -0.5 and +0.5 on every feature, unit variance,
  ``--n-train`` rows, balanced), unconstrained schema;
- model: ``MLPClassifier(hidden_sizes=(32,))``, i.e. Linear(10, 32)-ReLU-Linear(32, 1). The package's models
  have one logit output with a sigmoid, which is the same function class as a 10-32-2 softmax net
  (softmax over two logits = sigmoid of their difference). Trained briefly with mini-batches (batch 64,
  ``--epochs`` epochs) so setup takes well under a second;
- factuals: rows of the training data the model predicts negative (p(y=1) < 0.5), sampled with replacement to
  the batch size B;
- generator: ``generic`` (yloss + 0.1 ||x' - x||, threshold 0.5, step 0.01, at most 100 steps), engine
  defaults otherwise except ``SearchSettings(n_counterfactuals=K)``: K = 1 for the main table, one row with
  K = 5 at ``--k5-size``. Counterfactuals counted: B * K;
- "batched": one ``engine.search`` call with all B rows (S = 1 system);
- "per-row loop": the same ``engine.search`` called once per row (B = 1), timed on the first ``--loop-rows``
  factuals and extrapolated as a rate (CF/s), since looping over 100k rows would take hours;
- every configuration is warmed up once before timing; times are ``time.perf_counter`` wall seconds
  (with ``torch.cuda.synchronize`` on CUDA); the best of ``--repeats`` timed batched runs is reported.

Usage::

    python benchmarks/cf_throughput.py                       # CPU (+ CUDA when available), 1k/10k/100k
    python benchmarks/cf_throughput.py --device cpu --sizes 1000 10000
    python benchmarks/cf_throughput.py --device cpu --profile-size 10000   # plus a torch.profiler table

Writes ``--out`` (markdown, ``<device>`` is replaced by cpu/cuda) and a CSV next to it, and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; find machine.py when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import cpu, load_average  # noqa: E402

from recourse_sim.data.dataset import Dataset  # noqa: E402
from recourse_sim.data.schema import FeatureSchema  # noqa: E402
from recourse_sim.generators import catalogue  # noqa: E402
from recourse_sim.generators.api import make_context  # noqa: E402
from recourse_sim.generators.engine import search  # noqa: E402
from recourse_sim.generators.problem import SearchSettings  # noqa: E402
from recourse_sim.models.classifier import MLPClassifier  # noqa: E402

N_FEATURES = 10
HIDDEN = 32
TARGET_RATE_10K = 40_000.0  # CF/s at B = 10k on 2 CPU cores
TARGET_SPEEDUP = 30.0  # batched vs. per-row loop
DEFAULT_OUT = "benchmarks/results/cf_throughput_<device>.md"


# ----------------------------------------------------------------------------------------------- setup
def make_data(n: int, seed: int) -> Dataset:
    """Two Gaussian classes in R^10: N(-0.5, I) (y = 0) and N(+0.5, I) (y = 1), n/2 rows each."""
    g = torch.Generator().manual_seed(seed)
    n0 = n // 2
    X0 = torch.randn(n0, N_FEATURES, generator=g) - 0.5
    X1 = torch.randn(n - n0, N_FEATURES, generator=g) + 0.5
    X = torch.cat([X0, X1])
    y = torch.cat([torch.zeros(n0), torch.ones(n - n0)])
    schema = FeatureSchema.unconstrained([f"x{j}" for j in range(N_FEATURES)])
    return Dataset(X, y, schema, "gaussian10")


@dataclass
class Setup:
    device: torch.device
    data: Dataset
    model: MLPClassifier
    context: object
    pool: torch.Tensor  # (n_neg, d) rows predicted negative, on device
    train_accuracy: float
    fit_seconds: float


def build(device: torch.device, args: argparse.Namespace) -> Setup:
    data = make_data(args.n_train, args.seed)
    t0 = time.perf_counter()
    model = MLPClassifier(
        hidden_sizes=(HIDDEN,), epochs=args.epochs, batch_size=64, shuffle=True, device=str(device), seed=args.seed
    ).fit(data.X, data.y)
    fit_seconds = time.perf_counter() - t0
    X = data.X.to(device)
    pred = model.predict(X)
    accuracy = float((pred == data.y.to(device)).float().mean())
    pool = X[pred == 0]
    if pool.shape[0] == 0:
        raise SystemExit("the model predicts no negatives; nothing to explain")
    return Setup(device, data, model, make_context(data, device), pool, accuracy, fit_seconds)


def factuals(setup: Setup, B: int, seed: int) -> torch.Tensor:
    """B rows drawn with replacement from the predicted-negative pool, (1, B, d)."""
    g = torch.Generator().manual_seed(seed + B)
    idx = torch.randint(setup.pool.shape[0], (B,), generator=g).to(setup.device)
    return setup.pool[idx].unsqueeze(0)


# ---------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


COMPILE = False  # --compile: SearchSettings(compile=True)
BACKEND = "auto"  # --backend: the engine's search backend


def run_search(setup: Setup, x: torch.Tensor, K: int, seed: int):
    spec = catalogue.generic()  # threshold 0.5, step 0.01, max_steps 100
    rng = torch.Generator(device=setup.device).manual_seed(seed)
    settings = SearchSettings(n_counterfactuals=K, compile=COMPILE)
    return search(setup.model, x, [spec], setup.context, settings=settings, rng=rng, backend=BACKEND)


@dataclass
class Measure:
    seconds: float
    n_rows: int
    K: int
    mean_steps: float
    validity: float  # share of the B*K counterfactuals with p(y=1) >= 0.5
    converged: float  # share of the B individuals marked converged

    @property
    def cf(self) -> int:
        return self.n_rows * self.K

    @property
    def rate(self) -> float:
        return self.cf / self.seconds


def summarise(results, seconds: float, K: int) -> Measure:
    steps = torch.cat([r.steps.reshape(-1) for r in results]).float()
    proba = torch.cat([r.proba.reshape(-1) for r in results])
    conv = torch.cat([r.converged.reshape(-1) for r in results]).float()
    return Measure(
        seconds, int(steps.numel()), K, float(steps.mean()), float((proba >= 0.5).float().mean()), float(conv.mean())
    )


CPU_SECONDS: dict[tuple[int, int], float] = {}  # (B, K) -> process CPU seconds of the best batched run
WARMUP_SECONDS: dict[tuple[int, int], float] = {}  # (B, K) -> wall seconds of the warm-up (incl. compilation)


def time_batched(setup: Setup, B: int, K: int, args: argparse.Namespace) -> Measure:
    x = factuals(setup, B, args.seed)
    t0 = time.perf_counter()
    run_search(setup, x, K, args.seed)  # warm-up
    WARMUP_SECONDS[B, K] = time.perf_counter() - t0
    best = None
    for _ in range(args.repeats):
        sync(setup.device)
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_search(setup, x, K, args.seed)
        sync(setup.device)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or seconds < best[0]:
            best = (seconds, result, cpu)
    CPU_SECONDS[B, K] = best[2]
    return summarise([best[1]], best[0], K)


def time_loop(setup: Setup, n_rows: int, K: int, args: argparse.Namespace) -> Measure:
    """The same engine called once per row on the first ``n_rows`` factuals of the 10k draw."""
    x = factuals(setup, max(n_rows, 10_000), args.seed)[:, :n_rows]
    run_search(setup, x[:, :1], K, args.seed)  # warm-up
    results = []
    sync(setup.device)
    t0 = time.perf_counter()
    for i in range(n_rows):
        results.append(run_search(setup, x[:, i : i + 1], K, args.seed + i))
    sync(setup.device)
    return summarise(results, time.perf_counter() - t0, K)


def profile(setup: Setup, B: int, K: int, args: argparse.Namespace, path: Path) -> str:
    """torch.profiler table (CPU self time) of one batched call, written to ``path``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    x = factuals(setup, B, args.seed)
    run_search(setup, x, K, args.seed)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device.type == "cuda" else [])
    monitor = CpuMonitor().start()
    with torch_profile(activities=activities) as prof:
        t0 = time.perf_counter()
        run_search(setup, x, K, args.seed)
        sync(setup.device)
        seconds = time.perf_counter() - t0
    busy = monitor.stop()
    sort = "self_device_time_total" if setup.device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30)
    header = (
        f"# torch.profiler: one batched generic search, B={B}, K={K}, device={setup.device}, "
        f"torch.get_num_threads()={torch.get_num_threads()}, {seconds:.3f} s under the profiler, "
        f"other processes used {'?' if busy is None else f'{busy:.0%}'} of all cores\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{header}\n{table}\n")
    return header + table


# --------------------------------------------------------------------------------------------- reports
def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) seconds of all cores since boot, from Linux /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / tick, sum(values) / tick


class CpuMonitor:
    """Share of all cores used by *other* processes between ``start()`` and ``stop()``: busy time from
    /proc/stat minus this process's own CPU time. Other jobs on the machine make the timings pessimistic."""

    def start(self) -> CpuMonitor:
        self._stat, self._own = _proc_stat(), os.times()
        return self

    def stop(self) -> float | None:
        stat, own = _proc_stat(), os.times()
        if stat is None or self._stat is None:
            return None
        busy, total = stat[0] - self._stat[0], stat[1] - self._stat[1]
        mine = (own.user + own.system) - (self._own.user + self._own.system)
        return max(0.0, busy - mine) / max(total, 1e-9)


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all cores used by other processes over the next ``seconds``."""
    monitor = CpuMonitor().start()
    time.sleep(seconds)
    return monitor.stop()


def machine_info(device: torch.device) -> list[tuple[str, str]]:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    info = [
        ("date (UTC)", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")),
        ("device", str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")),
        ("CPU", cpu()),
        ("os.cpu_count() / usable cores", f"{os.cpu_count()} / {affinity}"),
        ("torch.get_num_threads()", str(torch.get_num_threads())),
        ("torch", torch.__version__),
        ("python", platform.python_version()),
        ("load average (1/5/15 min) at report time", load_average()),
    ]
    return info


def build_rows(batched: list[Measure], loops: dict[int, Measure]) -> list[dict]:
    rows = []
    for m in batched:
        loop = loops[m.K]
        rows.append({
            "K": m.K,
            "B": m.n_rows,
            "CFs": m.cf,
            "batched_s": m.seconds,
            "batched_cpu_s": CPU_SECONDS.get((m.n_rows, m.K), float("nan")),
            "warmup_s": WARMUP_SECONDS.get((m.n_rows, m.K), float("nan")),
            "batched_cf_per_s": m.rate,
            "mean_steps": m.mean_steps,
            "validity": m.validity,
            "converged": m.converged,
            "loop_cf_per_s": loop.rate,
            "loop_s_extrapolated": m.cf / loop.rate,
            "speedup": m.rate / loop.rate,
        })
    return rows


def markdown(device: torch.device, setup: Setup, rows: list[dict], loops: dict[int, Measure],
             args: argparse.Namespace, command: str, busy: float | None) -> str:
    lines = [f"# Counterfactual throughput: generic generator, 10-32-2 MLP, {device.type.upper()}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_info(device)]
    if busy is not None:
        lines.append(f"- CPU used by other processes during the measurements: {busy:.0%} of all cores "
                     "(should be ~0% for trustworthy numbers)")
    lines += [
        f"- command: `{command}`",
        f"- data: two Gaussian classes in R^{N_FEATURES} (means -0.5 / +0.5, unit variance), {args.n_train} rows, "
        f"seed {args.seed}",
        f"- model: MLPClassifier(hidden_sizes=({HIDDEN},)) = Linear({N_FEATURES}, {HIDDEN})-ReLU-Linear({HIDDEN}, 1): "
        "one logit + sigmoid, equivalent to a 10-32-2 softmax net; "
        f"trained {args.epochs} epochs, batch 64 ({setup.fit_seconds:.2f} s), training accuracy "
        f"{setup.train_accuracy:.3f}",
        f"- factuals: rows predicted negative ({setup.pool.shape[0]} in the pool), sampled with replacement to B",
        "- generator: generic (yloss + 0.1 ||x' - x||, threshold 0.5, step 0.01, max 100 steps), "
        "engine defaults otherwise" + (", compiled step (`SearchSettings(compile=True)`)" if args.compile else "")
        + f", search backend `{args.backend}`"
        + "; one search call with S = 1 system",
        "- CF/s counts B x K counterfactuals; validity = share of the B x K counterfactuals with p(y=1) >= 0.5; "
        "mean steps = gradient steps per individual (max 100)",
        f"- batched: one engine call with all B rows, best of {args.repeats} after one warm-up; "
        f"per-row loop: the same engine called once per row (B = 1), timed on {args.loop_rows} rows after one "
        "warm-up and **extrapolated** as a rate (loop seconds for B = B x K / loop CF/s)",
        "",
    ]
    for K in sorted({r["K"] for r in rows}):
        title = "Main table: K = 1 counterfactual per factual" if K == 1 else f"K = {K} counterfactuals per factual"
        loop = loops[K]
        lines += [
            f"## {title}",
            "",
            f"Per-row loop (K = {K}): {loop.rate:,.1f} CF/s over {loop.n_rows} rows in {loop.seconds:.2f} s "
            f"(mean steps {loop.mean_steps:.1f}, validity {loop.validity:.3f}).",
            "",
            f"| B | K | CFs | batched wall s | batched CPU s | warm-up s | batched CF/s | mean steps | validity | "
            "converged | per-row loop CF/s | per-row loop s (extrapolated) | speed-up |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            if r["K"] != K:
                continue
            lines.append(
                f"| {r['B']:,} | {r['K']} | {r['CFs']:,} | {r['batched_s']:.3f} | {r['batched_cpu_s']:.3f} | "
                f"{r['warmup_s']:.3f} | {r['batched_cf_per_s']:,.0f} | "
                f"{r['mean_steps']:.1f} | {r['validity']:.3f} | {r['converged']:.3f} | {r['loop_cf_per_s']:,.1f} | "
                f"{r['loop_s_extrapolated']:,.1f} | {r['speedup']:,.0f}x |"
            )
        lines.append("")
    lines += before_table(rows, args)
    ten_k = [r for r in rows if r["K"] == 1 and r["B"] == 10_000]
    if device.type == "cpu" and ten_k:
        r = ten_k[0]
        ok_rate = r["batched_cf_per_s"] >= TARGET_RATE_10K
        ok_speed = r["speedup"] >= TARGET_SPEEDUP
        lines += [
            "## Target (2 CPU cores, B = 10k, K = 1)",
            "",
            f"- >= {TARGET_RATE_10K:,.0f} CF/s: {r['batched_cf_per_s']:,.0f} CF/s -> {'met' if ok_rate else 'NOT met'}",
            f"- >= {TARGET_SPEEDUP:.0f}x the per-row loop: {r['speedup']:,.0f}x -> {'met' if ok_speed else 'NOT met'}",
            "",
        ]
    return "\n".join(lines)


def before_table(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """Rows of ``--before`` (an earlier run's CSV) next to this run's, matched on (B, K)."""
    if not args.before:
        return []
    with open(args.before, newline="") as fh:
        before = {(int(r["B"]), int(r["K"])): r for r in csv.DictReader(fh)}
    lines = [f"## Before / after (before: `{args.before}`)", "",
             "| B | K | before wall s | before CF/s | now wall s | now CF/s | ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        old = before.get((r["B"], r["K"]))
        if old is None:
            continue
        old_rate = float(old["batched_cf_per_s"])
        lines.append(f"| {r['B']:,} | {r['K']} | {float(old['batched_s']):.3f} | {old_rate:,.0f} | "
                     f"{r['batched_s']:.3f} | {r['batched_cf_per_s']:,.0f} | {r['batched_cf_per_s'] / old_rate:.2f}x |")
    return lines + [""]


def out_path(template: str, device: torch.device, n_devices: int) -> Path:
    if "<device>" in template:
        return Path(template.replace("<device>", device.type))
    path = Path(template)
    return path.with_name(f"{path.stem}_{device.type}{path.suffix}") if n_devices > 1 else path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU, plus CUDA when available")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="batch sizes B (K = 1)")
    parser.add_argument("--k5-size", type=int, default=10_000, help="batch size of the extra K = 5 row (0: skip)")
    parser.add_argument("--loop-rows", type=int, default=200, help="rows timed in the per-row loop")
    parser.add_argument("--repeats", type=int, default=3, help="timed batched runs per size (best is reported)")
    parser.add_argument("--n-train", type=int, default=2_000, help="training rows of the synthetic data")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (batch size 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=DEFAULT_OUT, help="markdown table; '<device>' becomes cpu/cuda; CSV next to it")
    parser.add_argument("--profile-size", type=int, default=0,
                        help="also profile one batched call of this size (K = 1) with torch.profiler")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads on CPU (0: torch's default, one per core)")
    parser.add_argument("--compile", action="store_true",
                        help="SearchSettings(compile=True): a compiled objective + gradient (warm-up s includes it)")
    parser.add_argument("--backend", choices=("auto", "compiled", "torch"), default="auto",
                        help="the search backend (auto: the compiled kernel on the CPU, the torch loop elsewhere)")
    parser.add_argument("--before", default="", help="an earlier run's CSV, shown next to this run's numbers")
    args = parser.parse_args(argv)
    global COMPILE, BACKEND
    COMPILE, BACKEND = args.compile, args.backend
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    if args.device == "auto":
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    elif args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    else:
        devices = [torch.device(args.device)]
    command = "python " + " ".join([os.path.relpath(__file__, Path.cwd()), *(sys.argv[1:] if argv is None else argv)])

    before = cpu_busy()
    if before is not None:
        print(f"CPU used by other processes before the benchmark: {before:.0%} of all cores", flush=True)
    for device in devices:
        setup = build(device, args)
        monitor = CpuMonitor().start()
        for k, v in machine_info(device):
            print(f"{k}: {v}")
        print(f"model trained in {setup.fit_seconds:.2f} s, training accuracy {setup.train_accuracy:.3f}, "
              f"{setup.pool.shape[0]} predicted-negative rows", flush=True)
        plan = [(B, 1) for B in args.sizes] + ([(args.k5_size, 5)] if args.k5_size > 0 else [])
        loops: dict[int, Measure] = {}
        batched: list[Measure] = []
        for K in sorted({K for _, K in plan}):
            loops[K] = time_loop(setup, args.loop_rows, K, args)
            print(f"[{device.type}] per-row loop K={K}: {loops[K].rate:,.1f} CF/s "
                  f"({args.loop_rows} rows in {loops[K].seconds:.2f} s, extrapolated)", flush=True)
        for B, K in plan:
            m = time_batched(setup, B, K, args)
            batched.append(m)
            print(f"[{device.type}] batched B={B:,} K={K}: {m.seconds:.3f} s, {m.rate:,.0f} CF/s, "
                  f"speed-up {m.rate / loops[K].rate:,.0f}x", flush=True)
        busy = monitor.stop()
        if busy is not None and busy > 0.05:
            print(f"WARNING: other processes used {busy:.0%} of all cores during the measurements; "
                  "the timings are pessimistic, rerun on an idle machine", flush=True)
        rows = build_rows(batched, loops)
        text = markdown(device, setup, rows, loops, args, command, busy)
        md_path = out_path(args.out, device, len(devices))
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(text)
        csv_path = md_path.with_suffix(".csv")
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["device", "threads", *rows[0].keys()])
            writer.writeheader()
            for r in rows:
                writer.writerow({"device": device.type, "threads": torch.get_num_threads(), **r})
        print()
        print(text)
        print(f"wrote {md_path} and {csv_path}")
        if args.profile_size > 0:
            prof_path = md_path.with_name(f"{md_path.stem}_profile.txt")
            print(profile(setup, args.profile_size, 1, args, prof_path))
            print(f"wrote {prof_path}")


if __name__ == "__main__":
    main()
