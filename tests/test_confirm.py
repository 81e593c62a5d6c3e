"""alphanas confirm: the top candidates re-trained with several seeds, stored in the study,
resumable, and used by winner/report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from alphanas_optuna import cli, winner
from alphanas_optuna.confirm import CONFIRMATION_KEY, confirmed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def searched(tiny_study: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny study, searched for 8 trials, with a [confirm] budget."""
    monkeypatch.chdir(tiny_study.parent)
    tiny_study.write_text(tiny_study.read_text() + "\n[confirm]\ntop = 2\nseeds = 2\nepochs = 4\n")
    assert cli.main(["search", str(tiny_study)]) == 0
    return tiny_study


def _load() -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage="sqlite:///tiny.db")


def _runs(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if CONFIRMATION_KEY in t.system_attrs]


def test_confirm_stores_each_run_resumes_and_names_the_answer(
    searched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from alphanas_optuna.answer import estimates_of

    study = _load()
    masks, means = estimates_of(study)
    expected = [m for _, m in sorted(zip(means, masks), reverse=True)][:2]
    assert cli.main(["confirm", str(searched)]) == 0
    out = capsys.readouterr().out
    study = _load()
    runs = _runs(study)
    assert len(runs) == 4 and all(t.state == TrialState.COMPLETE for t in runs)
    assert sorted({t.user_attrs["mask"] for t in runs}) == sorted(expected)
    assert sorted(t.user_attrs["seed"] for t in runs) == [0, 0, 1, 1]
    for t in runs:
        assert t.user_attrs["confirmation"] is True
        assert t.user_attrs["fidelity"].startswith("confirm-")
        assert t.value == pytest.approx(t.user_attrs["quality"])
    assert "| rank | mask |" in out and "2 | " in out
    assert "0 run(s) stored, 4 to run" in out
    # The answer is now the confirmed mask with the best mean over its runs.
    answer = winner(study)
    assert answer.confirmed and answer.n_evaluations == 2
    best = max(confirmed(study), key=lambda c: c.quality[0])
    assert answer.mask == best.mask
    assert answer.quality == pytest.approx(best.quality[0])
    # Again: nothing is missing, nothing runs.
    assert cli.main(["confirm", str(searched)]) == 0
    assert "4 run(s) stored, 0 to run" in capsys.readouterr().out
    assert len(_runs(_load())) == 4
    # The report says so.
    assert cli.main(["report", str(searched)]) == 0
    report_text = capsys.readouterr().out
    assert f"`{answer.mask}`" in report_text
    assert (
        "The best mask was confirmed: the best mean over 2 `alphanas confirm` runs" in report_text
    )
    # The search does not count confirmation runs as its trials, and its sampler ignores them.
    assert cli.main(["search", str(searched)]) == 0
    assert "already holds 8 of 8 trials" in capsys.readouterr().err
    assert cli.main(["search", str(searched), "--n-trials", "10"]) == 0
    study = _load()
    assert len(study.trials) == 14
    assert all("AlphaNASSampler:proposal" in t.system_attrs for t in study.trials[-2:])


def test_bad_top_seeds_and_nothing_to_confirm_exit_2(
    searched: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["confirm", str(searched), "--top", "0"]) == 2
    err = capsys.readouterr().err
    assert "--top must be an integer >= 1, got 0" in err and err.count("\n") == 1
    assert cli.main(["confirm", str(searched), "--seeds", "-1"]) == 2
    assert "--seeds must be an integer >= 1" in capsys.readouterr().err
    empty = optuna.create_study(study_name="empty", storage="sqlite:///tiny.db")
    empty.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs={"mask": "1111"}))
    argv = ["confirm", str(searched), "--study-name", "empty", "--storage", "sqlite:///tiny.db"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "nothing feasible to confirm" in err and err.count("\n") == 1
    assert len(_runs(_load())) == 0


def test_a_kill_9_in_mid_confirm_loses_at_most_the_running_fine_tune(searched: Path) -> None:
    text = searched.read_text().replace("epochs = 4\n", "epochs = 60\n")
    searched.write_text(text)
    code = (
        "import sys; from alphanas_optuna.cli import main; "
        f"sys.exit(main(['confirm', {str(searched)!r}]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=searched.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if len(_runs(_load())) >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "confirm finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored = len(_runs(_load()))
    assert 1 <= stored < 4
    assert cli.main(["confirm", str(searched)]) == 0
    runs = _runs(_load())
    assert len(runs) == 4
    assert len({(t.user_attrs["mask"], t.user_attrs["seed"]) for t in runs}) == 4


def test_candidates_top_estimates_or_the_best_of_each_depth_on_a_front() -> None:
    from optuna.distributions import CategoricalDistribution

    from alphanas_optuna.confirm import candidates

    dist = {f"layer_{i:02d}": CategoricalDistribution((0, 1)) for i in range(3)}
    points = {"100": 0.70, "010": 0.72, "110": 0.80, "011": 0.78, "111": 0.82}
    single = optuna.create_study(direction="maximize")
    two = optuna.create_study(directions=["maximize", "minimize"])
    for mask, acc in points.items():
        params = {f"layer_{i:02d}": int(c) for i, c in enumerate(mask)}
        n = 10.0 + mask.count("1")
        single.add_trial(optuna.trial.create_trial(value=acc, params=params, distributions=dist))
        two.add_trial(optuna.trial.create_trial(values=[acc, n], params=params, distributions=dist))
    from alphanas_optuna.answer import estimates_of

    masks, means = estimates_of(single)
    ranked = [m for _, m in sorted(zip(means, masks), reverse=True)]
    assert candidates(single, 2) == ranked[:2]
    # Two objectives: the best of each depth on the front (010 beats 100; 110 beats 011).
    assert candidates(two, 1) == ["010", "110", "111"]


def test_distilled_confirmation_runs_share_one_teacher_and_have_their_own_fidelity(
    searched: Path, step_counter: list[int]
) -> None:
    import dataclasses
    import io
    import math

    from alphanas_optuna.config import load_study_config
    from alphanas_optuna.confirm import confirm, fidelity
    from alphanas_optuna.distill import DistillConfig

    plain = load_study_config(searched)
    config = plain.replace(training=dataclasses.replace(plain.training, distill=DistillConfig()))
    assert fidelity(config) != fidelity(plain)
    # The seed of the fine-tune that makes the teacher matters, unless a teacher is given.
    reseeded = config.replace(confirm=dataclasses.replace(config.confirm, seed=7))
    assert fidelity(reseeded) != fidelity(config)
    given = dataclasses.replace(config.training.distill, teacher="some-org/fine-tuned-bert")
    with_given = config.replace(training=dataclasses.replace(config.training, distill=given))
    reseeded_given = with_given.replace(confirm=dataclasses.replace(config.confirm, seed=7))
    assert fidelity(with_given) != fidelity(config)
    assert fidelity(reseeded_given) == fidelity(with_given)
    steps = step_counter
    ranking = confirm(
        config, "sqlite:///tiny.db", "tiny", masks=["1100", "0110"], out=io.StringIO()
    )
    assert sorted(c.mask for c in ranking) == ["0110", "1100"]
    assert all(len(c.seeds) == 2 for c in ranking)
    per_run = 4 * math.ceil((160 - 48) / 16)  # [confirm] epochs x batches of all the rest
    # Four runs and one teacher (at the first seed), not one teacher per run.
    assert len(steps) == 5 * per_run
    assert {t.user_attrs["fidelity"] for t in _runs(_load())} == {fidelity(config)}
