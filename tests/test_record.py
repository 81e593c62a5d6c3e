"""TrialRecord: the one place that writes and reads what a trial records."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from alphanas_optuna.record import OUTCOME_ATTRS, USER_ATTRS, TrialRecord


def test_stored_key_names_are_the_documented_ones() -> None:
    # Existing studies hold these keys: renaming a field would make them unreadable.
    assert USER_ATTRS == (
        "mask",
        "n_layers",
        "accuracy",
        "n_params",
        "quality",
        "feasible",
        "infeasible_reason",
        "train_seconds",
    )
    # What a trial learns is forgotten by a retry; which mask it is, is kept.
    assert {
        "accuracy",
        "quality",
        "feasible",
        "infeasible_reason",
        "train_seconds",
        "eval_seconds",
        "reused_from",
        "fail_reason",
        "pruned_at_step",
    } <= set(OUTCOME_ATTRS)
    assert not {"mask", "n_layers", "n_params", "fidelity"} & set(OUTCOME_ATTRS)
    # The sampler reads these by name (it imports nothing of the objective's).
    from alphanas_optuna.sampler.digest import FIDELITY_ATTR, REUSED_ATTR, VALUE_ATTRS

    fields = {f.name for f in dataclasses.fields(TrialRecord)}
    assert {FIDELITY_ATTR, REUSED_ATTR, *VALUE_ATTRS} <= fields


def test_optional_attributes_are_written_only_when_set() -> None:
    record = TrialRecord(mask="1010", fidelity="abc")
    attrs = record.to_attrs()
    assert attrs == {
        "mask": "1010",
        "n_layers": 2,
        "accuracy": None,
        "n_params": None,
        "quality": None,
        "feasible": False,
        "infeasible_reason": None,
        "train_seconds": 0.0,
        "fidelity": "abc",
    }
    record.reused_from = 3
    assert record.to_attrs()["reused_from"] == 3
    assert TrialRecord.from_attrs(record.to_attrs()) == record


def test_a_study_written_before_the_record_still_reads() -> None:
    """An older trial lacks later keys (fidelity, eval_seconds) and may hold unknown ones."""
    old = {"mask": "110", "accuracy": 0.8, "n_params": 12, "quality": 0.7, "feasible": True}
    record = TrialRecord.from_attrs({**old, "something_else": 1})
    assert record is not None
    assert (record.n_layers, record.accuracy, record.eval_seconds, record.fidelity) == (
        2,
        0.8,
        None,
        None,
    )
    assert record.measured
    assert TrialRecord.from_attrs({"accuracy": 0.8}) is None  # no mask: not an AlphaNAS trial
    assert not TrialRecord(mask="1", accuracy=float("nan"), n_params=3).measured


def test_write_stores_each_key_once() -> None:
    study = optuna.create_study()
    trial = study.ask({"layer_00": CategoricalDistribution((0, 1))})
    writes: list[str] = []
    original = trial.set_user_attr

    def counting(key: str, value: object) -> None:
        writes.append(key)
        original(key, value)

    trial.set_user_attr = counting  # type: ignore[method-assign]
    record = TrialRecord(mask="1", n_params=5, fidelity="f")
    record.write(trial)
    first = len(writes)
    record.accuracy, record.quality, record.feasible = 0.9, 0.85, True
    record.write(trial)
    assert sorted(writes[first:]) == ["accuracy", "feasible", "quality"]
    assert TrialRecord.read(study.trials[0]) == record


def test_reset_outcome_keeps_the_mask_and_forgets_the_result() -> None:
    record = TrialRecord(
        mask="11",
        n_params=7,
        fidelity="f",
        accuracy=0.9,
        quality=0.8,
        feasible=True,
        train_seconds=3.0,
        eval_seconds=0.5,
        fail_reason="x",
    )
    clean = record.reset_outcome()
    assert clean == TrialRecord(mask="11", n_params=7, fidelity="f")


@pytest.mark.parametrize("state", [TrialState.COMPLETE, TrialState.PRUNED])
def test_read_from_a_frozen_trial(state: TrialState) -> None:
    trial = create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"layer_00": 1},
        distributions={"layer_00": CategoricalDistribution((0, 1))},
        user_attrs=TrialRecord(mask="1", accuracy=0.5, n_params=9).to_attrs(),
    )
    record = TrialRecord.read(trial)
    assert record is not None and record.accuracy == 0.5 and record.n_params == 9
