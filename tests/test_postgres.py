"""Two ``alphanas search`` workers on a real PostgreSQL server (the several-machines setup).

Needs ``ALPHANAS_TEST_POSTGRES_URL`` (``.ci/run`` starts a server and sets it), e.g.
``postgresql+psycopg2://alphanas:alphanas@127.0.0.1:55432/alphanas``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from workers import slow_study, start_search, trained_masks

from alphanas_optuna import search
from alphanas_optuna.storage import without_password

pytestmark = pytest.mark.postgres

URL = os.environ.get("ALPHANAS_TEST_POSTGRES_URL", "")


@pytest.fixture
def postgres_url() -> str:
    if not URL:
        pytest.skip("ALPHANAS_TEST_POSTGRES_URL is not set (.ci/run starts a server and sets it)")
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(URL, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any reason the server is not usable
        pytest.skip(f"PostgreSQL at ALPHANAS_TEST_POSTGRES_URL is unreachable: {exc}")
    return URL


def test_two_workers_on_postgresql_finish_one_study(tiny_study: Path, postgres_url: str) -> None:
    folder = tiny_study.parent
    name = f"alphanas-test-{uuid.uuid4().hex[:12]}"
    n_trials, n_workers = 6, 2
    study_file = slow_study(tiny_study, epochs=3, n_trials=n_trials)
    logs = [folder / f"pg-worker{i}.log" for i in range(n_workers)]
    args = ("--storage", postgres_url, "--study-name", name)
    procs = [start_search(study_file, *args, cwd=folder, log=log) for log in logs]
    try:
        deadline = time.monotonic() + 240
        for proc, log in zip(procs, logs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"a worker did not finish in time:\n{log.read_text()[-3000:]}")
            assert proc.returncode == 0, log.read_text()[-3000:]

        study = optuna.load_study(study_name=name, storage=postgres_url)
        trials = study.trials
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        assert n_trials <= len(trials) <= n_trials + n_workers - 1
        assert len({t.system_attrs[search.WORKER_KEY]["pid"] for t in trials}) == n_workers
        masks = trained_masks(trials)
        assert sum(c - 1 for c in Counter(masks).values()) <= n_workers - 1, masks
        assert study.user_attrs[search.CONFIG_ATTR]["search"]["n_trials"] == n_trials
        log = logs[0].read_text()
        assert f"Stored in: {without_password(postgres_url)}" in log
        password = postgres_url.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
        assert not password or f":{password}@" not in log  # never echoed
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        try:
            optuna.delete_study(study_name=name, storage=postgres_url)
        except KeyError:
            pass
    assert name not in optuna.get_all_study_names(postgres_url)
