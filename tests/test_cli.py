"""The ``alphanas`` command end to end on the tiny study (in-process, except optuna's own CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from alphanas_optuna import cli, search
from alphanas_optuna.config import load_study_config

REPO = Path(__file__).resolve().parents[1]

EVALUATED = (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.fixture
def study_dir(tiny_study: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny study's folder, made the current directory (where the default storage goes)."""
    monkeypatch.chdir(tiny_study.parent)
    return tiny_study.parent


def load(name: str = "tiny", url: str = "sqlite:///tiny.db") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def evaluated(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=EVALUATED)


def trained_masks(study: optuna.Study) -> list[str]:
    """Masks that were fine-tuned for their first evaluation (not reused from an earlier trial,
    not pruned before training; the sampler's re-evaluations train a mask again on purpose)."""
    return [
        t.user_attrs["mask"]
        for t in evaluated(study)
        if t.user_attrs.get("accuracy") is not None
        and "reused_from" not in t.user_attrs
        and not t.user_attrs.get("evaluation")
    ]


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing on stderr"
    assert err[-1].startswith("alphanas: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def optuna_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "optuna"
    if not exe.exists():
        pytest.skip("optuna's command-line tool is not installed next to this Python")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=120, check=True
    )


# ------------------------------------------------------------------------------ search, resume


def test_search_runs_the_total_then_resumes_only_what_is_missing(
    study_dir: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["search", str(tiny_study), "--n-trials", "3"]) == 0
    out = capsys.readouterr().out
    study = load()
    assert len(study.trials) == 3 and len(evaluated(study)) == 3
    best = study.best_trial
    assert f"Best mask: {best.user_attrs['mask']} (trial {best.number}" in out
    assert f"A = {best.user_attrs['accuracy']:.4f}" in out
    assert f"Q = {best.user_attrs['quality']:.4f}" in out
    assert "Stored in: sqlite:///tiny.db" in out
    # What the answer gains and loses against the full model, measured in the same study.
    full = study.trials[0]
    assert full.user_attrs["mask"] == "1111"
    if best.number != full.number:
        assert "Against the full model 1111 (trial 0, measured in this study):" in out
        kept = best.user_attrs["n_layers"]
        assert f"layers kept:      {kept} of 4" in out
        share = 100 * best.user_attrs["n_params"] / full.user_attrs["n_params"]
        assert "% of the full model's" in out and f"= {share:.1f}%" in out
        ratio = full.user_attrs["eval_seconds"] / best.user_attrs["eval_seconds"]
        assert f"inference speed:  {ratio:.2f}x the full model's on the validation split" in out
    # The dashboard names the objective value.
    assert study.metric_names == ["Q"]
    assert "optuna-dashboard sqlite:///tiny.db" in out
    assert (study_dir / "tiny.db").is_file()

    # The study describes itself: the study file's settings and the model's size.
    config = load_study_config(tiny_study)
    assert study.user_attrs[search.CONFIG_ATTR] == config.to_dict()
    assert study.user_attrs["alphanas_n_layers"] == 4
    assert study.user_attrs["alphanas_full_params"] > 0
    for trial in study.trials:
        worker = trial.system_attrs[search.WORKER_KEY]
        assert worker["pid"] > 0 and worker["host"]

    # The same command again: the study is complete, nothing runs.
    assert cli.main(["search", str(tiny_study), "--n-trials", "3"]) == 0
    captured = capsys.readouterr()
    assert "already holds 3 of 3 trials" in captured.err
    assert "Best mask:" in captured.out
    assert len(load().trials) == 3

    # A larger total adds only the missing trials, and trains no mask twice.
    assert cli.main(["search", str(tiny_study), "--n-trials", "5"]) == 0
    err = capsys.readouterr().err
    assert "[5/5] trial    4" in err
    # Trial lines use the summary's words: feasible or infeasible, not Optuna's states.
    trial_lines = [line for line in err.splitlines() if line.startswith("[")]
    assert all(" feasible" in line or "infeasible: " in line for line in trial_lines), err
    assert "complete" not in err
    study = load()
    assert [t.number for t in study.trials] == list(range(5))
    assert len(evaluated(study)) == 5
    masks = trained_masks(study)
    assert len(masks) == len(set(masks)), masks


def test_study_name_and_storage_options(
    study_dir: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{study_dir / 'elsewhere.db'}"
    argv = ["search", str(tiny_study), "--storage", url, "--study-name", "other", "--n-trials", "1"]
    assert cli.main(argv) == 0
    assert not (study_dir / "tiny.db").exists()
    assert len(evaluated(load("other", url))) == 1
    assert f"optuna-dashboard {url}" in capsys.readouterr().out


@pytest.mark.parametrize("two", [False, True], ids=["maximize", "maximize-minimize"])
def test_a_study_made_with_optuna_create_study_is_used(
    study_dir: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str], two: bool
) -> None:
    directions = ["--directions", "maximize", "minimize"] if two else ["--direction", "maximize"]
    optuna_cli(
        "create-study", "--study-name", "tiny", "--storage", "sqlite:///tiny.db", *directions
    )
    assert cli.main(["search", str(tiny_study), "--n-trials", "1"]) == 0
    out = capsys.readouterr().out
    study = load()
    assert len(study.directions) == (2 if two else 1)
    assert len(evaluated(study)) == 1
    if two:
        assert "Pareto front of the feasible masks (accuracy vs parameters)" in out
        assert study.metric_names == ["accuracy", "n_params"]
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            assert trial.values == [trial.user_attrs["accuracy"], trial.user_attrs["n_params"]]
    else:
        assert "Best mask:" in out


def test_a_study_with_other_directions_is_refused(
    study_dir: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    optuna_cli(
        "create-study", "--study-name", "tiny", "--storage", "sqlite:///tiny.db",
        "--direction", "minimize",
    )  # fmt: skip
    assert cli.main(["search", str(tiny_study)]) == cli.EXIT_USAGE
    line = error_line(capsys)
    assert "'tiny'" in line and "(minimize)" in line and "(maximize)" in line
    assert str(tiny_study) in line
    assert load().trials == []


# ------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing study file", "study file not found"),
        ("bad toml", "not valid TOML"),
        ("unknown key", "unknown key [training] 'epocs'"),
        ("missing --data", "--data"),
        ("data folder without train file", "no train file found"),
        ("missing model folder", "does not exist"),
        ("missing model package", "not installed"),
        ("hub unreachable", "--data"),
        ("storage not a url", "not a database URL"),
        ("n-trials 0", "--n-trials must be >= 1"),
        ("study file is a folder", "is a folder, not a study file"),
        ("empty csv", "is empty (0 bytes)"),
        ("storage folder missing", "does not exist"),
        ("unknown model module", "install the Python package that provides it"),
        ("missing distillation teacher", "[training.distill] teacher: model path"),
    ],
)
def test_bad_inputs_give_one_line_and_exit_2(
    study_dir: Path,
    tiny_study: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    needle: str,
) -> None:
    text = tiny_study.read_text()
    model_line = next(line for line in text.splitlines() if line.startswith("name = "))
    source_line = next(line for line in text.splitlines() if line.startswith("source = "))
    argv = ["search", str(tiny_study)]
    if case == "missing study file":
        argv = ["search", "nope.toml"]
    elif case == "bad toml":
        tiny_study.write_text("[model\n")
    elif case == "unknown key":
        tiny_study.write_text(text.replace("epochs = 3\nlearning_rate", "epocs = 3\nlearning_rate"))
    elif case == "missing --data":
        argv += ["--data", str(study_dir / "no-such-folder")]
    elif case == "data folder without train file":
        (study_dir / "empty").mkdir()
        argv += ["--data", "empty"]
    elif case == "missing model folder":
        tiny_study.write_text(text.replace(model_line, f'name = "{study_dir / "no-model"}"'))
    elif case == "missing model package":
        tiny_study.write_text(text.replace(model_line, 'name = "package:no_such_model_pkg"'))
    elif case == "hub unreachable":
        tiny_study.write_text(
            text.replace(source_line, 'source = "no-such-org/no-such-dataset-alphanas"')
        )
    elif case == "storage not a url":
        argv += ["--storage", "tiny.db"]
    elif case == "n-trials 0":
        argv += ["--n-trials", "0"]
    elif case == "study file is a folder":
        argv = ["search", str(study_dir)]
    elif case == "empty csv":
        (study_dir / "csv").mkdir()
        (study_dir / "csv" / "train.csv").write_text("")
        argv += ["--data", "csv"]
    elif case == "storage folder missing":
        argv += ["--storage", f"sqlite:///{study_dir / 'no-dir' / 'x.db'}"]
    elif case == "unknown model module":
        tiny_study.write_text(text.replace(model_line, 'name = "package:nonexistent_module"'))
    elif case == "missing distillation teacher":
        teacher = f'distill = {{ teacher = "{study_dir / "no-teacher"}" }}'
        tiny_study.write_text(
            text.replace("freeze_embeddings = false", f"freeze_embeddings = false\n{teacher}")
        )
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, nothing before it
    capsys.readouterr()
    print(err[0], file=sys.stderr)
    line = error_line(capsys)
    assert needle in line, line
    if case == "hub unreachable":
        assert "Hugging Face Hub" in line and "local files" in line
    # A bad input leaves no study behind.
    assert not (study_dir / "tiny.db").exists()


def test_a_bad_input_leaves_an_existing_study_untouched(
    study_dir: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["search", str(tiny_study), "--n-trials", "1"]) == 0
    before = [(t.number, t.state, t.values) for t in load().trials]
    argv = ["search", str(tiny_study), "--n-trials", "4", "--data", str(study_dir / "nowhere")]
    assert cli.main(argv) == cli.EXIT_USAGE
    assert "no such file or folder" in error_line(capsys)
    assert [(t.number, t.state, t.values) for t in load().trials] == before


def test_ctrl_c_fails_the_trial_exits_130_and_the_same_command_resumes(
    study_dir: Path,
    tiny_study: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alphanas_optuna.mask import suggest_mask
    from alphanas_optuna.objective import AlphaNASObjective

    real_call = AlphaNASObjective.__call__
    calls = []

    def interrupted(self, trial):  # noqa: ANN001, ANN202
        calls.append(trial.number)
        if len(calls) == 2:
            suggest_mask(trial, 4)  # Ctrl-C in mid-trial, once the mask is decided
            raise KeyboardInterrupt
        return real_call(self, trial)

    monkeypatch.setattr(AlphaNASObjective, "__call__", interrupted)
    assert cli.main(["search", str(tiny_study), "--n-trials", "2"]) == cli.EXIT_INTERRUPTED
    assert "Run the same command again to resume" in capsys.readouterr().err.splitlines()[-1]
    study = load()
    assert [t.state for t in study.trials][1:] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[0].state in EVALUATED
    assert study.trials[2].params == study.trials[1].params  # the mask is queued again

    assert cli.main(["search", str(tiny_study), "--n-trials", "2"]) == 0
    study = load()
    assert len(evaluated(study)) == 2
    assert study.trials[2].state in EVALUATED
    assert study.trials[2].system_attrs["failed_trial"] == 1


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from alphanas_optuna.cli import main\n"
        "try:\n    main(['search', '--help'])\n"
        "except SystemExit as e:\n    assert e.code == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for option in ("--storage", "--study-name", "--n-trials", "--timeout", "--data"):
        assert option in result.stdout


# ------------------------------------------------------------------- pareto, report, export


@pytest.fixture
def fake_report(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Replace ``alphanas_optuna.report`` by a recorder of the calls the CLI makes."""
    calls: list[tuple] = []
    module = types.ModuleType("alphanas_optuna.report")

    def pareto(storage, study_name, out=None, png=False):  # noqa: ANN001, ANN202
        calls.append(("pareto", storage, study_name, out, png))
        return "PARETO TABLE"

    def table1(config, storage, study_name, out=None):  # noqa: ANN001, ANN202
        calls.append(("table1", config, storage, study_name, out))
        return "| TABLE 1 |"

    def export(config, storage, study_name, out_dir):  # noqa: ANN001, ANN202
        calls.append(("export", config, storage, study_name, out_dir))
        return out_dir

    module.pareto, module.table1, module.export = pareto, table1, export
    monkeypatch.setitem(sys.modules, "alphanas_optuna.report", module)
    return calls


def test_pareto_report_export_pass_their_arguments(
    study_dir: Path,
    tiny_study: Path,
    capsys: pytest.CaptureFixture[str],
    fake_report: list[tuple],
) -> None:
    optuna.create_study(study_name="tiny", storage="sqlite:///tiny.db", direction="maximize")
    data = study_dir / "data"

    argv = ["pareto", "--storage", "sqlite:///tiny.db", "--study-name", "tiny"]
    assert cli.main([*argv, "--out", "front.html", "--png"]) == 0
    assert fake_report[-1] == ("pareto", "sqlite:///tiny.db", "tiny", Path("front.html"), True)
    assert "PARETO TABLE" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert fake_report[-1] == ("pareto", "sqlite:///tiny.db", "tiny", None, False)

    assert cli.main(["report", str(tiny_study), "--data", str(data), "--out", "t1.md"]) == 0
    name, config, storage, study_name, out = fake_report[-1]
    assert (name, storage, study_name, out) == (
        "table1",
        "sqlite:///tiny.db",
        "tiny",
        Path("t1.md"),
    )
    assert config.data.source == str(data.resolve())
    assert config.model == load_study_config(tiny_study).model
    assert "| TABLE 1 |" in capsys.readouterr().out

    assert cli.main(["export", str(tiny_study), "--out", "best"]) == 0
    assert fake_report[-1][0] == "export" and fake_report[-1][2:] == (
        "sqlite:///tiny.db",
        "tiny",
        Path("best"),
    )
    assert fake_report[-1][1] == load_study_config(tiny_study)


@pytest.mark.parametrize("command", ["pareto", "report", "export"])
def test_pareto_report_export_of_a_missing_study_exit_2(
    study_dir: Path,
    tiny_study: Path,
    capsys: pytest.CaptureFixture[str],
    fake_report: list[tuple],
    command: str,
) -> None:
    optuna.create_study(study_name="other", storage="sqlite:///tiny.db")
    if command == "pareto":
        argv = ["pareto", "--storage", "sqlite:///tiny.db", "--study-name", "tiny"]
    else:
        argv = [command, str(tiny_study), "--out", "x"]
    assert cli.main(argv) == cli.EXIT_USAGE
    line = error_line(capsys)
    assert "no study named 'tiny'" in line and "other" in line
    assert fake_report == []


def test_pareto_of_a_real_study(
    study_dir: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["search", str(tiny_study), "--n-trials", "2"]) == 0
    capsys.readouterr()
    argv = ["pareto", "--storage", "sqlite:///tiny.db", "--study-name", "tiny", "--out", "f.html"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    best = load().best_trial.user_attrs["mask"]
    assert best in out
    assert (study_dir / "f.html").is_file()


def test_a_trial_whose_worker_never_started_is_failed_after_the_grace_period() -> None:
    """A process killed between creating a trial and starting the objective leaves a RUNNING
    trial with no worker record and no heartbeat: it is failed once older than the grace period."""
    import time

    import optuna

    from alphanas_optuna.search import recover_dead_trials

    study = optuna.create_study(direction="maximize")
    orphan = study.ask({"layer_00": optuna.distributions.CategoricalDistribution((0, 1))})
    time.sleep(0.05)
    assert recover_dead_trials(study, grace_period=3600) == []
    assert study.trials[0].state == TrialState.RUNNING
    assert recover_dead_trials(study, grace_period=0.01) == [orphan.number]
    assert study.trials[0].state == TrialState.FAIL
    # Its mask is queued again.
    assert study.trials[1].state == TrialState.WAITING
    assert study.trials[1].params == {"layer_00": orphan.params["layer_00"]}


def test_printed_storage_urls_hide_the_password() -> None:
    from alphanas_optuna.storage import without_password

    url = "postgresql+psycopg2://alphanas:s3cret@db.example.org:5432/alphanas"
    assert (
        without_password(url) == "postgresql+psycopg2://alphanas:***@db.example.org:5432/alphanas"
    )
    assert without_password("sqlite:///quickstart.db") == "sqlite:///quickstart.db"


def test_a_searched_study_continues_from_python_with_its_sampler_and_objective(
    study_dir: Path, tiny_study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import alphanas_optuna
    from alphanas_optuna import AlphaNASObjective, AlphaNASSampler

    assert cli.main(["search", str(tiny_study), "--n-trials", "2"]) == 0
    # optuna.load_study gives TPE: samplers are not stored.
    assert not isinstance(load().sampler, AlphaNASSampler)
    study = alphanas_optuna.load_study(storage="sqlite:///tiny.db", study_name="tiny")
    assert isinstance(study.sampler, AlphaNASSampler)
    objective = alphanas_optuna.load_objective(study, data=str(study_dir / "data"))
    assert isinstance(objective, AlphaNASObjective)
    config = load_study_config(tiny_study)
    assert objective.n_layers == 4 and objective.fitness == config.fitness
    assert objective.training == config.training
    study.optimize(objective, n_trials=1)
    assert len(evaluated(load())) == 3
    assert load().trials[2].user_attrs["mask"] != "?"

    plain = optuna.create_study(study_name="plain", storage="sqlite:///tiny.db")
    with pytest.raises(ValueError, match="not made by `alphanas search`"):
        alphanas_optuna.load_study(storage="sqlite:///tiny.db", study_name="plain")
    with pytest.raises(ValueError, match="no study named 'nope'"):
        alphanas_optuna.load_study(storage="sqlite:///tiny.db", study_name="nope")
    del plain


def test_a_pruner_from_the_study_file_stops_trials_at_an_evaluation_point(
    study_dir: Path, tiny_study: Path
) -> None:
    """[pruner] reaches the study: here a threshold no toy model reaches at its first of two
    evaluation points, so every trained trial is stopped there."""
    text = tiny_study.read_text().replace("[training]\n", "[training]\nevaluations = 2\n")
    text += "\n[pruner]\nname = 'threshold'\nlower = 0.99\n"
    tiny_study.write_text(text)
    assert cli.main(["search", str(tiny_study), "--n-trials", "2"]) == 0
    study = load()
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    for t in study.trials:
        assert t.user_attrs["pruned_at_step"] == 9  # the first of 2 points in 18 steps
        assert list(t.intermediate_values) == [9]
    assert study.user_attrs[search.CONFIG_ATTR]["pruner"] == {"name": "threshold", "lower": 0.99}


@pytest.mark.filterwarnings("error::optuna.exceptions.ExperimentalWarning")
def test_recovery_messages_promise_a_retry_only_when_one_was_queued() -> None:
    import io

    from optuna.distributions import CategoricalDistribution

    study = optuna.create_study()
    dist = {"layer_00": CategoricalDistribution((0, 1))}
    for _ in range(2):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL, params={"layer_00": 1}, distributions=dist
            )
        )
    # Trial 0's mask was queued again (as Optuna's retry callback does); trial 1's was not.
    study.enqueue_trial({"layer_00": 1})
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    study._storage.set_trial_system_attr(waiting._trial_id, "failed_trial", 0)
    study._storage.set_trial_system_attr(waiting._trial_id, "retry_history", [0])
    out = io.StringIO()
    search._report_recovered(study, [0, 1], out)
    text = out.getvalue()
    assert "queued again: 0;" in text
    assert "not queued again (3 attempts, or no mask decided yet): 1." in text
    assert "will be evaluated again" not in text
    line = search._takeover_line(study._storage.get_trial(waiting._trial_id))
    assert line == (
        f"trial {waiting.number} takes over the mask of trial 0, left RUNNING by a stopped "
        "process (attempt 2 of 4)"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
def test_a_read_only_sqlite_file_is_named_for_a_non_root_user(tmp_path: Path) -> None:
    import pwd
    import shutil
    import stat
    import tempfile

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    folder = Path(tempfile.mkdtemp(prefix="alphanas-ro-"))
    try:
        folder.chmod(0o755)
        db = folder / "ro.db"
        optuna.create_study(study_name="ro", storage=f"sqlite:///{db}", direction="maximize")
        db.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        study_file = folder / "ro.toml"
        study_file.write_text("[model]\nname = 'package:nothing_here'\n")
        study_file.chmod(0o644)
        code = (
            "import sys; from alphanas_optuna.cli import main; "
            f"sys.exit(main(['search', {str(study_file)!r}, '--storage', 'sqlite:///{db}', "
            "'--study-name', 'ro']))"
        )
        # The test's Python may live where 'nobody' cannot read (a pyenv under /root): then the
        # system's Python of the same version runs with this environment's packages.
        import site

        python = sys.executable
        env = {**os.environ, "HOME": str(folder)}
        if not os.access(os.path.realpath(python), os.X_OK) or "/root/" in os.path.realpath(python):
            python = (
                shutil.which(
                    f"python{sys.version_info.major}.{sys.version_info.minor}",
                    path="/usr/bin:/usr/local/bin",
                )
                or ""
            )
            if not python:
                pytest.skip("no Python that 'nobody' can run")
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), *site.getsitepackages()])
        proc = subprocess.run(
            [python, "-c", code],
            cwd=folder,
            user=nobody.pw_uid,
            group=nobody.pw_gid,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
        assert f"the SQLite file {db} is read-only for this user" in proc.stderr
    finally:
        shutil.rmtree(folder, ignore_errors=True)
