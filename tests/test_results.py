"""What a study found: the answer against the full model, and one front for every command."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_report import add_trial, hand_made_study

from alphanas_optuna.pareto import pareto
from alphanas_optuna.results import (
    Measurement,
    compare_to_full,
    fidelity_counts,
    front,
    full_model_trial,
)
from alphanas_optuna.sampler.digest import CONFIRMATION_KEY
from alphanas_optuna.search import summarize


def test_compare_to_full_says_what_was_gained_and_lost() -> None:
    full = Measurement("111111", 0.752, 22_713_986, eval_seconds=1.50)
    chosen = Measurement("100110", 0.678, 17_390_594, eval_seconds=0.75)
    c = compare_to_full(chosen, full)
    assert (c.layers_kept, c.n_layers) == (3, 6)
    assert c.params_share == pytest.approx(17_390_594 / 22_713_986)
    assert c.accuracy_change == pytest.approx(-0.074)
    assert c.speedup == pytest.approx(2.0)
    text = "\n".join(c.lines())
    assert "3 of 6" in text
    assert "17.39M = 76.6% of the full model's 22.71M" in text
    assert "0.6780 against 0.7520 (-7.4 points)" in text
    assert "2.00x the full model's on the validation split (0.75 s vs 1.50 s" in text
    assert c.short() == "76.6% of the full model's N, -7.4 points of A"

    untimed = compare_to_full(Measurement("100110", 0.678, 17_390_594), full)
    assert untimed.speedup is None and "not measured" in "\n".join(untimed.lines())
    same = compare_to_full(full, full)
    assert "This is the full model" in same.lines()[0]
    with pytest.raises(ValueError, match="full mask"):
        compare_to_full(chosen, Measurement("111110", 0.7, 1))


def test_summary_front_and_pareto_front_are_the_same(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'two.db'}"
    study = optuna.create_study(
        study_name="two", storage=storage, directions=["maximize", "minimize"]
    )
    add_trial(study, "1111", 0.91, 40_000_000)  # 0: full model, on the front
    add_trial(study, "1100", 0.88, 20_000_000)  # 1: front
    add_trial(study, "0011", 0.85, 20_000_000)  # 2: dominated
    add_trial(study, "0001", 0.95, 5_000_000, state=optuna.trial.TrialState.PRUNED)  # 3
    members = [t.number for t in front(study)]
    assert members == [1, 0]
    summary = summarize(study, storage)
    assert "Pareto front of the feasible masks (accuracy vs parameters): 2 masks" in summary
    assert "against the full model (trial 0)" in summary
    assert "1100 (trial 1, 2 of 4 layers), A = 0.8800, N = 20.00M" in summary
    assert "50.0% of the full model's N, -3.0 points of A" in summary
    assert "0001" not in summary  # infeasible: not an answer
    text = pareto(storage, "two", out=tmp_path / "f.html")
    assert "2 on the front of the feasible ones" in text


def test_summary_of_a_single_objective_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hand.db'}"
    study = hand_made_study(storage)
    assert full_model_trial(study).number == 0
    summary = summarize(study, storage)
    assert "Best mask: 1100 (trial 1, 2 of 4 layers)" in summary
    assert "Against the full model 1111 (trial 0, measured in this study):" in summary
    assert "0.8800 against 0.9100 (-3.0 points)" in summary


def test_summary_warns_when_the_search_spans_several_training_settings(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'mixed.db'}"
    study = optuna.create_study(study_name="mixed", storage=storage, direction="maximize")
    add_trial(study, "1111", 0.91, 40_000_000, fidelity="old")
    add_trial(study, "1100", 0.88, 20_000_000, fidelity="old")
    assert fidelity_counts(study) == {"old": 2}
    assert "training settings" not in summarize(study, storage)

    # Resumed with another study file: later evaluations are of another fidelity.
    add_trial(study, "0110", 0.90, 20_000_000, fidelity="new")
    add_trial(study, "0011", 0.70, 20_000_000, fidelity="new", state=TrialState.PRUNED)
    # An `alphanas confirm` run is not an evaluation of the search.
    add_trial(
        study,
        "0110",
        0.89,
        20_000_000,
        fidelity="confirm",
        system_attrs={CONFIRMATION_KEY: {"fidelity": "confirm", "seed": 1, "mask": "0110"}},
    )
    add_trial(study, "1000", 0.90, 10_000_000)  # a trial that recorded no fidelity
    assert fidelity_counts(study) == {"old": 2, "new": 2}
    summary = summarize(study, storage)
    assert (
        "the search's evaluations were made under 2 different training settings (2 under the "
        "newest, 2 under earlier ones); the estimates shift the earlier ones" in summary
    )
    assert "alphanas confirm" in summary
    # Back to the first settings: they are the newest now.
    add_trial(study, "0001", 0.80, 10_000_000, fidelity="old")
    assert "(3 under the newest, 2 under earlier ones)" in summarize(study, storage)
