"""Helpers of the multi-process tests: run ``alphanas search`` in subprocesses, inspect a study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED)


def worker_env() -> dict[str, str]:
    """The test's environment (offline Hub, isolated cache), one thread per worker."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def start_search(study_file: Path, *args: str, cwd: Path, log: Path) -> subprocess.Popen:
    """``alphanas search STUDY_FILE ARGS`` in a new process, its output going to ``log``."""
    handle = log.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "alphanas_optuna.cli", "search", str(study_file), *args],
        cwd=cwd,
        env=worker_env(),
        stdout=handle,
        stderr=subprocess.STDOUT,
        text=True,
    )


def slow_study(study_file: Path, epochs: int, n_trials: int) -> Path:
    """Rewrite the tiny study with more epochs (a longer trial) and another total."""
    text = study_file.read_text()
    text = text.replace("epochs = 3\nlearning_rate", f"epochs = {epochs}\nlearning_rate", 1)
    text = text.replace("n_trials = 8", f"n_trials = {n_trials}")
    study_file.write_text(text)
    return study_file


def trained_masks(trials: list[FrozenTrial]) -> list[str]:
    """Masks of evaluated trials that were fine-tuned for their first evaluation, not reused
    from an earlier trial (the sampler's re-evaluations train a mask again on purpose)."""
    return [
        t.user_attrs["mask"]
        for t in trials
        if t.state in EVALUATED
        and t.user_attrs.get("accuracy") is not None
        and "reused_from" not in t.user_attrs
        and not t.user_attrs.get("evaluation")
    ]


def evaluated(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(states=EVALUATED)
