"""A study's answer: the mask it recommends, estimated from all its evidence.

One brief fine-tune is a noisy measurement, so the study's single best trial
(``study.best_trial``) is its luckiest draw, not its best mask. :func:`winner` names the mask with
the best posterior estimate from every evaluation of every mask, read exactly as
:class:`~alphanas_optuna.AlphaNASSampler` reads them (repeated evaluations of a mask are
averaged; the value model pools across similar masks where that helps; see
:mod:`alphanas_optuna.sampler.model`). :func:`winners` does the same per depth for two-objective
studies. Both work on any study whose trials used :func:`~alphanas_optuna.suggest_mask`, whatever
sampler made them.

This module imports only Optuna and NumPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from alphanas_optuna.mask import DEFAULT_PREFIX, format_mask, mask_from_code
from alphanas_optuna.sampler import PROPOSAL_KEY
from alphanas_optuna.sampler.digest import StudyDigest, take_snapshot
from alphanas_optuna.sampler.evidence import Estimates, MaskRecord

if TYPE_CHECKING:
    import optuna

__all__ = ["NoWinnerError", "Winner", "estimates_of", "reference_fidelity", "winner", "winners"]

_GENERATION_KEY = "AlphaNASSampler:generation"
# Where `alphanas search` records the study file's settings (study user attribute).
CONFIG_ATTR = "alphanas_config"


class NoWinnerError(ValueError):
    """The study has no mask that was feasible at least as often as not."""


@dataclass(frozen=True)
class Winner:
    """A mask a study recommends, with the evidence behind it.

    Attributes:
        mask: The mask as a bit string, layer 0 first.
        quality: Estimate of the study's first objective for this mask: Q in a single-objective
            study, validation accuracy in a two-objective one.
        stderr: Standard error of ``quality`` (0 where there is no model to give one).
        accuracy: Estimated validation accuracy (from the trials' ``accuracy`` attribute; None
            if they recorded none).
        n_params: Parameter count (``n_params`` attribute, or the second objective).
        n_layers: Layers kept.
        n_evaluations: Evaluations of this mask (feasible or not).
        trials: Numbers of those trials.
        mean: Plain mean of this mask's measured values (what ``quality`` shrinks from; a run
            that failed where others of the mask trained, far below them, is not among them).
        confirmed: Whether this comes from ``alphanas confirm`` runs: then ``quality``,
            ``accuracy`` and ``stderr`` are their mean and its standard error, ``n_evaluations``
            and ``trials`` are the runs.
    """

    mask: str
    quality: float
    stderr: float
    accuracy: float | None
    n_params: float | None
    n_layers: int
    n_evaluations: int
    trials: tuple[int, ...]
    mean: float
    confirmed: bool = False


def winner(
    study: optuna.Study,
    *,
    prefix: str = DEFAULT_PREFIX,
    pooled: bool = True,
    use_confirmations: bool = True,
) -> Winner:
    """The study's answer: the eligible mask with the best estimated first objective.

    A mask is eligible when its evaluations were feasible (COMPLETE) at least as often as not.
    When the study recorded its accuracy floor (``alphanas_config``, as ``alphanas search``
    does), the best eligible mask whose estimated accuracy clears the floor by one standard
    error is named (the best eligible one if none does).
    With ``pooled`` (default) the estimates come from the value model, as the noise-aware
    sampler ranks its elites; ``pooled=False`` uses each mask's own mean (on the newest
    training settings' scale where masks measured under several settings give the offset; see
    :meth:`~alphanas_optuna.sampler.evidence.Evidence.paired_offsets`).

    When the study holds ``alphanas confirm`` runs (and ``use_confirmations``), the answer is the
    confirmed mask with the best mean over its runs instead (see :class:`Winner`).

    Raises:
        NoWinnerError: No mask is eligible.
    """
    if use_confirmations:
        confirmed = _confirmed(study)
        if confirmed:
            return max(confirmed, key=lambda w: w.quality)
    digest, n, estimates = _estimated(study, prefix, pooled)
    floor = _min_accuracy(study)
    candidates = [
        _winner(study, digest, n, estimates, int(i))
        for i in np.argsort(-estimates.means, kind="stable")
    ]
    for w in candidates:
        # Noise also decides feasibility: a mask measured once just above the accuracy floor
        # may well be below it. Prefer masks whose estimated accuracy clears the floor by one
        # standard error.
        if floor is None or w.accuracy is None or w.accuracy - w.stderr >= floor:
            return w
    return candidates[0]


def winners(
    study: optuna.Study,
    *,
    prefix: str = DEFAULT_PREFIX,
    pooled: bool = True,
    use_confirmations: bool = True,
) -> list[Winner]:
    """The study's front over (accuracy up, parameters down): per depth, the eligible mask with
    the best estimate, keeping the depths that no smaller-or-equal model with a better estimated
    accuracy beats. Sorted by parameters. Works for two-objective studies (accuracy, parameters)
    and single-objective ones (where, at one depth, the best Q is the best accuracy). Where a
    depth has ``alphanas confirm`` runs (and ``use_confirmations``), its confirmed mask with the
    best mean stands for it.

    Raises:
        NoWinnerError: No mask is eligible.
    """
    digest, n, estimates = _estimated(study, prefix, pooled)
    by_depth: dict[int, int] = {}
    for i, record in enumerate(estimates.records):
        depth = bin(record.code).count("1")
        if depth not in by_depth or estimates.means[i] > estimates.means[by_depth[depth]]:
            by_depth[depth] = i
    chosen = [_winner(study, digest, n, estimates, i) for i in by_depth.values()]
    if use_confirmations:
        best_confirmed: dict[int, Winner] = {}
        for w in _confirmed(study):
            if w.n_layers not in best_confirmed or w.quality > best_confirmed[w.n_layers].quality:
                best_confirmed[w.n_layers] = w
        chosen = [best_confirmed.get(w.n_layers, w) for w in chosen]

    def accuracy(w: Winner) -> float:
        return w.accuracy if w.accuracy is not None else w.quality

    chosen.sort(key=lambda w: (math.inf if w.n_params is None else w.n_params, -accuracy(w)))
    front: list[Winner] = []
    for w in chosen:
        if not front or accuracy(w) > accuracy(front[-1]):
            front.append(w)
    return front


def estimates_of(
    study: optuna.Study, *, prefix: str = DEFAULT_PREFIX, pooled: bool = True
) -> tuple[list[str], list[float]]:
    """Every eligible mask of the study's search and its estimated first objective (higher is
    better), as :func:`winner` ranks them.

    Raises:
        NoWinnerError: No mask is eligible.
    """
    _, n, est = _estimated(study, prefix, pooled)
    masks = [format_mask(mask_from_code(r.code, n)) for r in est.records]
    return masks, [float(m) for m in est.means]


def reference_fidelity(study: optuna.Study, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The training fidelity (trial user attribute ``fidelity``) whose scale the estimates are
    on: the newest named one of a feasible evaluation (see
    :class:`~alphanas_optuna.sampler.evidence.Evidence`); None when no trial names one."""
    try:
        digest, n = _read(study, prefix)
    except NoWinnerError:
        return None
    fidelities = digest.evidence.fidelities(n)
    return fidelities[0] if fidelities else None


def _confirmed(study: optuna.Study) -> list[Winner]:
    """The study's ``alphanas confirm`` runs at their newest fidelity (read by
    :func:`alphanas_optuna.confirm.confirmed`), one Winner per mask."""
    from alphanas_optuna.confirm import confirmed

    two = len(study.directions) > 1
    out = []
    for c in confirmed(study):
        values = c.accuracies if two else c.qualities
        k = len(values)
        mean = float(np.mean(values))
        stderr = float(np.std(values, ddof=1) / math.sqrt(k)) if k > 1 else math.inf
        out.append(
            Winner(
                mask=c.mask,
                quality=mean,
                stderr=stderr,
                accuracy=float(np.mean(c.accuracies)),
                n_params=float(c.n_params) if c.n_params else None,
                n_layers=c.mask.count("1"),
                n_evaluations=k,
                trials=c.trials,
                mean=mean,
                confirmed=True,
            )
        )
    return out


def _estimated(
    study: optuna.Study, prefix: str, pooled: bool
) -> tuple[StudyDigest, int, Estimates]:
    """The study read as the sampler reads it, and its eligible masks' estimates."""
    digest, n = _read(study, prefix)
    estimates = digest.estimate(n, pooled=pooled)
    if not estimates.records:
        raise NoWinnerError(_none_message(study))
    return digest, n, estimates


def _read(study: optuna.Study, prefix: str) -> tuple[StudyDigest, int]:
    digest = StudyDigest()
    snapshot = take_snapshot(
        digest,
        study.get_trials(deepcopy=False),
        None,
        prefix=prefix,
        proposal_key=PROPOSAL_KEY,
        generation_key=_GENERATION_KEY,
        directions=study.directions,
        n_layers=None,
    )
    if digest.n_layers is None:
        raise NoWinnerError(_none_message(study))
    return snapshot.digest, digest.n_layers


def _winner(
    study: optuna.Study, digest: StudyDigest, n: int, estimates: Estimates, index: int
) -> Winner:
    record: MaskRecord = estimates.records[index]
    sign = 1.0 if study.directions[0].name == "MAXIMIZE" else -1.0
    quality = sign * float(estimates.means[index])
    trials = [digest.trials_by_id[t] for t in record.trials]
    accuracy = None
    n_params = None
    attrs = [t.user_attrs for t in trials]
    params = [a["n_params"] for a in attrs if _number(a.get("n_params"))]
    if params:
        n_params = float(params[-1])
    elif record.extra:
        n_params = float(record.extra[0])
    if len(study.directions) > 1:
        accuracy = quality
    else:
        gaps = [
            a["accuracy"] - a["quality"]
            for a in attrs
            if _number(a.get("accuracy")) and _number(a.get("quality"))
        ]
        if gaps:
            # A - Q = lambda * N is the same for every evaluation of a mask.
            accuracy = quality + float(np.mean(gaps))
    return Winner(
        mask=format_mask(mask_from_code(record.code, n)),
        quality=quality,
        stderr=float(estimates.sds[index]),
        accuracy=accuracy,
        n_params=n_params,
        n_layers=bin(record.code).count("1"),
        n_evaluations=record.n_evaluations,
        trials=tuple(record.numbers),
        mean=sign * record.mean,
    )


def _min_accuracy(study: optuna.Study) -> float | None:
    """The accuracy floor the study was searched with, if it recorded one (``[fitness]
    min_accuracy`` in its ``alphanas_config`` user attribute)."""
    config = study.user_attrs.get(CONFIG_ATTR)
    fitness = config.get("fitness") if isinstance(config, dict) else None
    floor = fitness.get("min_accuracy") if isinstance(fitness, dict) else None
    return float(floor) if _number(floor) else None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _none_message(study: optuna.Study) -> str:
    return (
        f"study {study.study_name!r} has no mask that was feasible at least as often as not "
        f"({len(study.trials)} trials)"
    )
