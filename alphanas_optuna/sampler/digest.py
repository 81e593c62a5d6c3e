"""The storage digest: what the sampler has read from a study's trials, rebuildable from them.

A :class:`StudyDigest` folds each finished trial in once (trials before ``scan_from`` are never
read again), so an ``ask`` does no Python work per old trial. :func:`take_snapshot` adds what is
pending now. The functions that read one trial (its mask, generation, observation) are here too,
so that :func:`alphanas_optuna.winner` reads a study exactly as the sampler does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from alphanas_optuna.mask import Mask, mask_from_params, mask_to_code
from alphanas_optuna.sampler.evidence import Estimates, Evidence, MaskRecord, estimate
from alphanas_optuna.sampler.model import FeasibilityModel

__all__ = [
    "CONFIRMATION_KEY",
    "EVALUATED",
    "LAPSE_P",
    "PENDING",
    "Snapshot",
    "StudyDigest",
    "claimed_elsewhere",
    "mask_of",
    "observation",
    "take_snapshot",
]

EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED)
PENDING = (TrialState.RUNNING, TrialState.WAITING)
# A trial carrying this system attribute is not an evaluation of the search (``alphanas confirm``
# stores its runs at another budget so): the sampler and the search's estimates leave it out.
CONFIRMATION_KEY = "alphanas:confirmation"
# The user attribute of a trial whose result was copied from an earlier trial of the same mask.
REUSED_ATTR = "reused_from"
# The settings a trial's value was measured under (a string; AlphaNASObjective records a digest of
# its training settings): values of several fidelities are put on the newest one's scale.
FIDELITY_ATTR = "fidelity"
# What a PRUNED trial may have recorded about its mask's value (AlphaNASObjective records both
# for masks pruned for low accuracy): Q for a single-objective study, accuracy for two.
VALUE_ATTRS = ("quality", "accuracy")
# A mask whose one run collapsed is taken for a failed fine-tune (a lapse) when the feasibility
# model, fitted without that run, gives it more than this chance of training: more likely than
# not, the mask trains. On the robustness landscapes with fine-tunes collapsing at random (chance
# 0.25) 0.5 lowered the named mask's regret by 14.2% +- 3.6%, 0.25 by 8.6% +- 3.8% (on
# development instances 10.5% +- 3.2%, 10.6% +- 3.3%; 0.75 only 3.3% +- 3.0%); without random
# collapses nothing moved beyond its standard error (BENCHMARKS.md).
LAPSE_P = 0.5


def mask_of(trial: FrozenTrial, prefix: str, proposal_key: str) -> Mask | None:
    """A trial's mask: its proposal while it is pending, else its parameters, else its fixed
    (enqueued) parameters. A running trial's parameters may be a part of its mask and do not
    count."""
    proposal = trial.system_attrs.get(proposal_key, None)
    text = proposal.get("mask") if isinstance(proposal, dict) else None
    if trial.state in PENDING:
        if isinstance(text, str) and text:
            return tuple(int(c) for c in text)
        fixed = trial.system_attrs.get("fixed_params", None)
        return mask_from_params(fixed, prefix) if isinstance(fixed, dict) else None
    mask = mask_from_params(trial.params, prefix)
    if mask is None and isinstance(text, str) and text:
        mask = tuple(int(c) for c in text)
    return mask


def generation_of(trial: FrozenTrial, proposal_key: str, generation_key: str) -> int | None:
    """A trial's generation: from its proposal, else from the generation attribute (trials
    whose mask did not come from the sampler)."""
    proposal = trial.system_attrs.get(proposal_key, None)
    if isinstance(proposal, dict) and proposal.get("generation") is not None:
        return int(proposal["generation"])
    generation = trial.system_attrs.get(generation_key, None)
    return None if generation is None else int(generation)


def origin_of(trial: FrozenTrial, proposal_key: str) -> str | None:
    proposal = trial.system_attrs.get(proposal_key, None)
    return proposal.get("origin") if isinstance(proposal, dict) else None


def observation(
    trial: FrozenTrial, directions: Sequence[StudyDirection]
) -> tuple[bool, float | None, tuple[float, ...]]:
    """(feasible, value, other objectives) of a finished, evaluated trial.

    The value is the first objective, signed so that higher is better. A COMPLETE trial is
    feasible; a PRUNED one is not, and has a value only if it recorded one as a user attribute
    (``quality`` in a single-objective study, ``accuracy`` in a two-objective one) and was not
    stopped early by a pruner (``pruned_at_step``), whose accuracy is of another fidelity.
    """
    sign = 1.0 if directions[0] == StudyDirection.MAXIMIZE else -1.0
    if trial.state == TrialState.COMPLETE:
        values = trial.values
        if values is None or not all(math.isfinite(v) for v in values):
            return False, None, ()
        return True, sign * float(values[0]), tuple(float(v) for v in values[1:])
    attrs = trial.user_attrs
    if "pruned_at_step" in attrs:
        return False, None, ()
    raw = attrs.get(VALUE_ATTRS[0] if len(directions) == 1 else VALUE_ATTRS[1])
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw):
        return False, sign * float(raw), ()
    return False, None, ()


@dataclass
class StudyDigest:
    """What the sampler has read from one study's finished trials."""

    finished_ids: set[int] = field(default_factory=set)
    # Codes of evaluated (COMPLETE or PRUNED) masks: never proposed as new masks.
    evaluated: set[int] = field(default_factory=set)
    # Trials before this index (in trial-number order) are all finished and folded in.
    scan_from: int = 0
    evidence: Evidence = field(default_factory=Evidence)
    feasibility: dict[int, FeasibilityModel] = field(default_factory=dict)
    n_evaluated: int = 0
    n_reevaluations: int = 0
    # Re-evaluations that failed (FAIL): they measured nothing, but were spent.
    n_failed_reevaluations: int = 0
    # Evaluated trials per generation, and the COMPLETE ones.
    generation_counts: dict[int, int] = field(default_factory=dict)
    complete_by_generation: dict[int, list[int]] = field(default_factory=dict)
    n_layers: int | None = None
    trials_by_id: dict[int, FrozenTrial] = field(default_factory=dict)
    parent_ids: dict[int, list[int]] = field(default_factory=dict)
    # Memo of derived values (models, estimates), keyed by what they depend on.
    memo: dict[Any, Any] = field(default_factory=dict)

    def fold(
        self,
        trial: FrozenTrial,
        mask: Mask,
        generation: int | None,
        directions: Sequence[StudyDirection],
        reevaluation: bool = False,
    ) -> MaskRecord:
        """Add one finished, evaluated trial."""
        code = mask_to_code(mask)
        n = len(mask)
        self.evaluated.add(code)
        self.n_layers = n
        self.trials_by_id[trial._trial_id] = trial
        self.n_evaluated += 1
        self.n_reevaluations += reevaluation
        feasible, value, extra = observation(trial, directions)
        record = self.evidence.record(n, code)
        # A trial answered from an earlier trial's result (``reused_from``, as AlphaNASObjective
        # records it) measured nothing new: counting it would double that one draw's weight.
        if record is None or REUSED_ATTR not in trial.user_attrs:
            fidelity = trial.user_attrs.get(FIDELITY_ATTR)
            record = self.evidence.add(
                n,
                code,
                trial._trial_id,
                trial.number,
                feasible=feasible,
                value=value,
                extra=extra,
                fidelity=fidelity if isinstance(fidelity, str) else None,
            )
            model = self.feasibility.get(n)
            if model is None:
                model = self.feasibility[n] = FeasibilityModel(n)
            model.add(code, feasible)
        if generation is not None:
            self.generation_counts[generation] = self.generation_counts.get(generation, 0) + 1
            if feasible:
                self.complete_by_generation.setdefault(generation, []).append(trial._trial_id)
        return record

    def p_feasible(self, n: int, codes: np.ndarray) -> np.ndarray:
        """P(feasible) of masks of length ``n`` (1 before any was evaluated)."""
        model = self.feasibility.get(n)
        return np.ones(len(codes)) if model is None else model.p_feasible(codes)

    def lapses(self, n: int) -> frozenset[int]:
        """The masks of length ``n`` whose one run collapsed
        (:meth:`~alphanas_optuna.sampler.evidence.Evidence.collapsed_once`) though the
        feasibility model, fitted without that run, expects them to train (P(feasible) above
        :data:`LAPSE_P`; :meth:`~alphanas_optuna.sampler.model.FeasibilityModel.p_left_out`):
        by the look of it a fine-tune that failed on its seed, not a mask that cannot train. The
        value model leaves them out (:meth:`estimate`); the feasibility model keeps their
        failures, since runs that fail at random are worth knowing about too."""
        codes = self.evidence.collapsed_once(n)
        model = self.feasibility.get(n)
        if not codes or model is None:
            return frozenset()
        ordered = sorted(codes)
        return frozenset(c for c, p in zip(ordered, model.p_left_out(ordered)) if p > LAPSE_P)

    def estimate(self, n: int, *, pooled: bool = True) -> Estimates:
        """The eligible masks' estimates (:func:`~alphanas_optuna.sampler.evidence.estimate`),
        the value model fitted without the :meth:`lapses`: the sampler's and the answer's."""
        leave_out = self.lapses(n) if pooled else frozenset()
        return estimate(self.evidence, n, pooled=pooled, leave_out=leave_out)


@dataclass
class Snapshot:
    """The digest plus what is pending now."""

    digest: StudyDigest
    # Codes of masks that other trials are evaluating or will evaluate.
    pending: set[int]
    n_layers: int | None
    # Whether any trial other than the asking one is running or waiting.
    others_pending: bool = False
    n_pending: int = 0
    n_pending_reevaluations: int = 0
    # Pending trials of generation 0 (the first generation's, still being evaluated).
    n_pending_first_generation: int = 0


def take_snapshot(
    digest: StudyDigest,
    trials: Sequence[FrozenTrial],
    own_id: int | None,
    *,
    prefix: str,
    proposal_key: str,
    generation_key: str,
    directions: Sequence[StudyDirection],
    n_layers: int | None,
) -> Snapshot:
    """Fold newly finished trials of ``trials`` (all of the study's, by number) into ``digest``
    and collect the masks of pending ones (other than ``own_id``)."""
    pending: set[int] = set()
    n_pending_layers: int | None = None
    start = digest.scan_from
    if start > len(trials) or (start and trials[start - 1].number != start - 1):
        start = 0  # Not the numbering the shortcut relies on: scan everything.
    prefix_done = True
    others_pending = False
    pending_full = False
    n_pending = n_pending_reevaluations = n_pending_first_generation = 0
    for index in range(start, len(trials)):
        t = trials[index]
        tid = t._trial_id
        if tid in digest.finished_ids:
            if prefix_done:
                digest.scan_from = index + 1
            continue
        if tid == own_id:
            prefix_done = False
            continue
        if CONFIRMATION_KEY in t.system_attrs:
            digest.finished_ids.add(tid)  # not a search evaluation: read once, then skipped
            if prefix_done and t.number == index:
                digest.scan_from = index + 1
            continue
        state = t.state
        if state in PENDING:
            prefix_done = False
            others_pending = True
            n_pending += 1
            n_pending_reevaluations += origin_of(t, proposal_key) == "reevaluation"
            n_pending_first_generation += generation_of(t, proposal_key, generation_key) == 0
            mask = mask_of(t, prefix, proposal_key)
            if mask is not None:
                pending.add(mask_to_code(mask))
                n_pending_layers = max(n_pending_layers or 0, len(mask))
            elif origin_of(t, proposal_key) == "full":
                pending_full = True  # The full mask, its length not known then.
            continue
        digest.finished_ids.add(tid)
        if prefix_done and t.number == index:
            digest.scan_from = index + 1
        if state not in EVALUATED:
            # FAIL: counts for nothing, but a failed re-evaluation was an attempt.
            digest.n_failed_reevaluations += origin_of(t, proposal_key) == "reevaluation"
            continue
        mask = mask_of(t, prefix, proposal_key)
        if mask is None:
            continue
        digest.fold(
            t,
            mask,
            generation_of(t, proposal_key, generation_key),
            directions,
            reevaluation=origin_of(t, proposal_key) == "reevaluation",
        )
    n = n_layers or digest.n_layers or n_pending_layers
    if pending_full and n:
        pending.add((1 << n) - 1)
    return Snapshot(
        digest=digest,
        pending=pending,
        n_layers=n,
        others_pending=others_pending,
        n_pending=n_pending,
        n_pending_reevaluations=n_pending_reevaluations,
        n_pending_first_generation=n_pending_first_generation,
    )


def claimed_elsewhere(
    trials: Sequence[FrozenTrial],
    own_id: int,
    code: int,
    digest: StudyDigest,
    *,
    prefix: str,
    proposal_key: str,
) -> bool:
    """Whether a trial other than ``own_id`` and not yet folded into ``digest`` holds mask
    ``code`` in ``trials`` (read fresh from the storage): running, waiting, or evaluated since
    the digest was taken."""
    start = digest.scan_from if digest.scan_from <= len(trials) else 0
    for t in trials[start:]:
        if t._trial_id == own_id or t._trial_id in digest.finished_ids:
            continue
        if t.state not in PENDING and t.state not in EVALUATED:
            continue
        if CONFIRMATION_KEY in t.system_attrs:
            continue
        other = mask_of(t, prefix, proposal_key)
        if other is not None and mask_to_code(other) == code:
            return True
    return False
