"""Sweep files: one scenario plus a ``[grid]`` of parameter values and ``n_seeds``, expanded into cells.

A sweep file is a normal scenario file with two optional additions::

    n_seeds = 3                       # every grid point runs with seed, seed + 1, seed + 2

    [grid]                            # dotted parameter path = list of values; the cells are the product
    recourse_share = [0.05, 0.1]
    "data.name" = ["overlapping", "moons"]
    "generators.generic.threshold" = [0.5, 0.9]   # a generator (or model) by label, name or index
    "models.0.hidden_sizes" = [[16], [32, 32]]     # list-valued fields are swept the same way

Only the ``[grid]`` table defines grid axes, so a list elsewhere in the file always means what it means in a
scenario (``models``, ``generators``, ``hidden_sizes``); a list for a single-valued key outside ``[grid]``
is refused with a hint to move it there. Inside ``[grid]``, TOML's dotted keys (``data.name = [...]``) and
quoted keys (``"data.name" = [...]``) are the same path.

Each cell is a concrete, validated :class:`Scenario`; its id is a hash of its resolved configuration, so it
is stable across runs and machines. Every cell is validated (and every distinct dataset loaded) before
anything runs.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recourse_sim.errors import ConfigError, RecourseSimError
from recourse_sim.experiments.scenario import Scenario, read_toml, resolve_data_path

#: Keys a sweep file may have on top of a scenario's.
SWEEP_KEYS = ("n_seeds", "grid")
#: Keys whose value is a list in a plain scenario (so a list there is not a misplaced grid axis).
_LIST_FIELDS = {"models", "generators", "hidden_sizes"}
#: Columns every tidy results table already has; grid axes may not shadow them.
_RESERVED = {"cell_id", "seed", "system", "model", "generator", "repetition", "round", "metric", "value"}


@dataclass(frozen=True)
class Cell:
    """One concrete scenario of a sweep: its id, seed, the value of each grid axis, and the scenario."""

    id: str
    seed: int
    axes: dict[str, Any]
    scenario: Scenario
    config: dict[str, Any] = field(repr=False)  # the resolved scenario as JSON-able data (what workers get)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.axes.items()] + [f"seed={self.seed}"]
        return ", ".join(parts)


@dataclass
class Sweep:
    """A base scenario, grid axes (dotted path -> values, in file order) and the number of seeds."""

    base: Scenario
    axes: dict[str, list[Any]]
    n_seeds: int = 1
    source: str = "sweep"
    cells: list[Cell] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.cells = _expand(self)

    @property
    def name(self) -> str:
        return self.base.name

    @property
    def seeds(self) -> list[int]:
        return [self.base.seed + k for k in range(self.n_seeds)]

    @property
    def fingerprint(self) -> str:
        """Hash of the resolved sweep: its axes and the ids of all its cells, in order."""
        payload = json.dumps({"axes": list(self.axes.items()), "cells": [c.id for c in self.cells]}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def shape(self) -> str:
        """``'recourse_share: 2 x data.name: 2 x 3 seeds = 12 cells'``."""
        parts = [f"{path}: {len(values)}" for path, values in self.axes.items()]
        parts.append(f"{self.n_seeds} seed{'s' if self.n_seeds != 1 else ''}")
        return " x ".join(parts) + f" = {len(self.cells)} cell{'s' if len(self.cells) != 1 else ''}"

    def to_toml(self) -> str:
        """The resolved sweep (every default written out), loadable with :func:`load_sweep`."""
        import tomli_w

        data = self.base.model_dump(mode="json", exclude_none=True)
        data["n_seeds"] = self.n_seeds
        data["grid"] = {path: values for path, values in self.axes.items()}
        return tomli_w.dumps(data)

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "sweep") -> Sweep:
        raw = dict(raw)
        for key in raw:
            if key not in (*Scenario.model_fields, *SWEEP_KEYS):
                known = [*Scenario.model_fields, *SWEEP_KEYS]
                close = difflib.get_close_matches(key, known, n=1)
                raise ConfigError(f"{source}: {key}", "unknown key", f"a known key: {', '.join(known)}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))
        n_seeds = raw.pop("n_seeds", 1)
        if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
            raise ConfigError(f"{source}: n_seeds", n_seeds, "an integer >= 1 (the cells run seeds seed, seed+1, ...)")
        grid = raw.pop("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError(f"{source}: grid", grid, "a table mapping dotted parameter paths to lists of values, "
                              "e.g. [grid] rounds = [10, 20]")
        axes = _flatten(grid, source)
        base = _base_scenario(raw, source)
        return cls(base=base, axes=axes, n_seeds=n_seeds, source=source)


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep (or plain scenario) TOML file; every cell is validated. A relative CSV
    ``data.path`` (also in ``[grid]``) is resolved against the file's directory, as in a scenario file."""
    raw = resolve_data_path(read_toml(path, "sweep file"), Path(path).parent)
    grid = raw.get("grid")
    if isinstance(grid, dict):
        nested = grid.get("data") if isinstance(grid.get("data"), dict) else {}
        paths = grid.get("data.path", nested.get("path"))
        if isinstance(paths, list):
            resolved = [str(Path(path).parent / p) if isinstance(p, str) and not Path(p).is_absolute() else p
                        for p in paths]
            grid = dict(grid)
            if "data.path" in grid:
                grid["data.path"] = resolved
            else:
                grid["data"] = {**grid["data"], "path": resolved}
            raw = {**raw, "grid": grid}
    return Sweep.from_dict(raw, source=str(path))


def is_sweep_file(path: str | Path) -> bool:
    """True when the file parses as TOML and has a ``[grid]`` table or ``n_seeds``."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return any(key in raw for key in SWEEP_KEYS)


def check_data(sweep: Sweep) -> None:
    """Load every distinct dataset of the sweep once (per seed), so bad data fails before any cell runs; check
    that every cell can be written back as TOML and that its estimated memory fits (as ``run`` does)."""
    from recourse_sim.experiments.runner import check_memory, check_writable_scenario

    for cell in sweep.cells:
        try:
            check_writable_scenario(cell.scenario)
            check_memory(cell.scenario)
        except ConfigError as error:
            field = f"{sweep.source}: {error.field} ({cell.describe()})"
            raise ConfigError(field, error.value, error.allowed) from None
    seen: set[str] = set()
    for cell in sweep.cells:
        key = json.dumps([cell.config["data"], cell.seed], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            cell.scenario.load_data()
        except ConfigError:
            raise
        except RecourseSimError as error:
            data = cell.scenario.data
            value = data.path if data.name == "csv" else data.name
            raise ConfigError(f"{sweep.source}: data ({cell.describe()})", value,
                              f"a dataset that loads cleanly; {error}") from None


# ---------------------------------------------------------------------------------------------- internals
def _flatten(grid: dict[str, Any], source: str, prefix: str = "") -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, value in grid.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            axes.update(_flatten(value, source, prefix=f"{path}."))
            continue
        if not isinstance(value, list):
            raise ConfigError(f"{source}: grid.{path}", value, f"a non-empty list of values, e.g. {path} = [{value!r}]")
        if not value:
            raise ConfigError(f"{source}: grid.{path}", value, "a non-empty list of values (an empty axis has no cells)")
        canonical = [json.dumps(v, sort_keys=True) for v in value]
        repeated = sorted({v for v in canonical if canonical.count(v) > 1})
        if repeated:
            raise ConfigError(f"{source}: grid.{path}", value, f"distinct values ({', '.join(repeated)} repeated)")
        if path in ("seed", "n_seeds"):
            raise ConfigError(f"{source}: grid.{path}", value,
                              "a scenario parameter; seeds are not a grid axis: set seed (the first) and n_seeds")
        if path in _RESERVED:
            raise ConfigError(f"{source}: grid.{path}", value, f"a parameter path other than {sorted(_RESERVED)}")
        axes[path] = value
    return axes


def _base_scenario(raw: dict[str, Any], source: str) -> Scenario:
    try:
        return Scenario.from_dict(raw, source=source)
    except ConfigError as error:
        path = error.field.removeprefix(f"{source}: ")
        value = _lookup(raw, path.split("."))
        if isinstance(value, list) and path.split(".")[-1] not in _LIST_FIELDS:
            raise ConfigError(error.field, value, f"{error.allowed}; to sweep over several values, list them in the "
                              f"[grid] table instead: [grid] \"{path}\" = {json.dumps(value)}") from None
        raise


def _lookup(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _item_index(items: list[Any], part: str, source: str, path: str, where: str) -> int:
    """A list element addressed by index, label or (unique) name."""
    if part.isdigit():
        if int(part) < len(items):
            return int(part)
        raise ConfigError(f"{source}: grid.{path}", part, f"an index 0..{len(items) - 1} into {where}")
    labels = [item.get("label") if isinstance(item, dict) else None for item in items]
    names = [item.get("name") if isinstance(item, dict) else item for item in items]
    if part in labels:
        return labels.index(part)
    matches = [i for i, name in enumerate(names) if name == part and labels[i] is None]
    if len(matches) == 1:
        return matches[0]
    known = [label or name for label, name in zip(labels, names)]
    if len(matches) > 1:
        raise ConfigError(f"{source}: grid.{path}", part,
                          f"a label or index that picks one entry of {where} ({part!r} names several: use an index "
                          f"0..{len(items) - 1} or give each a label)")
    close = difflib.get_close_matches(part, [str(k) for k in known], n=1)
    raise ConfigError(f"{source}: grid.{path}", part,
                      f"an entry of {where}: an index 0..{len(items) - 1} or one of {known}"
                      + (f" (did you mean {close[0]!r}?)" if close else ""))


def _normalise(document: dict[str, Any], path: str, source: str) -> list[str]:
    """The path with list entries addressed by index (as validation errors report them)."""
    parts = path.split(".")
    node: Any = document
    resolved: list[str] = []
    for depth, part in enumerate(parts):
        where = ".".join(resolved) or "the scenario"
        if isinstance(node, list):
            index = _item_index(node, part, source, path, where)
            resolved.append(str(index))
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: grid.{path}", part, f"nothing: {where} is a single value, not a table")
        if depth < len(parts) - 1 and part not in node:
            known = list(node)
            close = difflib.get_close_matches(part, known, n=1)
            raise ConfigError(f"{source}: grid.{path}", part, f"a key of {where}: {', '.join(known)}"
                              + (f" (did you mean {close[0]!r}?)" if close else ""))
        resolved.append(part)
        node = node.get(part)
    return resolved


def _assign(document: dict[str, Any], parts: list[str], value: Any) -> None:
    node: Any = document
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(value)
    else:
        node[last] = copy.deepcopy(value)


def _cell_id(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _column(values: list[Any]) -> list[Any]:
    """One dtype per axis column: ints, floats, bools or strings as they are; anything else as JSON text."""
    if all(isinstance(v, bool) for v in values):
        return values
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return values
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [float(v) for v in values]
    if all(isinstance(v, str) for v in values):
        return values
    return [json.dumps(v, sort_keys=True) for v in values]


def _expand(sweep: Sweep) -> list[Cell]:
    source = sweep.source
    base = sweep.base.model_dump(mode="json")
    paths = {path: _normalise(base, path, source) for path in sweep.axes}
    points = list(itertools.product(*sweep.axes.values())) if sweep.axes else [()]
    staged: list[tuple[int, dict[str, Any], Scenario]] = []
    resolved_axes: list[list[Any]] = []
    for point in points:
        document = copy.deepcopy(base)
        for path, value in zip(sweep.axes, point):
            _assign(document, paths[path], value)
        for seed in sweep.seeds:
            document["seed"] = seed
            scenario = _validate_cell(document, dict(zip(sweep.axes, point)), paths, source)
            config = scenario.model_dump(mode="json")
            staged.append((seed, config, scenario))
            resolved_axes.append([_lookup(config, paths[path]) for path in sweep.axes])
    columns = [_column([row[j] for row in resolved_axes]) for j in range(len(sweep.axes))]
    cells: list[Cell] = []
    seen: dict[str, Cell] = {}
    for i, (seed, config, scenario) in enumerate(staged):
        axes = {path: columns[j][i] for j, path in enumerate(sweep.axes)}
        cell = Cell(id=_cell_id(config), seed=seed, axes=axes, scenario=scenario, config=config)
        if cell.id in seen:
            raise ConfigError(f"{source}: grid", {p: v for p, v in sweep.axes.items()},
                              f"axes whose values give distinct scenarios; cells ({seen[cell.id].describe()}) and "
                              f"({cell.describe()}) resolve to the same scenario")
        seen[cell.id] = cell
        cells.append(cell)
    return cells


def _validate_cell(document: dict[str, Any], point: dict[str, Any], paths: dict[str, list[str]],
                   source: str) -> Scenario:
    try:
        return Scenario.from_dict(document, source=source)
    except ConfigError as error:
        loc = error.field.removeprefix(f"{source}: ").split(".")
        # The base scenario is valid, so a failing cell fails because of a grid value: name that axis.
        owners = [p for p, parts in paths.items() if parts[: len(loc)] == loc or loc[: len(parts)] == parts]
        if not owners:
            raise
        owner = max(owners, key=lambda p: len(paths[p]))
        # Errors raised for a whole table (a generator's parameters) carry the table: show the grid value.
        value = point[owner] if isinstance(error.value, dict) else error.value
        raise ConfigError(f"{source}: grid.{owner}", value, error.allowed) from None
