"""Running an AlphaNAS study on an Optuna storage: the work behind ``alphanas search``.

:func:`search` opens (or creates) the study, checks its directions, fails trials that dead workers
left RUNNING and queues their masks again, then optimizes until the study holds ``n_trials``
trials; the same call in several processes (or machines, with PostgreSQL) shares the work. It joins
the study file (:mod:`alphanas_optuna.config`), the objective and the sampler; everything that
needs torch is imported inside functions, so importing this module is fast.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import logging
import math
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphanas_optuna.errors import UsageError, first_line, usage_errors
from alphanas_optuna.storage import (
    check_storage_url,
    check_writable,
    default_storage,
    existing_directions,
    open_storage,
    sqlite_file,
    without_password,
)

if TYPE_CHECKING:
    import optuna

    from alphanas_optuna.config import StudyConfig
    from alphanas_optuna.objective import AlphaNASObjective
    from alphanas_optuna.results import EvaluatedTrial

__all__ = [
    "CONFIG_ATTR",
    "METRIC_NAMES",
    "WORKER_KEY",
    "SearchResult",
    "load_objective",
    "load_study",
    "recover_dead_trials",
    "search",
    "stored_config",
    "summarize",
]

#: Trial system attribute with the host and process that run the trial.
WORKER_KEY = "alphanas:worker"
#: Study user attribute holding the validated study file (:meth:`StudyConfig.to_dict`).
CONFIG_ATTR = "alphanas_config"
# A process stops after this many failed trials in a row (e.g. out of memory for every mask).
_MAX_CONSECUTIVE_FAILURES = 5
# Times a dead worker's mask is queued again before it is given up.
_MAX_RETRY = 3


@dataclasses.dataclass
class SearchResult:
    """What :func:`search` did.

    Attributes:
        storage: The storage URL.
        study_name: The study's name.
        n_trials: Evaluated (COMPLETE or PRUNED) trials in the study at the end.
        target: The study's total ``n_trials`` (``None``: until the timeout).
        summary: The text printed at the end.
    """

    storage: str
    study_name: str
    n_trials: int
    target: int | None
    summary: str


def search(
    config: StudyConfig,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    progress: bool = True,
) -> SearchResult:
    """Run or resume the study that ``config`` describes until it holds ``n_trials`` trials.

    It runs in two phases. *Before the model is loaded*, an existing study is checked (its
    directions must fit AlphaNAS), trials left RUNNING by dead workers are failed and their masks
    queued again, and the remaining work is counted: when none is left, the summary is printed
    without loading anything. *With the model loaded*, the study is created or joined (another
    worker may have made it, or finished it, meanwhile) and the same checks run again on what is
    there now, then the trials still missing are run.

    Args:
        config: The validated study file (with ``--data`` already applied).
        storage: Optuna storage URL; default ``sqlite:///<study_name>.db``.
        study_name: Default: ``config.study_name``.
        n_trials: Total evaluated trials of the study over every run and worker; default from
            ``[search]``. ``None`` there too: run until ``timeout`` or Ctrl-C.
        timeout: Seconds this process searches; default ``[search] timeout``.
        progress: Show a progress bar and one line per trial on stderr.

    Raises:
        UsageError: A bad study, storage, data or model; nothing was written to the storage.
        KeyboardInterrupt: Ctrl-C; the running trial is FAIL and the study can be resumed.
    """
    import optuna

    name = study_name or config.study_name
    url = storage or default_storage(name)
    total = n_trials if n_trials is not None else config.n_trials()
    if total is not None and total < 1:
        raise UsageError(f"--n-trials must be >= 1, got {total}")
    timeout = timeout if timeout is not None else config.search.timeout
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be > 0 seconds, got {timeout}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_interrupts()
    wanted = [d.lower() for d in config.search.directions]

    # Phase 1, before the model is loaded: is there anything to do?
    check_storage_url(url)
    check_writable(url)
    rdb = _open(url, config, create=False)  # None: a SQLite file not made yet
    directions = wanted
    existing = existing_directions(rdb, name) if rdb is not None else None
    if existing is not None:
        directions = _fitting_directions(existing, wanted, name, url, config)
        study = optuna.load_study(study_name=name, storage=rdb)
        if not _work_left(study, total, config):
            _name_metrics(study)
            return _finish(study, url, total)

    # Phase 2, with the model loaded: create or join the study, check again, run what is missing.
    with usage_errors():
        objective = _load_objective(config)
    if rdb is None:
        rdb = _open(url, config, create=True)
    sampler = config.make_sampler(n_layers=objective.n_layers)
    try:
        study = optuna.create_study(
            storage=rdb,
            study_name=name,
            directions=directions,
            sampler=sampler,
            pruner=config.make_pruner(),
            load_if_exists=True,
        )
    except Exception as exc:  # noqa: BLE001 - a storage we cannot write to
        raise UsageError(
            f"cannot create study {name!r} in {without_password(url)}: {first_line(exc)}"
        ) from exc
    # Another worker may have created the study a moment ago, with other directions.
    _fitting_directions([d.name.lower() for d in study.directions], directions, name, url, config)
    _record_study_attrs(study, config, objective)
    _name_metrics(study)
    if _work_left(study, total, config):
        _optimize(study, objective, total, timeout, progress, config.search.grace_period)
    return _finish(study, url, total)


#: What the objective returns, by the number of directions: the names the dashboard shows.
METRIC_NAMES = {1: ["Q"], 2: ["accuracy", "n_params"]}


def _name_metrics(study: optuna.Study) -> None:
    """Name the objective values in the study (optuna-dashboard shows "Objective 0" otherwise)."""
    import optuna

    names = METRIC_NAMES[len(study.directions)]
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def _open(url: str, config: StudyConfig, *, create: bool) -> optuna.storages.RDBStorage | None:
    """The study's storage with the heartbeat of ``[search]`` (a dead worker's trial is retried)."""
    return open_storage(
        url,
        create=create,
        heartbeat_interval=config.search.heartbeat_interval,
        grace_period=config.search.grace_period,
        stale_trial_callback=_retry_trial,
    )


def _work_left(study: optuna.Study, total: int | None, config: StudyConfig) -> bool:
    """Fail what dead workers left RUNNING (their masks are queued again), then whether trials
    are still missing; if not, say so."""
    _report_recovered(study, recover_dead_trials(study, config.search.grace_period), sys.stderr)
    return not _nothing_left(study, total, sys.stderr)


def stored_config(study: optuna.Study) -> StudyConfig:
    """The study file that ``alphanas search`` stored in the study (``alphanas_config``).

    Raises:
        ValueError: The study holds no (valid) ``alphanas_config``: ``alphanas search`` did not
            make it.
    """
    from alphanas_optuna.config import StudyConfig, StudyConfigError

    raw = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(raw, dict):
        raise ValueError(
            f"study {study.study_name!r} holds no {CONFIG_ATTR!r} user attribute, so it was not "
            "made by `alphanas search`; build its sampler and objective yourself "
            "(AlphaNASSampler(...), AlphaNASObjective.from_pretrained(...))"
        )
    try:
        return StudyConfig.from_dict(raw)
    except StudyConfigError as exc:
        raise ValueError(
            f"study {study.study_name!r}: its {CONFIG_ATTR} is not valid: {exc}"
        ) from exc


def load_study(*, storage: str, study_name: str) -> optuna.Study:
    """Load a study made by ``alphanas search``, with the :class:`~alphanas_optuna.AlphaNASSampler`
    its stored settings describe (Optuna does not store samplers: ``optuna.load_study`` would give
    it TPE).

    Continue it from Python with :func:`load_objective`::

        import alphanas_optuna

        study = alphanas_optuna.load_study(storage="sqlite:///quickstart.db", study_name="quickstart")
        study.optimize(alphanas_optuna.load_objective(study), n_trials=2)

    Raises:
        UsageError: The storage cannot be opened.
        ValueError: No such study there, or ``alphanas search`` did not make it.
    """
    import optuna

    from alphanas_optuna.results import load_existing_study

    study = load_existing_study(storage, study_name)
    config = stored_config(study)
    n_layers = study.user_attrs.get("alphanas_n_layers")
    sampler = config.make_sampler(n_layers=int(n_layers) if n_layers else None)
    return optuna.load_study(
        study_name=study_name,
        storage=study._storage,
        sampler=sampler,
        pruner=config.make_pruner(),
    )


def load_objective(study: optuna.Study, *, data: str | None = None) -> AlphaNASObjective:
    """The :class:`~alphanas_optuna.AlphaNASObjective` of a study made by ``alphanas search``,
    built from its stored settings (this loads the model and the data).

    Args:
        study: The study (e.g. from :func:`load_study`).
        data: Where the data is on this machine, as ``--data`` (default: the stored source).

    Raises:
        ValueError: ``alphanas search`` did not make the study; or a bad model or data source.
    """
    config = stored_config(study)
    if data is not None:
        source = str(Path(os.path.expanduser(data)).resolve())
        config = config.replace(data=dataclasses.replace(config.data, source=source))
    return _load_objective(config)


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C with a traceback; the CLI says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            return False
        return not (
            record.levelno == logging.WARNING and "failed with value None" in record.getMessage()
        )


def _quiet_interrupts() -> None:
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _NoInterruptTraceback) for f in logger.filters):
        logger.addFilter(_NoInterruptTraceback())


def _report_recovered(study: optuna.Study, numbers: list[int], out: Any) -> None:
    """Say which trials left RUNNING by a stopped process were failed, and whether their masks
    were queued again (Optuna's retry limit stops re-queuing a mask after a few attempts)."""
    if not numbers:
        return
    requeued = {_retried_from(t)[0] for t in study.get_trials(deepcopy=False)}
    again = [n for n in numbers if n in requeued]
    given_up = [n for n in numbers if n not in requeued]
    parts = [f"Failed {len(numbers)} trial(s) left RUNNING by a stopped process"]
    if again:
        parts.append(f"queued again: {', '.join(map(str, again))}")
    if given_up:
        parts.append(
            f"not queued again ({_MAX_RETRY} attempts, or no mask decided yet): "
            f"{', '.join(map(str, given_up))}"
        )
    print("; ".join(parts) + ".", file=out)


def _retried_from(trial: optuna.trial.FrozenTrial) -> tuple[int | None, list[int]]:
    """The trial whose mask ``trial`` retries, and the retry history (Optuna's retry callback;
    its helpers are experimental, so their warning is silenced)."""
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return (
            RetryFailedTrialCallback.retried_trial_number(trial),
            list(RetryFailedTrialCallback.retry_history(trial)),
        )


def _takeover_line(trial: optuna.trial.FrozenTrial) -> str | None:
    """What a worker says when its trial re-runs the mask of a trial a stopped process left."""
    original, history = _retried_from(trial)
    if original is None:
        return None
    attempt = len(history) + 1
    return (
        f"trial {trial.number} takes over the mask of trial {original}, left RUNNING by a "
        f"stopped process (attempt {attempt} of {_MAX_RETRY + 1})"
    )


def _nothing_left(study: optuna.Study, total: int | None, out: Any) -> bool:
    from optuna.trial import TrialState

    if total is None:
        return False
    done = _count(study, (TrialState.COMPLETE, TrialState.PRUNED))
    running = _count(study, (TrialState.RUNNING,))
    if done + running < total:
        return False
    note = f" ({running} running in other workers)" if running else ""
    print(
        f"Study {study.study_name!r} already holds {done} of {total} trials{note}; nothing to run.",
        file=out,
    )
    return True


def _finish(study: optuna.Study, url: str, total: int | None) -> SearchResult:
    from optuna.trial import TrialState

    summary = summarize(study, url)
    print(summary)
    return SearchResult(
        storage=url,
        study_name=study.study_name,
        n_trials=_count(study, (TrialState.COMPLETE, TrialState.PRUNED)),
        target=total,
        summary=summary,
    )


def _load_objective(config: StudyConfig) -> Any:
    from alphanas_optuna.objective import AlphaNASObjective

    prefix = config.sampler.get("prefix")
    kwargs = {"prefix": prefix} if prefix else {}
    return AlphaNASObjective.from_pretrained(
        config.model.name,
        data=config.data,
        num_labels=config.model.num_labels,
        training=config.training,
        fitness=config.fitness,
        **kwargs,
    )


def _fitting_directions(
    existing: list[str], wanted: list[str], name: str, url: str, config: StudyConfig
) -> list[str]:
    """The existing study's directions if AlphaNAS can use them, else a :class:`UsageError`."""
    from optuna.study import StudyDirection

    from alphanas_optuna.objective import check_directions

    try:
        check_directions([StudyDirection[d.upper()] for d in existing])
    except (ValueError, KeyError) as exc:
        raise UsageError(
            f"study {name!r} in {url} has directions ({' '.join(existing)}) but the study file "
            f"{config.path} asks for ({' '.join(wanted)}); AlphaNAS needs 'maximize' (Q) or "
            "'maximize minimize' (accuracy, parameters). Use another --study-name, or delete the "
            f"study with `optuna delete-study --study-name {name} --storage {url}`."
        ) from exc
    if existing != wanted:
        print(
            f"Study {name!r} exists with directions ({' '.join(existing)}); searching in that mode "
            f"instead of the study file's ({' '.join(wanted)}).",
            file=sys.stderr,
        )
    return existing


def _record_study_attrs(study: optuna.Study, config: StudyConfig, objective: Any) -> None:
    """Store the study file's settings in the study, once (the first worker writes them)."""
    from alphanas_optuna import __version__

    attrs = study.user_attrs
    settings = config.to_dict()
    if CONFIG_ATTR not in attrs:
        study.set_user_attr(CONFIG_ATTR, settings)
        study.set_user_attr("alphanas_study_file", str(config.path) if config.path else None)
        study.set_user_attr("alphanas_version", __version__)
        study.set_user_attr("alphanas_n_layers", objective.n_layers)
        study.set_user_attr("alphanas_full_params", objective.n_params((1,) * objective.n_layers))
        return
    stored = dict(attrs[CONFIG_ATTR])
    mine = dict(settings)
    for d in (stored, mine):  # Workers may read the same data from different places.
        d["data"] = {k: v for k, v in dict(d.get("data", {})).items() if k != "source"}
    changed = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
    if changed:
        print(
            f"Note: the study file's [{'], ['.join(changed)}] differ from the settings the study "
            "was created with; earlier results are reused only where the training settings match.",
            file=sys.stderr,
        )


# ------------------------------------------------------------------------- workers and recovery


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _worker_info() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _is_alive(info: dict[str, Any]) -> bool:
    pid = int(info.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = info.get("start")
    return start is None or _process_start(pid) in (None, start)


def _retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Enqueue a failed trial's mask again (the heartbeat's and the start check's callback)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from alphanas_optuna.record import OUTCOME_ATTRS

    if not trial.params:
        return  # Killed before its mask was decided: nothing to retry.
    clean = type(trial)(
        number=trial.number,
        state=trial.state,
        value=None,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=trial.params,
        distributions=trial.distributions,
        # The retry is the same mask again; what the failed attempt learnt is not carried over.
        user_attrs={k: v for k, v in trial.user_attrs.items() if k not in OUTCOME_ATTRS},
        system_attrs={k: v for k, v in trial.system_attrs.items() if k != WORKER_KEY},
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,
        values=None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=_MAX_RETRY)(study, clean)


def recover_dead_trials(study: optuna.Study, grace_period: float | None = None) -> list[int]:
    """Fail the trials left RUNNING by dead processes and enqueue their masks again.

    Trials run on this host by a process that no longer exists are failed at once; trials of
    other hosts are failed by Optuna's heartbeat check once their heartbeat is older than the
    grace period. A trial that never recorded its worker (its process died between creating it
    and starting the objective, which every live worker does within seconds) is failed once it is
    older than ``grace_period`` seconds.

    Returns:
        The numbers of the trials this call failed.
    """
    import copy

    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed: list[int] = []
    host = socket.gethostname()
    storage = study._storage
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        info = trial.system_attrs.get(WORKER_KEY)
        if not isinstance(info, dict):
            started = trial.datetime_start
            if grace_period is None or started is None:
                continue
            if (now - started).total_seconds() <= grace_period:
                continue
        elif info.get("host") != host or _is_alive(info):
            continue
        try:
            if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                failed.append(trial.number)
                _retry_trial(study, copy.deepcopy(storage.get_trial(trial._trial_id)))
        except UpdateFinishedTrialError:
            pass  # Another worker failed it first.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
        optuna.storages.fail_stale_trials(study)
        after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    return sorted(set(failed) | (after - before))


def _count(study: optuna.Study, states: tuple[Any, ...]) -> int:
    """Search trials in ``states`` (``alphanas confirm`` runs are not the search's)."""
    from alphanas_optuna.sampler.digest import CONFIRMATION_KEY

    trials = study.get_trials(deepcopy=False, states=states)
    return sum(CONFIRMATION_KEY not in t.system_attrs for t in trials)


def _optimize(
    study: optuna.Study,
    objective: Any,
    total: int | None,
    timeout: float | None,
    progress: bool,
    grace_period: float | None = None,
) -> None:
    from optuna.trial import TrialState
    from tqdm.auto import tqdm

    evaluated = (TrialState.COMPLETE, TrialState.PRUNED)
    worker = _worker_info()

    current: list[int] = []

    def run_trial(trial: optuna.Trial) -> Any:
        current[:] = [trial._trial_id]
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_KEY, worker)
        line = _takeover_line(study._storage.get_trial(trial._trial_id))
        if line is not None:
            print(line, file=sys.stderr, flush=True)
        return objective(trial)

    bar = tqdm(
        total=total,
        initial=_count(study, evaluated),
        unit="trial",
        desc=study.study_name,
        file=sys.stderr,
        # A bar in a terminal; in a log file only the line per trial.
        disable=not (progress and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    failures = [0]

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = _count(study, evaluated)
        bar.n = done
        bar.refresh()
        if progress:
            shown = f"[{done}/{total}]" if total is not None else f"[{done}]"
            bar.write(f"{shown} {_trial_line(trial)}", file=sys.stderr)
        failures[0] = failures[0] + 1 if trial.state == TrialState.FAIL else 0
        if failures[0] >= _MAX_CONSECUTIVE_FAILURES:
            bar.write(
                f"alphanas: {failures[0]} trials failed in a row (see fail_reason in their user "
                "attributes); stopping this worker.",
                file=sys.stderr,
            )
            study.stop()
        # Trials other workers are running count too, so that N workers share the total; a trial
        # whose worker died is failed (and its mask queued again) before it is counted.
        if total is not None and done + _count(study, (TrialState.RUNNING,)) >= total:
            recover_dead_trials(study, grace_period)
            if done + _count(study, (TrialState.RUNNING,)) >= total:
                study.stop()

    # Everything alive now (libraries, the base model, the tokenised data) lives as long as the
    # search: keep it out of the garbage collections that every trial runs to free the sub-model.
    gc.collect()
    gc.freeze()
    try:
        study.optimize(run_trial, timeout=timeout, callbacks=[after_trial], gc_after_trial=False)
    except KeyboardInterrupt:
        # Optuna has marked the interrupted trial FAIL: queue its mask again, as for a killed one.
        if current:
            trial = study._storage.get_trial(current[0])
            if trial.state == TrialState.FAIL:
                _retry_trial(study, trial)
        raise
    finally:
        gc.unfreeze()
        bar.close()


def _trial_line(trial: optuna.trial.FrozenTrial) -> str:
    from optuna.trial import TrialState

    from alphanas_optuna.record import TrialRecord

    record = TrialRecord.read(trial) or TrialRecord(mask="?")
    parts = [f"trial {trial.number:>4}", record.mask]
    if record.accuracy is not None:
        parts.append(f"A={record.accuracy:.4f}")
    if record.n_params is not None:
        parts.append(f"N={record.n_params / 1e6:.2f}M")
    if record.quality is not None:
        parts.append(f"Q={record.quality:.4f}")
    # The words of the summary: a COMPLETE trial is feasible, a PRUNED one infeasible.
    if trial.state == TrialState.COMPLETE:
        state = "feasible"
    elif trial.state == TrialState.PRUNED:
        state = f"infeasible: {record.infeasible_reason}"
    elif trial.state == TrialState.FAIL and record.fail_reason:
        state = f"failed: {record.fail_reason}"
    else:
        state = trial.state.name.lower()
    if record.reused_from is not None:
        state += f" (result of trial {record.reused_from})"
    parts.append(state)
    return "  ".join(parts)


# ------------------------------------------------------------------------------------- summary


def summarize(study: optuna.Study, storage: str) -> str:
    """The study's answer (the best mask, or the Pareto front of a two-objective study) with A,
    N and Q, what it gains and loses against the full model measured in the same study, and
    where the study is stored."""
    from optuna.trial import TrialState

    from alphanas_optuna.results import (
        Measurement,
        best_feasible_trial,
        compare_to_full,
        evaluated_trials,
        front,
        full_model_trial,
        mixed_fidelity_note,
        stored_fitness,
        study_answer,
    )

    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state == s for t in trials) for s in TrialState}
    lines = [
        f"Study {study.study_name!r}: {counts[TrialState.COMPLETE]} feasible, "
        f"{counts[TrialState.PRUNED]} infeasible, {counts[TrialState.FAIL]} failed, "
        f"{counts[TrialState.RUNNING]} running trials."
    ]
    measured = {t.number: t for t in evaluated_trials(study)}
    full = full_model_trial(study)
    if not any(t.feasible for t in measured.values()):
        lines.append("No feasible mask yet (every evaluated mask was pruned as infeasible).")
    elif len(study.directions) == 1:
        answer = study_answer(study, stored_fitness(study))
        representative = best_feasible_trial(study, stored_fitness(study))
        # Other workers may have finished trials since `measured` was read: read it again.
        measured = {t.number: t for t in evaluated_trials(study)}
        best = measured[representative.number]
        same = [t for t in measured.values() if t.mask == best.mask and t.feasible]
        if len(same) > 1:  # What the mask measured: the mean of its evaluations.
            qualities = [t.quality for t in same if t.quality is not None]
            best = dataclasses.replace(
                best,
                accuracy=sum(t.accuracy for t in same) / len(same),
                quality=sum(qualities) / len(qualities) if qualities else None,
            )
        lines.append("Best mask: " + _describe(best))
        lines.append(
            f"  estimated Q = {answer.quality:.4f} ± {answer.stderr:.4f} from "
            f"{answer.n_evaluations} evaluation(s) (trials {', '.join(map(str, answer.trials))}): "
            "the best estimate from all the evidence, not the luckiest single trial"
        )
        if full is None:
            lines.append(
                "The full model was not evaluated in this study, so there is nothing to compare "
                "the best mask with ([sampler] include_full_mask = true evaluates it first)."
            )
        elif best.mask == full.mask:
            lines.extend(compare_to_full(Measurement.of(best), Measurement.of(full)).lines())
        else:
            lines.append(
                f"Against the full model {full.mask} (trial {full.number}, measured in this study):"
            )
            lines.extend(compare_to_full(Measurement.of(best), Measurement.of(full)).lines())
    else:
        members = front(study)
        lines.append(
            f"Pareto front of the feasible masks (accuracy vs parameters): {len(members)} masks"
            + (f"; against the full model (trial {full.number})" if full is not None else "")
        )
        for t in sorted(members, key=lambda e: -e.accuracy):
            vs = ""
            if full is not None:
                vs = "; " + compare_to_full(Measurement.of(t), Measurement.of(full)).short()
            lines.append(f"  {_describe(t)}{vs}")
    note = mixed_fidelity_note(study)
    if note is not None:
        lines.append(note)
    where = ""
    file = sqlite_file(storage)
    if file is not None and not file.is_absolute():
        where = f" ({file.resolve()})"
    shown = without_password(storage)
    lines.append(f"Stored in: {shown}{where}")
    lines.append(f"Dashboard: optuna-dashboard {shown}")
    return "\n".join(lines)


def _describe(trial: EvaluatedTrial) -> str:
    q = trial.quality
    return ", ".join(
        [
            f"{trial.mask} (trial {trial.number}, {trial.n_layers} of {len(trial.mask)} layers)",
            f"A = {trial.accuracy:.4f}",
            f"N = {trial.n_params / 1e6:.2f}M",
            f"Q = {q:.4f}" if q is not None and math.isfinite(q) else "Q = ?",
        ]
    )
