"""Population figures of a run: each system's decision boundary scored by its own system vs by its whole stack.

``recourse-sim run`` writes, for 2-D data, one population figure per model with a panel per generator, each shading
its system's decision boundary on a 150 x 150 grid. The boundary used to be scored by the whole model stack (every
system of every repetition) and one system's row kept; now only that system scores it
(``proba_positive(X, systems=[i])``). This script times the figures both ways on one finished run of a scenario
(default: the SaTML moons scenario, 3 models x 8 generators x 5 repetitions = 120 systems, cut to ``--rounds``
rounds), alternating old and new ``--repeats`` times in one process; the figures are identical.

Usage::

    python benchmarks/population_figures.py                      # SaTML moons, 1 round, 2 repeats

Writes ``benchmarks/results/population_figures_cpu.md`` and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "benchmarks"):  # run from a checkout without installing; find machine.py when imported
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from machine import describe, uptime  # noqa: E402

from recourse_sim.experiments import Scenario  # noqa: E402
from recourse_sim.experiments.runner import population_panels  # noqa: E402
from recourse_sim.reporting.populations import plot_population  # noqa: E402
from recourse_sim.simulation import RecourseDynamics  # noqa: E402

DEFAULT_SCENARIO = ROOT / "recourse_sim" / "scenarios" / "satml" / "moons.toml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "population_figures_cpu.md"


def whole_stack_scorer(dynamics: RecourseDynamics, system: int, initial: bool = False):
    """The scorer as it was: the whole stack scores the grid and one system's row is kept."""
    spec = dynamics.systems[system]
    stack = next(s for s in dynamics.stacks if s.name == spec.model)
    local = int((stack.systems == system).nonzero()[0])
    classifier = dynamics.initial_classifiers[spec.model] if initial else stack.classifier
    return lambda X: classifier.proba_positive(X)[local].cpu().numpy()


def time_figures(dynamics: RecourseDynamics, scorer, out: Path) -> float:
    """Seconds to draw and save every model's population figure with ``scorer`` as the run's scorer."""
    original = type(dynamics).scorer
    type(dynamics).scorer = scorer
    try:
        start = time.perf_counter()
        for model in dynamics.config.models:
            plot_population(population_panels(dynamics, model), path=out / f"population_{model}.png")
        return time.perf_counter() - start
    finally:
        type(dynamics).scorer = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="a scenario on 2-D data")
    parser.add_argument("--rounds", type=int, default=1, help="rounds run before drawing")
    parser.add_argument("--repeats", type=int, default=2, help="old/new pairs timed (all reported)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    load_before = uptime()
    raw = Scenario.from_toml(args.scenario).model_dump(mode="json", exclude_none=True)
    scenario = Scenario.from_dict({**raw, "rounds": args.rounds}, source=str(args.scenario))
    dynamics = RecourseDynamics(scenario.build(), seed=scenario.seed)
    dynamics.run()
    if dynamics.config.train.n_features != 2:
        sys.exit(f"{args.scenario}: population figures are drawn for 2-D data only")
    times = {"whole stack (before)": [], "own system (now)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            times["whole stack (before)"].append(time_figures(dynamics, whole_stack_scorer, Path(tmp)))
            times["own system (now)"].append(time_figures(dynamics, RecourseDynamics.scorer, Path(tmp)))
    best = {name: min(values) for name, values in times.items()}
    rows = [f"| {name} | {best[name]:.2f} | {' / '.join(f'{t:.2f}' for t in values)} | "
            f"{best['whole stack (before)'] / best[name]:.1f}x |" for name, values in times.items()]
    report = "\n".join([
        "# Population figures of a run: decision boundary scored by the system vs by its stack, CPU",
        "",
        f"- scenario: `{args.scenario.relative_to(ROOT) if args.scenario.is_relative_to(ROOT) else args.scenario}`, "
        f"{len(dynamics.systems)} systems, {len(dynamics.config.models)} figures (one per model), "
        f"{args.rounds} round(s) run first",
        f"- machine: {describe()}",
        f"- load (`uptime`) before: `{load_before}`; after: `{uptime()}`",
        "- command: `python benchmarks/population_figures.py" + "".join(
            f" {a}" for a in sys.argv[1:]) + "`",
        "",
        "| scorer | best seconds (all figures) | every repeat | speed-up |",
        "|---|---:|---|---:|",
        *rows,
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
