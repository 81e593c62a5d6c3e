"""Several ``alphanas search`` processes on one SQLite file, and a worker killed in mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState
from workers import evaluated, slow_study, start_search, trained_masks

from alphanas_optuna import search


def wait_all(procs: list[subprocess.Popen], logs: list[Path], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for proc, log in zip(procs, logs):
        try:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"a worker did not finish in time:\n{log.read_text()[-3000:]}")
        assert proc.returncode == 0, log.read_text()[-3000:]


def test_kill_9_in_mid_trial_then_the_same_command_finishes_the_study(
    tiny_study: Path,
) -> None:
    folder = tiny_study.parent
    study_file = slow_study(tiny_study, epochs=40, n_trials=4)
    url = "sqlite:///tiny.db"
    log = folder / "killed.log"
    proc = start_search(study_file, cwd=folder, log=log)
    victim = None
    try:
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not (folder / "tiny.db").exists():
                continue
            try:
                study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db")
            except (KeyError, sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
                # No study yet, or the worker is creating the schema at this very moment.
                continue
            for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                # A trial after the first, once its whole mask is decided and training has begun.
                if (
                    trial.number >= 1
                    and len(trial.params) == 4
                    and search.WORKER_KEY in trial.system_attrs
                ):
                    victim = trial
        assert victim is not None, f"no trial was seen running:\n{log.read_text()[-3000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    storage = f"sqlite:///{folder}/tiny.db"
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.trials[victim.number].state == TrialState.RUNNING  # as the killed process left it

    log2 = folder / "resumed.log"
    second = start_search(study_file, cwd=folder, log=log2)
    wait_all([second], [log2], timeout=180)
    output = log2.read_text()
    assert (
        f"Failed 1 trial(s) left RUNNING by a stopped process; queued again: {victim.number}."
        in output
    ), output
    assert url in output

    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.trials
    assert trials[victim.number].state == TrialState.FAIL
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [victim.number]
    assert len(evaluated(study)) == 4
    # The killed trial's mask was queued again and trained by a later trial...
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1, [(t.number, t.state) for t in trials]
    retry = retries[0]
    assert retry.number > victim.number and retry.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retry.params == victim.params
    # The worker that took the trial over said so.
    assert (
        f"trial {retry.number} takes over the mask of trial {victim.number}, left RUNNING by a "
        "stopped process (attempt 2 of 4)" in output
    ), output
    assert retry.user_attrs["accuracy"] is not None and "reused_from" not in retry.user_attrs
    # ... and no mask was trained twice.
    masks = trained_masks(trials)
    assert len(masks) == len(set(masks)), masks


def test_three_workers_share_one_sqlite_study(tiny_study: Path) -> None:
    folder = tiny_study.parent
    n_trials, n_workers = 9, 3
    study_file = slow_study(tiny_study, epochs=3, n_trials=n_trials)
    logs = [folder / f"worker{i}.log" for i in range(n_workers)]
    procs = [start_search(study_file, cwd=folder, log=log) for log in logs]
    wait_all(procs, logs)

    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder}/tiny.db")
    trials = study.trials
    assert not [
        t.number for t in trials if t.state != TrialState.COMPLETE and t.state != TrialState.PRUNED
    ]
    # Each worker checks the total before it starts a trial: at most one extra trial per other
    # worker when they start at the same instant.
    assert n_trials <= len(trials) <= n_trials + n_workers - 1
    pids = {t.system_attrs[search.WORKER_KEY]["pid"] for t in trials}
    assert len(pids) >= 2, "the work was not shared"
    masks = trained_masks(trials)
    repeats = sum(c - 1 for c in Counter(masks).values())
    assert repeats <= n_workers - 1, masks
    assert study.user_attrs[search.CONFIG_ATTR]["search"]["n_trials"] == n_trials
