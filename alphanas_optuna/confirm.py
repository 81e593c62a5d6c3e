"""``alphanas confirm``: re-train the study's best candidates with several seeds at a larger
budget, on the validation split, and store every run in the study.

A search evaluates many masks cheaply, so its ranking of the best few is noisy. Confirmation
spends a larger budget on a few: the top ``M`` masks by :func:`alphanas_optuna.winner`'s
estimates (in a two-objective study, the best mask of each depth on the front,
:func:`alphanas_optuna.winners`), each fine-tuned ``R`` times with seeds ``seed .. seed + R - 1``
at the ``[confirm]`` budget (default: the ``[report]`` budget), measured on the VALIDATION split;
the test split stays untouched until ``alphanas report``.

Every run is a COMPLETE trial of the same study (visible in optuna-dashboard) whose user
attributes are a :class:`~alphanas_optuna.record.TrialRecord` (mask, accuracy, N, Q, fidelity,
seed) and whose system attribute ``alphanas:confirmation`` marks it as a confirmation: the
sampler and the search's trial count leave such trials out, and :func:`alphanas_optuna.winner`
uses them, when there are any, to name the answer. A run is written in one storage call when it
has finished, so rerunning the command adds only the runs that are missing (a kill -9 loses at
most the fine-tune that was running), and the confirmation fidelity (budget, data, model) keeps
runs of another budget apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from alphanas_optuna.errors import UsageError
from alphanas_optuna.intervals import t_interval
from alphanas_optuna.mask import param_name
from alphanas_optuna.record import TrialRecord
from alphanas_optuna.results import NoFeasibleTrialError, load_existing_study
from alphanas_optuna.sampler.digest import CONFIRMATION_KEY

if TYPE_CHECKING:
    import optuna

    from alphanas_optuna.config import StudyConfig
    from alphanas_optuna.data import DataConfig
    from alphanas_optuna.training import TrainingConfig

__all__ = [
    "CONFIRMATION_KEY",
    "ConfirmedMask",
    "candidates",
    "confirm",
    "confirm_data_config",
    "confirm_training_config",
    "confirmed",
]


@dataclass(frozen=True)
class ConfirmedMask:
    """A mask's confirmation runs at one fidelity.

    Attributes:
        mask: The mask as a bit string.
        n_params: Its parameter count.
        accuracies: Validation accuracy of each run.
        qualities: Q of each run.
        seeds: The seed of each run.
        trials: The runs' trial numbers.
    """

    mask: str
    n_params: int
    accuracies: tuple[float, ...]
    qualities: tuple[float, ...]
    seeds: tuple[int, ...]
    trials: tuple[int, ...]

    @property
    def accuracy(self) -> tuple[float, float, float]:
        """Mean validation accuracy and its 95% t-interval."""
        return t_interval(list(self.accuracies))

    @property
    def quality(self) -> tuple[float, float, float]:
        """Mean Q and its 95% t-interval."""
        return t_interval(list(self.qualities))


def confirm_data_config(config: StudyConfig) -> DataConfig:
    """``[data]`` with ``[confirm] train_size`` (default ``[report] train_size``); the
    validation split is the search's. No test split is loaded."""
    train_size = config.confirm.train_size
    if train_size is None:
        train_size = config.report.train_size
    return dataclasses.replace(config.data, train_size=train_size)


def confirm_training_config(config: StudyConfig, seed: int) -> TrainingConfig:
    """``[training]`` at the ``[confirm]`` budget (default ``[report]``'s), one evaluation."""
    c, r = config.confirm, config.report
    epochs = c.epochs if c.epochs is not None else r.epochs
    max_steps = c.max_steps if c.max_steps is not None else r.max_steps
    if c.epochs is not None and c.max_steps is None:
        max_steps = None  # [confirm] epochs overrides a [report] max_steps
    return dataclasses.replace(
        config.training, epochs=epochs, max_steps=max_steps, seed=seed, evaluations=1
    )


def fidelity(config: StudyConfig) -> str:
    """What a confirmation run's accuracy depends on, as a short digest."""
    settings = confirm_training_config(config, 0)
    training = settings.settings()
    if settings.distill is not None and settings.distill.teacher is None:
        # The full model fine-tuned at this seed teaches every run: another seed, another
        # teacher, results not to be pooled. A given teacher is named by its content in
        # ``settings()``; the seed then only draws the head, as without distillation.
        training["teacher_seed"] = config.confirm.seed
    payload = {
        "model": config.model.name,
        "data": {k: v for k, v in config.to_dict()["data"].items() if k != "source"},
        "training": training,
        "train_size": confirm_data_config(config).train_size,
    }
    return (
        "confirm-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    )


def candidates(study: optuna.Study, top: int) -> list[str]:
    """The masks to confirm: the ``top`` best by the search's estimates (single objective), or
    the best of each depth on the front (two objectives)."""
    import numpy as np

    from alphanas_optuna.answer import NoWinnerError, estimates_of, winners

    try:
        if len(study.directions) > 1:
            return [w.mask for w in winners(study, use_confirmations=False)]
        masks, means = estimates_of(study)
    except NoWinnerError as exc:
        raise NoFeasibleTrialError(
            f"study {study.study_name!r} has nothing feasible to confirm ({exc}); run "
            "`alphanas search` first, or relax [fitness]"
        ) from None
    order = np.argsort(-np.asarray(means), kind="stable")[:top]
    return [masks[i] for i in order]


def confirmed(study: optuna.Study, at: str | None = None) -> list[ConfirmedMask]:
    """The study's confirmation runs, per mask, at fidelity ``at`` (default: the fidelity of
    the newest run)."""
    from optuna.trial import TrialState

    runs = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if isinstance(t.system_attrs.get(CONFIRMATION_KEY), dict)
    ]
    if not runs:
        return []
    if at is None:
        at = runs[-1].system_attrs[CONFIRMATION_KEY].get("fidelity")
    by_mask: dict[str, list[Any]] = {}
    for t in runs:
        record = TrialRecord.read(t)
        if (
            record is None
            or record.accuracy is None
            or t.system_attrs[CONFIRMATION_KEY].get("fidelity") != at
        ):
            continue
        by_mask.setdefault(record.mask, []).append((t, record))
    out = []
    for mask, items in by_mask.items():
        out.append(
            ConfirmedMask(
                mask=mask,
                n_params=int(items[0][1].n_params or 0),
                accuracies=tuple(float(r.accuracy) for _, r in items),
                qualities=tuple(float(r.quality) for _, r in items if r.quality is not None),
                seeds=tuple(int(r.seed) for _, r in items if r.seed is not None),
                trials=tuple(t.number for t, _ in items),
            )
        )
    return out


def confirm(
    config: StudyConfig,
    storage: str,
    study_name: str,
    *,
    top: int | None = None,
    seeds: int | None = None,
    masks: Sequence[str] | None = None,
    out: TextIO | None = None,
) -> list[ConfirmedMask]:
    """Run the missing confirmation runs and return the confirmed ranking (best first).

    ``masks`` confirms these masks instead of the :func:`candidates` (``top`` is then unused).

    Raises:
        UsageError: ``top`` or ``seeds`` is below 1.
        ReportError: No such study.
        NoFeasibleTrialError: Nothing feasible to confirm.
    """
    import optuna

    out = out if out is not None else sys.stdout
    top = config.confirm.top if top is None else top
    seeds = config.confirm.seeds if seeds is None else seeds
    for name, value in (("--top", top), ("--seeds", seeds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
    study = load_existing_study(storage, study_name)
    masks = list(masks) if masks is not None else candidates(study, top)
    at = fidelity(config)
    done = {(c.mask, s) for c in confirmed(study, at) for s in c.seeds}
    wanted = [(m, config.confirm.seed + r) for m in masks for r in range(seeds)]
    missing = [(m, s) for m, s in wanted if (m, s) not in done]
    print(
        f"Confirming {len(masks)} mask(s) x {seeds} seed(s) of study {study_name!r} at "
        f"fidelity {at}: {len(wanted) - len(missing)} run(s) stored, {len(missing)} to run.",
        file=out,
        flush=True,
    )
    if missing:
        _run(config, study, missing, at, out)
    ranking = [
        c
        for c in confirmed(optuna.load_study(study_name=study_name, storage=study._storage), at)
        if c.mask in masks
    ]
    two = len(study.directions) > 1
    ranking.sort(key=lambda c: -(c.accuracy[0] if two else c.quality[0]))
    print(ranking_table(ranking, two), file=out)
    return ranking


def _run(
    config: StudyConfig, study: optuna.Study, missing: list[tuple[str, int]], at: str, out: TextIO
) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution

    from alphanas_optuna.final import final_fine_tune
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.synthesis import count_parameters_for_mask, n_encoder_layers
    from alphanas_optuna.task import load_task

    data = confirm_data_config(config)
    # The head the checkpoint lacks is drawn once, with the first seed; each run's own seed
    # draws its batch order and dropout.
    task = load_task(
        config.model.name, data, num_labels=config.model.num_labels, seed=config.confirm.seed
    )
    n = n_encoder_layers(task.model)
    accelerator = get_accelerator(config.training.mixed_precision)
    two = len(study.directions) > 1
    for i, (mask, seed) in enumerate(missing, 1):
        if len(mask) != n:
            raise UsageError(
                f"study {study.study_name!r}: mask {mask} has {len(mask)} bits but the model "
                f"{config.model.name!r} has {n} encoder layers; use the study file of the search"
            )
        training = confirm_training_config(config, seed)
        sub, result = final_fine_tune(
            task.model,
            mask,
            task.tokenized["train"],
            task.tokenized["validation"],
            training,
            accelerator,
            pad_token_id=task.pad_token_id,
            # With distillation one teacher, at the first seed, serves every run.
            teacher_seed=config.confirm.seed,
            tokenizer=task.tokenizer,
        )
        del sub
        accelerator.free_memory()
        bits = tuple(int(c) for c in mask)
        n_params = int(count_parameters_for_mask(task.model, bits))
        quality = config.fitness.quality(result.accuracy, n_params)
        record = TrialRecord(
            mask=mask,
            n_layers=sum(bits),
            accuracy=float(result.accuracy),
            n_params=n_params,
            quality=quality,
            feasible=True,
            train_seconds=round(result.seconds, 3),
            fidelity=at,
            seed=seed,
        )
        attrs = record.to_attrs()
        attrs["confirmation"] = True
        study.add_trial(
            optuna.trial.create_trial(
                values=[float(result.accuracy), float(n_params)] if two else [quality],
                params={param_name(j): b for j, b in enumerate(bits)},
                distributions={param_name(j): CategoricalDistribution((0, 1)) for j in range(n)},
                user_attrs=attrs,
                system_attrs={CONFIRMATION_KEY: {"fidelity": at, "seed": seed, "mask": mask}},
            )
        )
        print(
            f"[{i}/{len(missing)}] {mask} seed {seed}: validation accuracy "
            f"{result.accuracy:.4f}, Q {quality:.4f} ({result.seconds:.0f} s)",
            file=out,
            flush=True,
        )


def ranking_table(ranking: list[ConfirmedMask], two_objectives: bool) -> str:
    """The confirmed ranking as Markdown: mean ± 95% t-interval over the runs."""

    def cell(stat: tuple[float, float, float]) -> str:
        mean, low, high = stat
        if not math.isfinite(low):
            return f"{mean:.4f} (one run)"
        return f"{mean:.4f} [{low:.4f}, {high:.4f}]"

    lines = [
        "| rank | mask | layers | params (M) | runs | validation accuracy (95% CI) | Q (95% CI) |",
        "|---:|---|---:|---:|---:|---|---|",
    ]
    for i, c in enumerate(ranking, 1):
        q = cell(c.quality) if c.qualities else "?"
        lines.append(
            f"| {i} | `{c.mask}` | {c.mask.count('1')} | {c.n_params / 1e6:.2f} | "
            f"{len(c.accuracies)} | {cell(c.accuracy)} | {q} |"
        )
    ranked_by = "accuracy" if two_objectives else "Q"
    lines.append("")
    lines.append(f"Ranked by mean {ranked_by} over the runs (validation split; test untouched).")
    return "\n".join(lines)
