"""Mutation check: plant one small bug at a time in a *copy* of the package and see whether the tests notice.

A mutant is one syntactic change (``+`` to ``-``, ``<`` to ``<=``, a constant changed, a condition negated, two
call arguments swapped, ...) in one of the core modules. For each mutant the script writes the mutated module
into a temporary copy of the repository (``recourse_sim/``, ``tests/``, ``scenarios/``, ``pyproject.toml``; the
working tree is never touched), runs the test files that cover that module with ``pytest -x -q`` and the copy
first on ``sys.path`` (checked before the first mutant: ``import recourse_sim`` must resolve to the copy, not
the editable install), and records

- **killed**: some test failed (or the mutated package failed to import);
- **survived**: every test passed: either the tests miss a bug, or the mutant is equivalent (no behaviour
  change) or harmless; each survivor must be killed by a new test or justified in ``docs/mutation.md``;
- **timeout**: the tests ran past the per-mutant limit (an infinite loop counts as detected, but is listed).

The mutator is a small stdlib ``ast`` pass (no mutmut/cosmic-ray dependency): it finds every mutation site,
draws a seeded sample spread evenly over the modules, and applies each mutant by replacing only the source text
of the mutated node, so the rest of the file stays byte-identical (the diff is one expression). Annotations,
docstrings, f-strings and the arguments of exceptions/warnings/logging calls are not mutated: under
``from __future__ import annotations`` annotations are never evaluated, and messages are not behaviour.

``--issue`` runs instead the named mutants of issue 17 (the bugs that once survived the suite), each a textual
patch, against the test files that must kill them.

Usage (from the repository root; see docs/mutation.md)::

    nice -n 19 python benchmarks/mutation_check.py --max-mutants 50 --seed 17
    nice -n 19 python benchmarks/mutation_check.py --issue
    python benchmarks/mutation_check.py --list --modules recourse_sim/models/network.py
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Core modules and the test files that cover them (run in this order: the fastest, most direct first).
COVERAGE: dict[str, list[str]] = {
    "recourse_sim/metrics/mmd.py": ["tests/test_metrics.py"],
    "recourse_sim/metrics/model_shift.py": ["tests/test_metrics.py", "tests/test_independent_truth.py"],
    "recourse_sim/metrics/performance.py": ["tests/test_metrics.py"],
    "recourse_sim/metrics/recourse.py": ["tests/test_metrics.py", "tests/test_simulation.py"],
    "recourse_sim/generators/engine.py": ["tests/test_independent_truth.py", "tests/test_engine.py",
                                          "tests/test_generator_catalogue.py"],
    "recourse_sim/generators/terms.py": ["tests/test_independent_truth.py", "tests/test_engine.py",
                                         "tests/test_generator_catalogue.py"],
    "recourse_sim/models/network.py": ["tests/test_independent_truth.py", "tests/test_models.py"],
    "recourse_sim/simulation/model.py": ["tests/test_simulation.py", "tests/test_metrics.py"],
    "recourse_sim/simulation/evaluation.py": ["tests/test_simulation.py", "tests/test_metrics.py"],
    "recourse_sim/experiments/store.py": ["tests/test_independent_truth.py", "tests/test_scenario_cli.py"],
    "recourse_sim/experiments/sweep.py": ["tests/test_independent_truth.py", "tests/test_sweep.py"],
}
DEFAULT_MODULES = list(COVERAGE)
COPIED = ["recourse_sim", "tests", "scenarios", "pyproject.toml"]
NOT_MUTATED_CALLS = ("Error", "Warning", "warn", "print", "debug", "info", "warning", "error", "exception")

#: Issue 17's surviving mutants: (name, module, original text, mutated text, test files that must kill it).
ISSUE_MUTANTS: list[tuple[str, str, str, str, list[str]]] = [
    ("distance cost sign flipped", "recourse_sim/generators/catalogue.py",
     'costs=((lambda_cost, Distance()),), threshold=threshold, step_size=step_size, max_steps=max_steps\n',
     'costs=((-lambda_cost, Distance()),), threshold=threshold, step_size=step_size, max_steps=max_steps\n',
     ["tests/test_independent_truth.py"]),
    ("distance term itself negated", "recourse_sim/generators/terms.py",
     "        return _stack_norm(batch.x_std - batch.factual_std.unsqueeze(2))\n",
     "        return -_stack_norm(batch.x_std - batch.factual_std.unsqueeze(2))\n",
     ["tests/test_independent_truth.py"]),
    ("Adam without second-moment bias correction", "recourse_sim/models/network.py",
     "denom = (v / bias2).sqrt_().add_(adam.eps)", "denom = v.sqrt().add_(adam.eps)",
     ["tests/test_independent_truth.py", "tests/test_models.py"]),
    ("Adam betas swapped", "recourse_sim/models/network.py",
     "        m.lerp_(grad, 1.0 - adam.beta1)\n        v.mul_(adam.beta2).addcmul_(grad, grad, value=1.0 - adam.beta2)\n",
     "        m.lerp_(grad, 1.0 - adam.beta2)\n        v.mul_(adam.beta1).addcmul_(grad, grad, value=1.0 - adam.beta1)\n",
     ["tests/test_independent_truth.py", "tests/test_models.py"]),
    ("atomic write replaced by an in-place write", "recourse_sim/experiments/sweep.py",
     '    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)\n',
     '    fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), str(path)\n',
     ["tests/test_independent_truth.py", "tests/test_sweep.py"]),
    ("run directory written in place", "recourse_sim/experiments/store.py",
     '    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))\n',
     '    out.mkdir(exist_ok=True)\n    staging = out\n',
     ["tests/test_independent_truth.py", "tests/test_scenario_cli.py"]),
    ("credit default SEX codes swapped, names kept", "recourse_sim/data/real.py",
     '"SEX": {1: "male", 2: "female"}', '"SEX": {2: "male", 1: "female"}',
     ["tests/test_independent_truth.py", "tests/test_real_data.py"]),
]


# ---------------------------------------------------------------------------------------------- mutants
@dataclass(frozen=True)
class Mutant:
    module: str
    line: int
    description: str
    start: int  # byte offsets into the module's UTF-8 source
    end: int
    replacement: str

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]


_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
          ast.Pow: ast.Mult}
_AUGOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.BitOr: ast.BitAnd,
          ast.BitAnd: ast.BitOr}
_CMPOP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**",
           ast.BitOr: "|", ast.BitAnd: "&", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
           ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


def _offsets(source: bytes) -> list[int]:
    starts, total = [0], 0
    for line in source.splitlines(keepends=True):
        total += len(line)
        starts.append(total)
    return starts


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes never mutated: annotations, docstrings, f-strings, exception/log messages."""
    skip: set[int] = set()

    def drop(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            drop(node.returns)
            for arg in [*node.args.args, *node.args.kwonlyargs, *node.args.posonlyargs,
                        node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    drop(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            drop(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            drop(node)
        elif isinstance(node, ast.Call) and _call_name(node).endswith(NOT_MUTATED_CALLS):
            drop(node)
        elif isinstance(node, ast.Raise):
            drop(node.exc)
    return skip


def find_mutants(module: str, root: Path = ROOT) -> list[Mutant]:
    """Every mutation site of ``module`` (a path relative to ``root``), in source order."""
    source = (root / module).read_bytes()
    tree = ast.parse(source)
    starts = _offsets(source)
    skip = _skipped_nodes(tree)
    original = ast.dump(tree)
    found: list[Mutant] = []

    def span(node: ast.AST) -> tuple[int, int]:
        return starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset

    def text(node: ast.AST) -> str:
        a, b = span(node)
        return source[a:b].decode()

    def between(node: ast.AST, left: ast.AST, right: ast.AST, old: str | None, new: str) -> str:
        """The node's text with the operator between ``left`` and ``right`` replaced (operands untouched)."""
        a, b = span(node)
        _, lb = span(left)
        ra, _ = span(right)
        middle = source[lb:ra].decode()
        if old is None:  # comparison: the whole operator, keeping surrounding whitespace and parentheses
            stripped = middle.strip(" )(")
            middle = middle.replace(stripped, new, 1)
        else:
            middle = middle.replace(old, new, 1)
        return source[a:lb].decode() + middle + source[ra:b].decode()

    def add(node: ast.AST, description: str, replacement: str, target: ast.AST | None = None) -> None:
        target = target or node
        a, b = span(target)
        mutant = Mutant(module, node.lineno, description, a, b, replacement)
        try:  # keep only mutants that parse and really change the program
            mutated = ast.parse(mutant.apply(source))
        except SyntaxError:
            return
        if ast.dump(mutated) != original:
            found.append(mutant)

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOP:
            new = _BINOP[type(node.op)]
            add(node, f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}",
                between(node, node.left, node.right, _SYMBOL[type(node.op)], _SYMBOL[new]))
        elif isinstance(node, ast.AugAssign) and type(node.op) in _AUGOP:
            new = _AUGOP[type(node.op)]
            old_sym = _SYMBOL[type(node.op)] + "="
            add(node, f"{old_sym} -> {_SYMBOL[new]}=", between(node, node.target, node.value, old_sym, _SYMBOL[new] + "="))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOP:
            old, new = _SYMBOL[type(node.ops[0])], _SYMBOL[_CMPOP[type(node.ops[0])]]
            # "is not" / "not in" contain the shorter symbol: replace the whole operator text between operands.
            add(node, f"{old} -> {new}", between(node, node.left, node.comparators[0], None, new))
        elif isinstance(node, ast.BoolOp):
            word, other = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            add(node, f"{word} -> {other}", f" {other} ".join(f"({text(v)})" for v in node.values))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            add(node, "not x -> x", f"({text(node.operand)})")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
            add(node, "-x -> x", f"({text(node.operand)})")
        elif isinstance(node, (ast.If, ast.While, ast.IfExp)) and not isinstance(node.test, ast.UnaryOp):
            add(node.test, "condition negated", f"not ({text(node.test)})")
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
            value = node.value
            new_value = value + 1 if isinstance(value, int) else (1.0 if value == 0 else value * 2)
            add(node, f"constant {value!r} -> {new_value!r}", repr(new_value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            add(node, f"{node.value} -> {not node.value}", repr(not node.value))
        elif isinstance(node, ast.Call) and len(node.args) >= 2 and not any(isinstance(a, ast.Starred) for a in node.args[:2]):
            first, second = node.args[0], node.args[1]
            a0, b0 = span(first)
            a1, b1 = span(second)
            if text(first) != text(second):
                call_a, call_b = span(node)
                segment = source[call_a:call_b].decode()
                o = call_a
                swapped = (segment[: a0 - o] + text(second) + segment[b0 - o : a1 - o] + text(first)
                           + segment[b1 - o :])
                add(node, f"args swapped in {_call_name(node) or 'call'}({text(first)[:20]}, {text(second)[:20]})",
                    swapped)
    found.sort(key=lambda m: (m.start, m.description))
    return found


def sample(modules: list[str], max_mutants: int, seed: int) -> list[Mutant]:
    """A seeded sample spread round-robin over the modules (each module's own mutants in random order)."""
    rng = random.Random(seed)
    pools = {m: find_mutants(m) for m in modules}
    for pool in pools.values():
        rng.shuffle(pool)
    chosen: list[Mutant] = []
    while len(chosen) < max_mutants and any(pools.values()):
        for module in modules:
            if pools[module] and len(chosen) < max_mutants:
                chosen.append(pools[module].pop())
    return chosen


# ---------------------------------------------------------------------------------------------- running
def make_copy() -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="recourse_mutation_"))
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy2(src, workdir / name)
    return workdir


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a stale .pyc of a mutant must never serve the next one
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def check_isolation(copy: Path) -> None:
    """``import recourse_sim`` in the test environment must resolve to the copy (not the editable install)."""
    out = subprocess.run([sys.executable, "-c", "import recourse_sim; print(recourse_sim.__file__)"], cwd=copy,
                         env=_env(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"isolation check failed: recourse_sim imports from {out}, not from the copy {copy}")


def run_tests(copy: Path, tests: list[str], timeout: float, deselect: tuple[str, ...] = (),
              stop_first: bool = True) -> tuple[str, float, str, list[str]]:
    """('passed' | 'failed' | 'timeout', seconds, first failure line, failing test ids)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "--no-header", *tests]
    if stop_first:
        cmd.insert(3, "-x")
    for node in deselect:
        cmd += ["--deselect", node]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, "", []
    seconds = time.perf_counter() - start
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    ids = [line.split(" ", 1)[1].split(" - ", 1)[0] for line in failures if " " in line]
    first = failures[0] if failures else (lines[-1] if lines else "")
    return ("passed" if proc.returncode == 0 else "failed"), seconds, first[:160], ids


@dataclass
class Outcome:
    name: str
    where: str
    description: str
    status: str
    seconds: float
    detail: str


def run_mutant(copy: Path, module: str, mutated: bytes, tests: list[str], timeout: float,
               deselect: tuple[str, ...]) -> tuple[str, float, str]:
    target = copy / module
    original = target.read_bytes()
    target.write_bytes(mutated)
    try:
        status, seconds, detail, _ = run_tests(copy, tests, timeout, deselect)
    finally:
        target.write_bytes(original)
    return {"failed": "killed", "passed": "survived", "timeout": "timeout"}[status], seconds, detail


def write_report(outcomes: list[Outcome], path: Path, header: str) -> str:
    counts = {s: sum(o.status == s for o in outcomes) for s in ("killed", "survived", "timeout")}
    lines = [
        "# Mutation check", "", header, "",
        f"**{len(outcomes)} mutants tried: {counts['killed']} killed, {counts['survived']} survived, "
        f"{counts['timeout']} timed out.** Survivors are justified or killed in `docs/mutation.md`.", "",
        "| # | mutant | file:line | description | result | s | first failure |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, o in enumerate(outcomes, 1):
        detail = o.detail.replace("|", "\\|")
        desc = o.description.replace("|", "\\|")
        lines.append(f"| {i} | {o.name} | `{o.where}` | `{desc}` | **{o.status}** | {o.seconds:.0f} | {detail} |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=DEFAULT_MODULES, help="modules to mutate (repo-relative)")
    parser.add_argument("--max-mutants", type=int, default=40)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--tests", nargs="+", help="test files to run for every mutant (default: per module)")
    parser.add_argument("--timeout", type=float, default=0, help="seconds per mutant (default: 3x baseline + 30)")
    parser.add_argument("--out", type=Path, help="report path (default: benchmarks/results/mutation.md, with "
                        "--issue mutation_issue.md)")
    parser.add_argument("--issue", action="store_true", help="run issue 17's named mutants instead of a sample")
    parser.add_argument("--list", action="store_true", help="list the sampled mutants and exit")
    parser.add_argument("--pick", nargs="+", type=int, help="rerun only these numbers (M<k>) of the same sample")
    args = parser.parse_args(argv)
    args.out = args.out or ROOT / "benchmarks" / "results" / ("mutation_issue.md" if args.issue else "mutation.md")

    if args.issue:
        plan = []
        for name, module, old, new, tests in ISSUE_MUTANTS:
            source = (ROOT / module).read_bytes()
            if source.count(old.encode()) != 1:
                raise SystemExit(f"{name}: the original text is not found exactly once in {module}; update ISSUE_MUTANTS")
            line = source[: source.index(old.encode())].count(b"\n") + 1
            plan.append((name, f"{module}:{line}", " ".join(new.split())[:70], module, source.replace(old.encode(), new.encode()),
                         args.tests or tests))
    else:
        mutants = sample(args.modules, args.max_mutants, args.seed)
        plan = []
        for i, m in enumerate(mutants, 1):
            plan.append((f"M{i}", f"{m.module}:{m.line}", f"{m.description}: {' '.join(m.replacement.split())[:60]}",
                         m.module, m.apply((ROOT / m.module).read_bytes()), args.tests or COVERAGE.get(m.module, ["tests"])))
    if args.pick:
        plan = [p for p in plan if p[0] in {f"M{k}" for k in args.pick}]
    if args.list:
        for name, where, description, *_ in plan:
            print(f"{name:4} {where:48} {description}")
        return 0

    copy = make_copy()
    outcomes: list[Outcome] = []
    skipped: set[str] = set()
    try:
        check_isolation(copy)
        baselines: dict[tuple[str, ...], tuple[float, tuple[str, ...]]] = {}
        for tests in dict.fromkeys(tuple(p[5]) for p in plan):
            status, seconds, detail, failing = run_tests(copy, list(tests), timeout=1800, stop_first=False)
            if status == "timeout" or (status == "failed" and not failing):
                raise SystemExit(f"baseline failed for {list(tests)}: {detail}")
            if failing:  # already failing without any mutant (e.g. work in progress): leave them out, say so
                print(f"warning: deselecting {len(failing)} test(s) failing on the unmutated copy: {failing}")
                skipped.update(failing)
            baselines[tests] = (seconds, tuple(failing))
            print(f"baseline {' '.join(tests)}: {seconds:.0f} s", flush=True)
        for name, where, description, module, mutated, tests in plan:
            base_seconds, deselect = baselines[tuple(tests)]
            timeout = args.timeout or 3 * base_seconds + 30
            status, seconds, detail = run_mutant(copy, module, mutated, list(tests), timeout, deselect)
            outcomes.append(Outcome(name, where, description, status, seconds, detail if status == "killed" else ""))
            print(f"{name:4} {status:8} {seconds:5.0f} s  {where}  {description}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)

    kind = "issue 17's named mutants" if args.issue else f"{len(plan)} sampled mutants, seed {args.seed}"
    header = (f"Generated by `benchmarks/mutation_check.py` ({kind}; modules: "
              f"{', '.join(sorted({p[3] for p in plan}))}).")
    if skipped:
        header += (f" Deselected because they failed before any mutation (work in progress in the tree): "
                   f"{', '.join(f'`{t}`' for t in sorted(skipped))}.")
    print(write_report(outcomes, args.out, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
