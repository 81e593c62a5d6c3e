"""What a trial records: one typed record that writes and reads a trial's user attributes.

:class:`TrialRecord` is the only place that knows the user-attribute names of an AlphaNAS trial
(``mask``, ``accuracy``, ``n_params``, ...). The objective fills one in and writes it; the search's
trial lines and summary, the Pareto front and the report read it back. Existing studies stay
readable: a key a study does not hold reads as the field's default.

Adding something a trial records is one field here: its name is the stored key, ``always=True``
writes it even when ``None`` (so every trial shows it in optuna-dashboard), ``outcome=True`` marks
what a trial learns (a retried trial does not inherit it). This module imports only the standard
library, so the sampler side and the CLI can use it without torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["OUTCOME_ATTRS", "USER_ATTRS", "TrialRecord"]


class _HasUserAttrs(Protocol):
    @property
    def user_attrs(self) -> dict[str, Any]: ...


def _field(default: Any = None, *, always: bool = False, outcome: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"always": always, "outcome": outcome})


@dataclass
class TrialRecord:
    """A trial's mask and what its evaluation measured, as stored in its user attributes.

    Attributes:
        mask: The layer mask as a bit string, layer 0 first (e.g. ``"110011"``).
        n_layers: Encoder layers kept.
        accuracy: Validation accuracy A (``None`` before training, or when it was not trained).
        n_params: Parameter count N of the sub-model.
        quality: ``Q = A - λ·N/1e6``.
        feasible: Whether it met ``min_accuracy`` and ``max_params``.
        infeasible_reason: Why it did not.
        train_seconds: Seconds of its fine-tune (0 when its result was reused).
        fidelity: Digest of the settings the accuracy depends on (reuse needs it equal).
        eval_seconds: Seconds of one pass over the validation split with the trained sub-model:
            its measured inference time, comparable between trials of one study.
        reused_from: The trial whose result it reused (same mask and fidelity).
        pruned_at_step: The step at which a pruner stopped it.
        fail_reason: Why its training failed (FAIL trials).
        evaluation: Which evaluation of its mask this is: 0 (or absent) for the first, k for the
            k-th repeat the sampler asked for (a re-evaluation, or a retry of a failed run).
        seed: The training seed it was trained with (``[training] seed + evaluation``).
    """

    mask: str = _field(always=True)
    n_layers: int | None = _field(always=True)
    accuracy: float | None = _field(always=True, outcome=True)
    n_params: int | None = _field(always=True)
    quality: float | None = _field(always=True, outcome=True)
    feasible: bool = _field(False, always=True, outcome=True)
    infeasible_reason: str | None = _field(always=True, outcome=True)
    train_seconds: float = _field(0.0, always=True, outcome=True)
    fidelity: str | None = _field()
    eval_seconds: float | None = _field(outcome=True)
    reused_from: int | None = _field(outcome=True)
    pruned_at_step: int | None = _field(outcome=True)
    fail_reason: str | None = _field(outcome=True)
    evaluation: int | None = _field()
    seed: int | None = _field(outcome=True)

    def __post_init__(self) -> None:
        if self.n_layers is None and self.mask:
            self.n_layers = self.mask.count("1")

    @property
    def measured(self) -> bool:
        """Whether it has a finite accuracy and a parameter count (a point on a Pareto plot)."""
        return (
            self.accuracy is not None
            and self.n_params is not None
            and math.isfinite(float(self.accuracy))
        )

    def to_attrs(self) -> dict[str, Any]:
        """The user attributes: every ``always`` field, the others only when set."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None or f.metadata["always"]:
                out[f.name] = value
        return out

    def write(self, trial: Any) -> None:
        """Store the record on a running ``optuna.Trial``, writing only the attributes whose
        value is not stored yet: a trial stores its mask before training and its outcome after,
        and each key reaches the storage once."""
        stored = trial.user_attrs  # the trial's cached copy: no storage read
        for key, value in self.to_attrs().items():
            if key not in stored or stored[key] != value:
                trial.set_user_attr(key, value)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord | None:
        """The record stored in ``attrs``; ``None`` when they hold no mask (not an AlphaNAS
        trial, or one killed before its mask was decided)."""
        mask = attrs.get("mask")
        if not isinstance(mask, str) or not mask:
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in known})

    @classmethod
    def read(cls, trial: _HasUserAttrs) -> TrialRecord | None:
        """The record of a trial (frozen or running); see :meth:`from_attrs`."""
        return cls.from_attrs(trial.user_attrs)

    def reset_outcome(self) -> TrialRecord:
        """A copy that keeps which mask this is and forgets what its evaluation learnt."""
        cleared = {f.name: f.default for f in dataclasses.fields(self) if f.metadata["outcome"]}
        return dataclasses.replace(self, **cleared)


#: The user attributes every AlphaNAS trial carries, pruned or not.
USER_ATTRS = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.metadata["always"])
#: What a trial learns (as opposed to which mask it is): a retried trial must not inherit these.
OUTCOME_ATTRS = tuple(f.name for f in dataclasses.fields(TrialRecord) if f.metadata["outcome"])
