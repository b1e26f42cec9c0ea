"""The searches of one SaTML round, as the reproduction runs them: seconds per model stack.

``cf_throughput.py`` and ``generator_throughput.py`` time one generator on thousands of factuals; a SaTML round is
the other shape: every system of a model stack (8 generators x 5 repetitions) searches for its own few recipients
(about 20 per system on the synthetic data, 50-100 on the real data), K = 5 copies each, every generator of the
scenario at once. There the kernel's lanes are mostly a task's tail, which is what this benchmark measures.

What is measured, per experiment of ``recourse_sim/scenarios/satml/`` named on the command line:

- the simulation runs to round ``--round`` (default 1) of the experiment as shipped (seed, data, models,
  generators); every ``search`` call of that round is recorded with the state of the generator it draws from;
- each recorded search (one per model stack: LR, MLP, deep ensemble) is replayed ``--repeats`` times from that
  state, with one torch intra-op thread as the simulation uses, after a warm-up replay; the best time counts;
- columns: systems S, recipients per system B, K, mean search steps and the share of individuals stopped by the
  iteration cap (both over the systems that search: not the no-recourse control), candidate-steps per second
  (sum over individuals of (steps + 1) x K, divided by the seconds), and a checksum (sum of |counterfactual|,
  float64) that must not change when only the speed of the code does.

Usage::

    python benchmarks/round_search.py                                  # credit default and overlapping
    python benchmarks/round_search.py --experiments moons --repeats 5

Writes ``benchmarks/results/round_search_cpu.md`` and ``.csv`` and prints the table. To compare with older code,
run the same command in a git worktree of it (``git worktree add /tmp/before <commit>``): the script imports the
package of the checkout it lives in.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; find machine.py when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import describe, uptime  # noqa: E402
from tables import write_report  # noqa: E402

import recourse_sim.simulation.model as simulation  # noqa: E402
from recourse_sim.device import torch_threads  # noqa: E402
from recourse_sim.experiments.satml import EXPERIMENTS, satml_scenarios  # noqa: E402
from recourse_sim.simulation.model import RecourseDynamics  # noqa: E402

DEFAULT_EXPERIMENTS = ("credit_default", "overlapping")
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "round_search_cpu.md"


def recorded_searches(experiment: str, round_: int) -> tuple[list[tuple], list[str]]:
    """Run ``experiment`` to ``round_`` and return that round's search calls (arguments and the generator's state
    before the call) with the name of each call's model stack."""
    scenario = satml_scenarios(only=[experiment])[0]
    raw = scenario.model_dump(mode="json", exclude_none=True)
    raw["rounds"] = round_
    scenario = type(scenario).from_dict(raw, source=f"satml/{experiment}, {round_} rounds")
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    calls: list[tuple] = []
    search = simulation.search

    def recording(model, factual, generators, context, *, settings, rng, **others):
        if dynamics.round == round_:
            calls.append((model, factual, generators, context, settings, rng.get_state()))
        return search(model, factual, generators, context, settings=settings, rng=rng, **others)

    simulation.search = recording
    try:
        while dynamics.round < round_:
            dynamics.step()
    finally:
        simulation.search = search
    return calls, [stack.name for stack in dynamics.stacks]


def replay(call: tuple, repeats: int) -> dict:
    """The best of ``repeats`` timed replays of one recorded search (after a warm-up), and what it found."""
    model, factual, generators, context, settings, state = call
    best, result = float("inf"), None
    with torch_threads(1):
        for attempt in range(repeats + 1):
            rng = torch.Generator().set_state(state)
            start = time.perf_counter()
            result = simulation.search(model, factual, generators, context, settings=settings, rng=rng)
            if attempt > 0:  # the first replay warms up (latent generators' VAEs are already trained)
                best = min(best, time.perf_counter() - start)
    S, B, K, _ = result.counterfactuals.shape
    caps = torch.tensor([g.max_steps for g in generators]).view(S, 1).expand(S, B)
    steps = result.steps[caps > 0]  # not the no-recourse control's, which does not search
    candidate_steps = float(((steps + 1) * K).sum())
    return {"S": S, "B": B, "K": K, "seconds": best, "mean_steps": float(steps.float().mean()),
            "at_cap": float((steps >= caps[caps > 0]).float().mean()), "candidate_steps_per_s": candidate_steps / best,
            "checksum": float(torch.nan_to_num(result.counterfactuals.double(), nan=0.0).abs().sum())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=list(DEFAULT_EXPERIMENTS), choices=EXPERIMENTS)
    parser.add_argument("--round", type=int, default=1, help="the round whose searches are replayed (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.round < 1 or args.repeats < 1:
        parser.error("--round and --repeats must be at least 1")

    load_before = uptime()
    rows = []
    for experiment in args.experiments:
        calls, stacks = recorded_searches(experiment, args.round)
        for call, stack in zip(calls, stacks):
            row = {"experiment": experiment, "model": stack, **replay(call, args.repeats)}
            rows.append(row)
            print(_row_md(row), flush=True)
    _write(args, rows, load_before, uptime())


HEADER = ("| experiment | model | S | B | K | seconds | mean steps | at the cap | candidate-steps/s | checksum |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")


def _row_md(r: dict) -> str:
    return (f"| {r['experiment']} | {r['model']} | {r['S']} | {r['B']} | {r['K']} | {r['seconds']:.3f} | "
            f"{r['mean_steps']:.1f} | {r['at_cap']:.0%} | {r['candidate_steps_per_s']:,.0f} | {r['checksum']:.6f} |")


def _write(args: argparse.Namespace, rows: list[dict], load_before: str, load_after: str) -> None:
    table = "\n".join([HEADER, *(_row_md(r) for r in rows)])
    total = sum(r["seconds"] for r in rows)
    md = f"""# The searches of one SaTML round, per model stack, CPU

Generated by `python benchmarks/round_search.py --experiments {' '.join(args.experiments)} --round {args.round}
--repeats {args.repeats}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.
Machine: {describe(threads=1)}.
Machine load (`uptime`), before: `{load_before}`; after: `{load_after}`.

Round {args.round} of each experiment as shipped; every search of the round replayed from the generator state it
started from, best of {args.repeats} after a warm-up, one intra-op thread. B is recipients per system, K copies
each; candidate-steps count (steps + 1) x K per individual. Total: {total:.2f} s.

{table}
"""
    write_report(args.out, md, rows)
    print()
    print(md)


if __name__ == "__main__":
    main()
