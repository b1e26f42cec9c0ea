"""Typed, validated scenarios: the TOML files users edit and run.

A scenario names everything by registry string (dataset, models, generators). Validation happens here, at
the boundary: unknown keys (with a "did you mean"), wrong types, out-of-range values and unknown names are
reported as one :class:`ConfigError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import inspect
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator,
)

from recourse_sim.data import DATASETS
from recourse_sim.data.real import load_csv
from recourse_sim.errors import ConfigError, RecourseSimError
from recourse_sim.generators import GENERATORS
from recourse_sim.generators.problem import SearchSettings
from recourse_sim.models import MODELS
from recourse_sim.models.vae import VAE
from recourse_sim.settings import check_keywords, defaults, from_table, signature_defaults
from recourse_sim.simulation.agents import AgentSettings
from recourse_sim.simulation.config import (
    DEFAULT_SEED, MetricSettings, Pairing, SimulationConfig, check_dynamics,
)
from recourse_sim.training import CounterfactualTraining


class _Strict(BaseModel):
    # strict: a string is never converted to a number (rounds = "2" is refused, not read as 2)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)


def _registered(registry, value: str) -> str:
    registry[value]  # raises ConfigError with the allowed names and a suggestion
    return value


class DataConfig(_Strict):
    """``name``: a registered dataset (synthetic or shipped real data) or ``"csv"`` with ``path`` and ``target``.

    ``seed`` draws the data and the train/test split; unset, the scenario's seed does. Fixing it keeps one
    dataset across seeds of the dynamics, as the paper generated its data once. Rows are always shuffled
    (seeded) when the data are generated or loaded.

    ``constraints = false`` drops the actionability constraints of a shipped real dataset's data card
    (mutability and bounds; one-hot groups stay): the SaTML reference code had none, so this separates their
    effect on validity from the search budget's. Datasets without a data card have no constraints anyway.

    ``bounds = "data_range"`` bounds every feature to the range the loaded rows span (train and test), so no
    counterfactual leaves the data's box, as in ECCCo's experiments; ``"schema"`` (or unset) keeps the schema's
    bounds (the synthetic datasets have none). A sweep can grid over both.
    """

    name: str = "overlapping"
    seed: int | None = Field(default=None, ge=0)
    n_samples: int | None = Field(default=1000, ge=4)
    test_share: float = Field(default=0.2, gt=0.0, lt=1.0)
    path: str | None = None
    target: str | None = None
    constraints: bool = True
    # Unset (None) means "schema" and stays out of the resolved TOML, so existing sweeps keep their cell ids.
    bounds: Literal["schema", "data_range"] | None = None

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        if self.name == "csv":
            if not self.path or not self.target:
                raise ValueError("data.name = 'csv' needs data.path and data.target")
        else:
            _registered(DATASETS, self.name)
        return self


class ModelConfig(BaseModel):
    """A registered model; any further key is a keyword of its class (``hidden_sizes``, ``epochs``...), whose
    signature holds the defaults (see models/). ``device`` and ``seed`` come from the scenario.

    ``training`` says how the model is trained, initially and at every retraining: conventionally (unset or
    ``"conventional"``), with Counterfactual Training (``"ct"``) or with a table of CT keywords (``objective``,
    ``lambda_div``...), whose defaults live in :class:`~recourse_sim.training.CounterfactualTraining`'s signature.
    A CT model's default key shows it: ``mlp+ct``, ``mlp+ct(objective=cd)``.
    """

    model_config = ConfigDict(extra="allow")
    name: str
    label: str | None = None
    training: Any = None

    _check_name = field_validator("name")(lambda cls, v: _registered(MODELS, v))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def training_params(self) -> dict[str, Any] | None:
        """The CT keywords, or None for conventional training."""
        return _training_table(self.training)

    @model_validator(mode="after")
    def _check_params(self) -> ModelConfig:
        check_keywords("model", MODELS[self.name], self.params, exclude=_RUN_OWNED)
        self.build("cpu")  # range checks live in the model (and in CT's wrapper); surface them now
        return self

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        training = self.training_params
        if training is None:
            return self.name
        suffix = ", ".join(f"{k}={v}" for k, v in sorted(training.items()))
        return f"{self.name}+ct({suffix})" if suffix else f"{self.name}+ct"

    def build(self, device: str):
        model = MODELS[self.name](device=device, **self.params)
        training = self.training_params
        return model if training is None else CounterfactualTraining(model, device=device, **training)


def _training_table(value: Any) -> dict[str, Any] | None:
    """A model's ``training`` value as CT keywords (None: conventional), unknown keys and wrong types refused."""
    if value is None or value == "conventional":
        return None
    if value == "ct":
        return {}
    if not isinstance(value, dict):
        raise ConfigError("model.training", value, '"conventional", "ct" or a table of Counterfactual Training '
                          f"keywords ({', '.join(signature_defaults(CounterfactualTraining, exclude=_CT_OWNED))})")
    check_keywords("model.training", CounterfactualTraining, value, exclude=_CT_OWNED)
    return dict(value)


class GeneratorConfig(BaseModel):
    """A registered generator; any further key is a keyword of its factory (``threshold``, ``lambda_cost``...)."""

    model_config = ConfigDict(extra="allow")
    name: str
    label: str | None = None

    _check_name = field_validator("name")(lambda cls, v: _registered(GENERATORS, v))

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_params(self) -> GeneratorConfig:
        check_keywords(f"generator[{self.name}]", GENERATORS[self.name], self.params)
        self.build()  # range checks live in GeneratorSpec; surface them now
        return self

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        suffix = "".join(f", {k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({suffix[2:]})" if suffix else self.name

    def build(self):
        return GENERATORS[self.name](**self.params)


def _settings_table(cls: type, prefix: str):
    """A scenario table read as the settings dataclass ``cls``, the one home of its fields and checks."""
    return BeforeValidator(lambda table: from_table(cls, table, prefix))


def _vae_table(table: Any) -> dict[str, Any]:
    """The ``[vae]`` table: keywords of :class:`~recourse_sim.models.vae.VAE` (the one home of their defaults and
    checks), resolved with every default written out (``latent_dim`` unset means ``min(8, d)``). The SaTML 2023
    real-data experiments use ``epochs = 250``."""
    if not isinstance(table, dict):
        raise ConfigError("vae", table, "a table of VAE keywords")
    check_keywords("vae", VAE, table, exclude=_RUN_OWNED)
    VAE(**table)
    resolved = signature_defaults(VAE, exclude=_RUN_OWNED) | table
    return {key: value for key, value in resolved.items() if value is not None}  # TOML has no None


#: Keywords of models and the VAE that a scenario sets for them, not the user: the device and the seed.
_RUN_OWNED = ("device", "seed")
#: CT's keywords that a model's ``training`` table does not set: the wrapped model is the table's owner.
_CT_OWNED = ("model", *_RUN_OWNED)
_DYNAMICS = defaults(SimulationConfig)


class Scenario(_Strict):
    """One experiment: a dataset, models x generators x repetitions, and the dynamics' parameters.

    Each setting has one home, which this schema reads: the dynamics (``rounds``, ``repetitions``,
    ``recourse_share``, ``pairing``, ``device``) are :class:`SimulationConfig`'s fields, ``[metrics]`` is
    :class:`MetricSettings`, ``[search]`` is :class:`SearchSettings`, ``[agents]`` is :class:`AgentSettings`,
    ``[vae]`` and each model's keys are the keywords of the VAE's and the model's constructors, and each
    generator's keys are its factory's keywords.
    Defaults follow the SaTML 2023 protocol: 50 rounds, mu = 0.05, K = 5, seed 42, metrics every 10 rounds.
    """

    name: str = "scenario"
    seed: int = Field(default=DEFAULT_SEED, ge=0)
    rounds: int = _DYNAMICS["rounds"]
    repetitions: int = _DYNAMICS["repetitions"]
    recourse_share: float = _DYNAMICS["recourse_share"]
    pairing: Pairing = _DYNAMICS["pairing"]
    device: str = _DYNAMICS["device"]
    data: DataConfig = Field(default_factory=DataConfig)
    models: list[ModelConfig] = Field(min_length=1)
    generators: list[GeneratorConfig] = Field(min_length=1)
    metrics: Annotated[MetricSettings, _settings_table(MetricSettings, "metrics")] = Field(
        default_factory=MetricSettings)
    search: Annotated[SearchSettings, _settings_table(SearchSettings, "search")] = Field(
        default_factory=SearchSettings)
    vae: Annotated[dict[str, Any], BeforeValidator(_vae_table)] = Field(default_factory=lambda: _vae_table({}))
    agents: Annotated[AgentSettings, _settings_table(AgentSettings, "agents")] = Field(
        default_factory=AgentSettings)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:  # Python users get the same one-line error as a scenario file
            raise _InitError(exc) from None

    _check_slug = field_validator("name")(lambda cls, v: _slug(v))

    @field_validator("models", "generators", mode="before")
    @classmethod
    def _names_as_tables(cls, value: Any) -> Any:
        """Allow ``models = ["mlp"]`` as shorthand for ``[[models]] name = "mlp"``."""
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check_dynamics(self) -> Scenario:
        check_dynamics(self.rounds, self.repetitions, self.recourse_share, self.pairing)
        return self

    @model_validator(mode="after")
    def _unique_labels(self) -> Scenario:
        for field_name, items in (("models", self.models), ("generators", self.generators)):
            keys = [item.key for item in items]
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            if duplicates:
                raise ValueError(f"{field_name} has duplicate labels {duplicates}; give each a distinct 'label'")
        return self

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "scenario") -> Scenario:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise _as_config_error(exc, source) from None

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """A scenario file; a relative CSV ``data.path`` is resolved against the file's directory."""
        return cls.from_dict(resolve_data_path(read_toml(path, "scenario file"), Path(path).parent), source=str(path))

    def to_toml(self) -> str:
        import tomli_w

        data = self.model_dump(mode="json", exclude_none=True)
        return tomli_w.dumps(data)

    # ----------------------------------------------------------------------------------------- building
    def load_data(self):
        """The dataset and its stratified split, drawn from ``data.seed`` (default: the scenario seed)."""
        rng = np.random.default_rng(self.seed if self.data.seed is None else self.data.seed)
        if self.data.name == "csv":
            dataset = load_csv(self.data.path, self.data.target)
            if self.data.n_samples is not None and self.data.n_samples < dataset.n_samples:
                dataset = dataset.balanced_subsample(self.data.n_samples, rng)
            else:
                dataset = dataset.shuffled(rng)  # a user's file may be sorted by its label
        else:
            loader = DATASETS[self.data.name]
            options = {"constraints": False} if not self.data.constraints and _accepts(loader, "constraints") else {}
            dataset = loader(self.data.n_samples, rng, **options)
        if self.data.bounds == "data_range":
            dataset = dataset.bounded_to_range()
        check_split(dataset, self.data.test_share, "data.path" if self.data.name == "csv" else "data.n_samples")
        return dataset.stratified_split(self.data.test_share, rng)

    def build(self) -> SimulationConfig:
        train, test = self.load_data()
        return SimulationConfig(
            train=train,
            test=test,
            models={m.key: m.build(self.device) for m in self.models},
            generators={g.key: g.build() for g in self.generators},
            rounds=self.rounds,
            repetitions=self.repetitions,
            recourse_share=self.recourse_share,
            pairing=self.pairing,
            search=self.search,
            metrics=self.metrics,
            vae=self.vae,
            agents=self.agents,
            device=self.device,
        )


def _accepts(function, keyword: str) -> bool:
    return keyword in inspect.signature(function).parameters


#: Smallest split a simulation accepts: per class, at least this many training rows and one test row.
MIN_TRAIN_PER_CLASS = 4
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _slug(name: Any) -> str:
    """A scenario name becomes the directory ``runs/<name>``: a safe slug, never a path."""
    if not isinstance(name, str) or not _SLUG.fullmatch(name) or ".." in name:
        raise ValueError("a slug of 1-100 letters, digits, '.', '_' or '-' starting with a letter or digit (it "
                         "names the output directory runs/<name>; no '/', '..' or empty name)")
    return name


class _InitError(ConfigError):
    """``Scenario(...)`` refused; keeps pydantic's error so that validating a file names the file instead.
    (Pydantic runs a model's own ``__init__`` during ``model_validate`` too.)"""

    def __init__(self, exc: ValidationError) -> None:
        first = _as_config_error(exc, "Scenario")
        super().__init__(first.field, first.value, first.allowed)
        self.validation = exc


def check_split(dataset: Any, test_share: float, field: str) -> None:
    """Refuse a train/test split with fewer than MIN_TRAIN_PER_CLASS training rows or no test row in a class."""
    counts = [int((dataset.y == c).sum()) for c in (0.0, 1.0)]
    tests = [int(np.floor(test_share * n)) for n in counts]
    trains = [n - t for n, t in zip(counts, tests)]
    if min(trains) >= MIN_TRAIN_PER_CLASS and min(tests) >= 1:
        return
    short = "data.test_share" if min(tests) >= 1 and test_share >= 0.5 else field
    value = {"data.test_share": test_share, "data.n_samples": dataset.n_samples}.get(short, f"{dataset.n_samples} rows")
    raise ConfigError(short, value, f"a split with at least {MIN_TRAIN_PER_CLASS} training rows and 1 test row per "
                      f"class; {dataset.n_samples} rows ({counts[0]} / {counts[1]} per class) at test_share "
                      f"{test_share} give {trains[0]} / {trains[1]} training and {tests[0]} / {tests[1]} test rows")


def resolve_data_path(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` with a relative ``data.path`` made relative to ``base`` (the scenario file's directory)."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and not Path(data["path"]).is_absolute():
        raw = {**raw, "data": {**data, "path": str(base / data["path"])}}
    return raw


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """Parse a TOML file; a missing, non-UTF-8 or malformed file is one ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(what, str(path), "an existing TOML file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(what, str(path), f"valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(what, str(path), f"a UTF-8 text file ({exc})") from None


def _as_config_error(exc: ValidationError, source: str) -> ConfigError:
    """The first pydantic error as one ConfigError naming the dotted field path."""
    error = exc.errors()[0]
    if isinstance(error.get("ctx", {}).get("error"), _InitError):
        return _as_config_error(error["ctx"]["error"].validation, source)
    field = ".".join(str(p) for p in error["loc"]) or "scenario"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        parent = _model_at(Scenario, error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), list(parent.model_fields), n=1) if parent else []
        allowed = ", ".join(parent.model_fields) if parent else "known keys"
        message = f"a known key: {allowed}" + (f" (did you mean {close[0]!r}?)" if close else "")
        return ConfigError(f"{source}: {field}", "unknown key", message)
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError) and _names_its_path(cause.field, error["loc"]):
        return ConfigError(f"{source}: {_path_of(cause.field, error['loc'])}", cause.value, cause.allowed)
    if isinstance(cause, RecourseSimError):
        message = str(cause)
    return ConfigError(f"{source}: {field}", error.get("input"), message)


def _names_its_path(reported: str, loc: tuple) -> bool:
    """Whether an owner's check reported a setting by its scenario path: a top-level key (``rounds``), a
    settings table's key (``metrics.permutations``) or a model's keyword (``model.epochs`` in ``models.0``).
    A generator's checks name the generator instead (``generator[eccco].coverage``): kept as they are."""
    head = reported.split(".")[0]
    return not loc or head == str(loc[0]) or f"{head}s" == str(loc[0])


def _path_of(reported: str, loc: tuple) -> str:
    where = [str(part) for part in loc]
    if not where or reported.split(".")[0] == where[0]:
        return reported
    setting = reported.split(".", 1)[1] if "." in reported else ""
    return ".".join([*where, setting] if setting and where[-1] != setting else where)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        inner = getattr(annotation, "__args__", (annotation,))
        candidates = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        model = candidates[0]
    return model
