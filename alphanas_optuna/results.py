"""What a study found: its evaluated trials, its answer, its front, and the answer against the
full model.

Every command that reads a study's results (the summary of ``alphanas search``, ``pareto``,
``report``, ``export`` and the dashboard note) takes its definitions from here:

- :func:`evaluated_trials`: every trial with an accuracy and a parameter count;
- :func:`study_answer`: the study's answer, :func:`alphanas_optuna.winner` (noise-aware: the
  mask with the best estimate from all its evaluations, not the luckiest single trial); in a
  two-objective study the member of :func:`alphanas_optuna.winners` with the best Q;
- :func:`best_feasible_trial`: the trial that stands for the answer (its mask's latest feasible
  evaluation), for what needs one trial;
- :func:`front`: *the* Pareto front of the study: per depth, the mask with the best estimated
  accuracy (:func:`alphanas_optuna.winners`), shown at its estimate; infeasible trials are shown
  next to it, never on it;
- :func:`compare_to_full`: what a chosen mask gains and loses against the full model, from the
  two measurements (whatever chose the mask);
- :func:`mixed_fidelity_note`: a warning when the search's evaluations were made under different
  training settings (a study resumed with a changed study file), which the estimates can only
  shift onto one scale.

It imports Optuna and the trial record only, not torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from alphanas_optuna.record import TrialRecord

if TYPE_CHECKING:
    import optuna

    from alphanas_optuna.answer import Winner
    from alphanas_optuna.objective import FitnessConfig

__all__ = [
    "Comparison",
    "EvaluatedTrial",
    "Measurement",
    "NoFeasibleTrialError",
    "ReportError",
    "best_feasible_trial",
    "compare_to_full",
    "study_answer",
    "evaluated_trials",
    "front",
    "full_model_trial",
    "on_front",
    "load_existing_study",
    "fidelity_counts",
    "mixed_fidelity_note",
    "pareto_front",
    "stored_fitness",
]


class ReportError(ValueError):
    """A study that cannot be reported on (missing, no evaluated trial, no test split, ...)."""


class NoFeasibleTrialError(ReportError):
    """The study has no feasible trial, so there is no best mask."""


@dataclass(frozen=True)
class EvaluatedTrial:
    """A trial whose sub-model was measured (it has an accuracy and a parameter count).

    Attributes:
        number: The trial's number in the study.
        mask: The layer mask as a bit string, layer 0 first.
        n_layers: Encoder layers kept.
        accuracy: Validation accuracy A measured during the search.
        n_params: Parameter count N.
        quality: Q as stored by the search (``None`` if the trial did not record it).
        feasible: Whether the trial met the study's limits (COMPLETE and ``feasible``).
        state: The trial's state (COMPLETE, or PRUNED for an infeasible one).
        reason: Why it is infeasible, if it is.
        eval_seconds: Its timed validation pass (``None`` if not recorded).
    """

    number: int
    mask: str
    n_layers: int
    accuracy: float
    n_params: int
    quality: float | None
    feasible: bool
    state: TrialState
    reason: str | None = None
    eval_seconds: float | None = None


def evaluated_trials(study: optuna.Study) -> list[EvaluatedTrial]:
    """Every trial of ``study`` with an accuracy and a parameter count, by trial number.

    COMPLETE trials and PRUNED ones (infeasible: accuracy below the limit, or stopped by a pruner)
    count; FAIL and RUNNING trials and trials pruned before training (``max_params``, empty mask)
    have no accuracy and are left out.
    """
    result = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        record = TrialRecord.read(t)
        if record is None or not record.measured:
            continue
        result.append(
            EvaluatedTrial(
                number=t.number,
                mask=record.mask,
                n_layers=int(record.n_layers or record.mask.count("1")),
                accuracy=float(record.accuracy),
                n_params=int(record.n_params),
                quality=None if record.quality is None else float(record.quality),
                feasible=t.state == TrialState.COMPLETE and bool(record.feasible),
                state=t.state,
                reason=record.infeasible_reason,
                eval_seconds=record.eval_seconds,
            )
        )
    return sorted(result, key=lambda e: e.number)


def fidelity_counts(study: optuna.Study) -> dict[str, int]:
    """The search's evaluated trials (COMPLETE or PRUNED, ``alphanas confirm`` runs left out) per
    training fidelity (:attr:`~alphanas_optuna.record.TrialRecord.fidelity`, the digest of the
    settings an accuracy depends on), in the order each fidelity first appears. Trials that did
    not record one are not counted."""
    from alphanas_optuna.sampler.digest import CONFIRMATION_KEY

    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        record = TrialRecord.read(t)
        if record is None or record.fidelity is None or CONFIRMATION_KEY in t.system_attrs:
            continue
        counts[record.fidelity] = counts.get(record.fidelity, 0) + 1
    return counts


def mixed_fidelity_note(study: optuna.Study) -> str | None:
    """A warning when the search's evaluations span several training fidelities, else None.

    After a study was resumed with other training settings (more steps, another learning rate,
    other data), a mask's values under the old settings and the new are not measurements of the
    same thing. The estimates behind :func:`study_answer` and :func:`front` put every value on
    the newest settings' scale with one fitted offset per earlier fidelity (see
    :mod:`alphanas_optuna.sampler.model`): a shift common to every mask, which cannot follow
    settings that reorder masks. ``alphanas confirm`` measures the candidates again under one
    setting, and the answer then comes from those runs.
    """
    counts = fidelity_counts(study)
    if len(counts) < 2:
        return None
    from alphanas_optuna.answer import reference_fidelity

    newest = reference_fidelity(study)
    earlier = sum(counts.values()) - counts.get(newest, 0)
    return (
        f"Note: the search's evaluations were made under {len(counts)} different training "
        f"settings ({counts.get(newest, 0)} under the newest, {earlier} under earlier ones); "
        "the estimates shift the earlier ones onto the newest settings' scale where the "
        "evidence allows (the value model, or masks measured under both), which assumes the "
        "settings moved every mask alike. Run `alphanas confirm` to measure the candidates "
        "again under one setting."
    )


def study_answer(study: optuna.Study, fitness: FitnessConfig | None = None) -> Winner:
    """The study's answer (see the module docstring).

    In a two-objective study (accuracy, parameters) the front's members are scored with
    ``Q = A - lambda * N`` of ``fitness`` (default: the study's stored ``[fitness]``, else
    :class:`~alphanas_optuna.FitnessConfig`), A being each one's estimated accuracy.

    Raises:
        NoFeasibleTrialError: No mask was feasible at least as often as not; the message names
            the study.
    """
    from alphanas_optuna.answer import NoWinnerError, winner, winners
    from alphanas_optuna.objective import FitnessConfig

    try:
        if len(study.directions) == 1:
            return winner(study)
        fitness = fitness or stored_fitness(study) or FitnessConfig()
        members = [w for w in winners(study) if w.n_params is not None]
        if not members:
            raise NoWinnerError("no member of the front has a parameter count")
        return max(members, key=lambda w: fitness.quality(w.quality, int(w.n_params or 0)))
    except NoWinnerError:
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            states[t.state.name] = states.get(t.state.name, 0) + 1
        shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials"
        raise NoFeasibleTrialError(
            f"study {study.study_name!r} has no feasible mask ({shown}), so there is no answer "
            "to report or export; run more trials (alphanas search) or relax [fitness] "
            "min_accuracy / max_params"
        ) from None


def best_feasible_trial(study: optuna.Study, fitness: FitnessConfig | None = None) -> FrozenTrial:
    """The trial that stands for the study's answer (:func:`study_answer`): the first feasible
    evaluation of its mask.

    Raises:
        NoFeasibleTrialError: The study has no answer; the message names the study.
    """
    return _representative(study, study_answer(study, fitness))


def _representative(study: optuna.Study, answer: Winner) -> FrozenTrial:
    chosen = None
    numbers = set(answer.trials)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.read(t)
        if t.number in numbers and (record is None or record.feasible):
            chosen = t
            break
    if chosen is None:  # pragma: no cover - a winner has a feasible evaluation
        raise NoFeasibleTrialError(
            f"study {study.study_name!r}: no feasible trial of {answer.mask}"
        )
    return chosen


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point dominates, for accuracy up and parameters down.

    ``a`` dominates ``b`` when ``a`` is at least as accurate and at most as large, and strictly
    better in one of the two. Equal points do not dominate each other, so all copies of a
    non-dominated point are on the front.

    Args:
        points: ``(accuracy, n_params)`` pairs.

    Returns:
        Indices into ``points``, by parameter count then accuracy (descending), then index.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0], i))
    result: list[int] = []
    best_accuracy = -math.inf
    best_at: tuple[float, float] | None = None
    for i in order:
        accuracy, n = points[i]
        if accuracy > best_accuracy:
            result.append(i)
            best_accuracy, best_at = accuracy, (accuracy, n)
        elif (accuracy, n) == best_at:
            result.append(i)  # a tie with the point that set the record
    return result


def front(study: optuna.Study) -> list[EvaluatedTrial]:
    """The study's Pareto front, by parameter count: per depth, the mask with the best estimated
    accuracy that no smaller-or-equal model beats (:func:`alphanas_optuna.winners`), each as its
    first feasible trial with ``accuracy`` the mean of the mask's feasible evaluations (what was
    measured; the estimates decide who is on the front).

    The one definition of "the front" for the search's summary, ``alphanas pareto``, its figure
    and the dashboard note. A mask infeasible more often than not is never on it. In a
    single-objective study: the answer alone.
    """
    import dataclasses

    from alphanas_optuna.answer import NoWinnerError, winners

    try:
        members = winners(study)
    except NoWinnerError:
        return []
    evaluated = evaluated_trials(study)
    measured = {t.number: t for t in evaluated}
    out = []
    for w in members:
        trial = measured.get(_representative(study, w).number)
        if trial is None:
            continue
        same = [t.accuracy for t in evaluated if t.mask == w.mask and t.feasible]
        out.append(dataclasses.replace(trial, accuracy=sum(same) / len(same)))
    return sorted(out, key=lambda e: (e.n_params, -e.accuracy))


def on_front(study: optuna.Study) -> set[int]:
    """Numbers of the feasible trials whose mask is on :func:`front` (every evaluation of a
    front mask, for tables that list trials)."""
    masks = {t.mask for t in front(study)}
    return {t.number for t in evaluated_trials(study) if t.feasible and t.mask in masks}


def stored_fitness(study: optuna.Study) -> FitnessConfig | None:
    """The ``[fitness]`` the study was searched with (from its ``alphanas_config``), or ``None``
    for a study that ``alphanas search`` did not make."""
    from alphanas_optuna.objective import FitnessConfig
    from alphanas_optuna.search import CONFIG_ATTR

    stored = study.user_attrs.get(CONFIG_ATTR)
    section = stored.get("fitness") if isinstance(stored, dict) else None
    if not isinstance(section, dict):
        return None
    try:
        return FitnessConfig(**section)
    except (TypeError, ValueError):
        return None


def full_model_trial(study: optuna.Study) -> EvaluatedTrial | None:
    """The first evaluated trial of the full mask (every layer kept), or ``None`` if there is
    none: the reference that a smaller mask is compared with."""
    for t in evaluated_trials(study):
        if t.mask and set(t.mask) == {"1"}:
            return t
    return None


def load_existing_study(storage: str, study_name: str) -> optuna.Study:
    """Load a study that must exist, without creating anything (not even a SQLite file).

    Raises:
        ReportError: There is no such study; the message lists the studies there.
        UsageError: The storage cannot be opened (see :mod:`alphanas_optuna.storage`).
    """
    import optuna

    from alphanas_optuna.storage import open_storage

    rdb = open_storage(storage, create=False)
    names = optuna.get_all_study_names(rdb) if rdb is not None else []
    if study_name not in names:
        known = f"studies there: {', '.join(names)}" if names else "it holds none"
        raise ReportError(
            f"no study named {study_name!r} in {storage} ({known}); run `alphanas search` first"
        )
    return optuna.load_study(study_name=study_name, storage=rdb)


# ------------------------------------------------------------------- against the full model


@dataclass(frozen=True)
class Measurement:
    """One model as measured in a study: its mask, validation accuracy, parameter count and,
    where it was timed, the seconds of its validation pass."""

    mask: str
    accuracy: float
    n_params: int
    eval_seconds: float | None = None

    @classmethod
    def of(cls, trial: EvaluatedTrial) -> Measurement:
        return cls(trial.mask, trial.accuracy, trial.n_params, trial.eval_seconds)


@dataclass(frozen=True)
class Comparison:
    """A chosen mask against the full model (see :func:`compare_to_full`)."""

    chosen: Measurement
    full: Measurement

    @property
    def layers_kept(self) -> int:
        return self.chosen.mask.count("1")

    @property
    def n_layers(self) -> int:
        return len(self.full.mask)

    @property
    def params_share(self) -> float:
        """N as a share of the full model's N."""
        return self.chosen.n_params / self.full.n_params

    @property
    def accuracy_change(self) -> float:
        """A minus the full model's A (negative: accuracy lost)."""
        return self.chosen.accuracy - self.full.accuracy

    @property
    def speedup(self) -> float | None:
        """The full model's validation-pass time over the chosen one's (``None``: not timed)."""
        mine, full = self.chosen.eval_seconds, self.full.eval_seconds
        if not mine or not full or not (mine > 0 and full > 0):
            return None
        return full / mine

    def lines(self) -> list[str]:
        """The comparison as a few lines of text."""
        if self.chosen.mask == self.full.mask:
            return [
                "This is the full model: no layer was worth dropping at this fitness "
                "(raise [fitness] lambda_per_million to trade accuracy for size)."
            ]
        points = 100 * self.accuracy_change
        speed = self.speedup
        if speed is None:
            timing = "not measured (the trials hold no eval_seconds)"
        else:
            timing = (
                f"{speed:.2f}x the full model's on the validation split "
                f"({self.chosen.eval_seconds:.2f} s vs {self.full.eval_seconds:.2f} s, one pass "
                "each, during the search)"
            )
        return [
            f"  layers kept:      {self.layers_kept} of {self.n_layers}",
            f"  parameters N:     {self.chosen.n_params / 1e6:.2f}M = "
            f"{100 * self.params_share:.1f}% of the full model's {self.full.n_params / 1e6:.2f}M",
            f"  accuracy A:       {self.chosen.accuracy:.4f} against {self.full.accuracy:.4f} "
            f"({points:+.1f} points)",
            f"  inference speed:  {timing}",
        ]

    def short(self) -> str:
        """One line: N's share and A's change (for a front's rows)."""
        return (
            f"{100 * self.params_share:.1f}% of the full model's N, "
            f"{100 * self.accuracy_change:+.1f} points of A"
        )


def compare_to_full(chosen: Measurement, full: Measurement) -> Comparison:
    """What ``chosen`` gains and loses against ``full``, both measured in the same study.

    It does not care how the mask was chosen (best Q, a front's member, a noise-aware winner):
    give it the two measurements.

    Raises:
        ValueError: The masks have different lengths, or the full one is not all ones.
    """
    if len(chosen.mask) != len(full.mask) or set(full.mask) != {"1"}:
        raise ValueError(
            f"compare a mask with the full mask of the same model; got {chosen.mask!r} "
            f"and {full.mask!r}"
        )
    return Comparison(chosen=chosen, full=full)
