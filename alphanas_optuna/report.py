"""Results of a study: the Pareto front, the seed's Table 1, and the exported sub-model.

Three commands read a finished (or running) study and do not change its trials:

- :func:`pareto` (``alphanas pareto``): the Pareto front over (accuracy A, parameters N) of every
  evaluated trial, as a markdown table, a Plotly figure (HTML, PNG on request), and a figure plus a
  note attached to the study, so ``optuna-dashboard <storage>`` shows them.
- :func:`table1` (``alphanas report``): full model vs the study's best mask after a final
  fine-tune with the ``[report]`` budget, with test accuracy, n and a 95% Wilson score interval.
- :func:`export` (``alphanas export``): the best sub-model, fine-tuned the same way, saved with
  ``save_pretrained`` plus its tokenizer and an ``alphanas.json`` that says what it is.

The building blocks (:func:`pareto_front`, :func:`wilson_interval`, :func:`final_fine_tune`,
:func:`evaluate_test`, :func:`best_feasible_trial`) are public so that benchmark scripts can use
the same definitions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from alphanas_optuna.errors import first_line

if TYPE_CHECKING:
    import plotly.graph_objects as go
    import torch

    from alphanas_optuna.config import StudyConfig
    from alphanas_optuna.data import DataConfig, TokenizedSplit
    from alphanas_optuna.objective import FitnessConfig
    from alphanas_optuna.training import FineTuneResult, TrainingConfig

__all__ = [
    "FIGURE_ID",
    "EvaluatedTrial",
    "NoFeasibleTrialError",
    "ReportError",
    "Table1",
    "Table1Row",
    "TestResult",
    "best_feasible_trial",
    "build_table1",
    "evaluate_test",
    "evaluated_trials",
    "export",
    "final_fine_tune",
    "final_training_config",
    "pareto",
    "pareto_figure",
    "pareto_front",
    "pareto_table",
    "report_data_config",
    "table1",
    "wilson_interval",
]

#: Id of the figure that :func:`pareto` attaches to a study; running it again replaces the figure.
FIGURE_ID = "alphanas-pareto"


class ReportError(ValueError):
    """A study that cannot be reported on (missing, no evaluated trial, no test split, ...)."""


class NoFeasibleTrialError(ReportError):
    """The study has no feasible trial, so there is no best mask."""


# ------------------------------------------------------------------------------------ the study


@dataclass(frozen=True)
class EvaluatedTrial:
    """A trial whose sub-model was measured (it has an accuracy and a parameter count).

    Attributes:
        number: The trial's number in the study.
        mask: The layer mask as a bit string, layer 0 first.
        n_layers: Encoder layers kept.
        accuracy: Validation accuracy A measured during the search.
        n_params: Parameter count N.
        quality: Q as stored by the search (``None`` if the trial did not record it).
        feasible: Whether the trial met the study's limits (COMPLETE and ``feasible``).
        state: The trial's state (COMPLETE, or PRUNED for an infeasible one).
        reason: Why it is infeasible, if it is.
    """

    number: int
    mask: str
    n_layers: int
    accuracy: float
    n_params: int
    quality: float | None
    feasible: bool
    state: TrialState
    reason: str | None = None


def evaluated_trials(study: optuna.Study) -> list[EvaluatedTrial]:
    """Every trial of ``study`` with an accuracy and a parameter count, by trial number.

    COMPLETE trials and PRUNED ones (infeasible: accuracy below the limit, or stopped by a pruner)
    count; FAIL and RUNNING trials and trials pruned before training (``max_params``, empty mask)
    have no accuracy and are left out.
    """
    result = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        ua = t.user_attrs
        accuracy, n_params = ua.get("accuracy"), ua.get("n_params")
        if accuracy is None or n_params is None or not math.isfinite(float(accuracy)):
            continue
        mask = ua.get("mask") or ""
        quality = ua.get("quality")
        result.append(
            EvaluatedTrial(
                number=t.number,
                mask=mask,
                n_layers=int(ua.get("n_layers", mask.count("1"))),
                accuracy=float(accuracy),
                n_params=int(n_params),
                quality=None if quality is None else float(quality),
                feasible=t.state == TrialState.COMPLETE and bool(ua.get("feasible", False)),
                state=t.state,
                reason=ua.get("infeasible_reason"),
            )
        )
    return sorted(result, key=lambda e: e.number)


def best_feasible_trial(study: optuna.Study, fitness: FitnessConfig | None = None) -> FrozenTrial:
    """The feasible trial of best Q; ties go to the earliest trial.

    In a single-objective study Q is the trial's value (what the search maximised). In a
    two-objective study (accuracy, parameters) Q is computed from the user attributes with
    ``fitness`` (default :class:`~alphanas_optuna.FitnessConfig`).

    Raises:
        NoFeasibleTrialError: No trial is COMPLETE and feasible; the message names the study.
    """
    from alphanas_optuna.objective import FitnessConfig

    fitness = fitness if fitness is not None else FitnessConfig()
    single = len(study.directions) == 1
    best: tuple[float, int] | None = None
    best_trial: FrozenTrial | None = None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        ua = t.user_attrs
        if not ua.get("feasible") or ua.get("accuracy") is None or ua.get("n_params") is None:
            continue
        q = float(t.value) if single else fitness.quality(float(ua["accuracy"]), ua["n_params"])
        if not math.isfinite(q):
            continue
        key = (q, -t.number)
        if best is None or key > best:
            best, best_trial = key, t
    if best_trial is None:
        states: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            states[t.state.name] = states.get(t.state.name, 0) + 1
        shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials"
        raise NoFeasibleTrialError(
            f"study {study.study_name!r} has no feasible trial ({shown}), so there is no best mask "
            "to report or export; run more trials (alphanas search) or relax [fitness] "
            "min_accuracy / max_params"
        )
    return best_trial


def _load_study(storage: str, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError as exc:
        try:
            names = optuna.get_all_study_names(storage)
        except Exception:  # noqa: BLE001 - only used to improve the message
            names = []
        known = f"; studies there: {', '.join(map(repr, names))}" if names else "; it holds none"
        raise ReportError(f"no study named {study_name!r} in {storage}{known}") from exc


# --------------------------------------------------------------------------------- Pareto front


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points that no other point dominates, for accuracy up and parameters down.

    ``a`` dominates ``b`` when ``a`` is at least as accurate and at most as large, and strictly
    better in one of the two. Equal points do not dominate each other, so all copies of a
    non-dominated point are on the front.

    Args:
        points: ``(accuracy, n_params)`` pairs.

    Returns:
        Indices into ``points``, by parameter count then accuracy (descending), then index.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0], i))
    front: list[int] = []
    best_accuracy = -math.inf
    best_at: tuple[float, float] | None = None
    for i in order:
        accuracy, n = points[i]
        if accuracy > best_accuracy:
            front.append(i)
            best_accuracy, best_at = accuracy, (accuracy, n)
        elif (accuracy, n) == best_at:
            front.append(i)  # a tie with the point that set the record
    return front


def pareto_table(trials: Sequence[EvaluatedTrial], on_front: set[int]) -> str:
    """Markdown table of ``trials`` (by parameters, then accuracy), marking feasibility and front.

    Args:
        trials: The evaluated trials.
        on_front: Trial numbers on the Pareto front.
    """
    lines = [
        "| trial | mask | layers | accuracy | params (M) | Q | feasible | on front |",
        "|---:|:---|---:|---:|---:|---:|:---:|:---:|",
    ]
    for t in sorted(trials, key=lambda e: (e.n_params, -e.accuracy, e.number)):
        q = "" if t.quality is None else f"{t.quality:.4f}"
        lines.append(
            f"| {t.number} | `{t.mask}` | {t.n_layers} | {t.accuracy:.4f} | "
            f"{_millions(t.n_params)} | {q} | {'yes' if t.feasible else 'no'} | "
            f"{'yes' if t.number in on_front else ''} |"
        )
    return "\n".join(lines)


def pareto_figure(
    trials: Sequence[EvaluatedTrial], on_front: set[int], title: str = "Pareto front"
) -> go.Figure:
    """Plotly figure: every evaluated trial as a point, the front as a line, infeasible as ``x``.

    Coordinates are plain lists (not NumPy arrays), so the JSON holds them as numbers that any
    plotly.js version (the dashboard's included) reads.
    """
    import plotly.graph_objects as go

    def hover(t: EvaluatedTrial) -> str:
        q = "" if t.quality is None else f"<br>Q {t.quality:.4f}"
        why = f"<br>{t.reason}" if t.reason and not t.feasible else ""
        return (
            f"trial {t.number}<br>mask {t.mask} ({t.n_layers} layers)<br>"
            f"accuracy {t.accuracy:.4f}<br>params {t.n_params:,}{q}{why}"
        )

    fig = go.Figure()
    front = sorted(
        (t for t in trials if t.number in on_front), key=lambda e: (e.n_params, -e.accuracy)
    )
    fig.add_trace(
        go.Scatter(
            x=[t.n_params / 1e6 for t in front],
            y=[t.accuracy for t in front],
            mode="lines",
            line={"shape": "hv", "color": "#1f77b4", "width": 2},
            name="Pareto front",
            hoverinfo="skip",
        )
    )
    for feasible, name, symbol, color in (
        (True, "feasible", "circle", "#1f77b4"),
        (False, "infeasible", "x", "#d62728"),
    ):
        group = [t for t in trials if t.feasible is feasible]
        fig.add_trace(
            go.Scatter(
                x=[t.n_params / 1e6 for t in group],
                y=[t.accuracy for t in group],
                mode="markers",
                name=name,
                marker={
                    "symbol": symbol,
                    "color": color,
                    "size": [11 if t.number in on_front else 7 for t in group],
                    "line": {"width": 1, "color": "#333333"} if feasible else None,
                },
                text=[hover(t) for t in group],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        xaxis_title="parameters (M)",
        yaxis_title="validation accuracy",
        template="plotly_white",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
    )
    return fig


def pareto(storage: str, study_name: str, out: Path | None = None, png: bool = False) -> str:
    """The Pareto front of a study over (accuracy, parameters): table, figure, dashboard attachment.

    Every evaluated trial (see :func:`evaluated_trials`) is a point, feasible or not. The figure is
    written as self-contained HTML to ``out`` (default ``<study-name>-pareto.html``; plotly.js is
    inlined, about 5 MB, so it opens offline), and as PNG next to it when ``png`` is set (needs
    kaleido and a Chrome/Chromium; when that fails the HTML is kept and one line says so). The
    figure and a markdown summary are attached to the study with
    ``optuna_dashboard.save_plotly_graph_object`` (id :data:`FIGURE_ID`, replaced on each run) and
    ``optuna_dashboard.save_note`` (this replaces the study's note), so
    ``optuna-dashboard <storage>`` shows them on the study's page.

    Args:
        storage: Storage URL of the study, e.g. ``sqlite:///quickstart.db``.
        study_name: Name of the study.
        out: Path of the HTML file.
        png: Also write ``out`` with the suffix ``.png``.

    Returns:
        The markdown table followed by a few lines on what was written where.

    Raises:
        ReportError: No such study, or it has no evaluated trial yet.
    """
    import optuna_dashboard

    study = _load_study(storage, study_name)
    trials = evaluated_trials(study)
    if not trials:
        raise ReportError(
            f"study {study_name!r} has no evaluated trial yet (none has an accuracy and a "
            "parameter count); run `alphanas search` first"
        )
    points = [(t.accuracy, float(t.n_params)) for t in trials]
    on_front = {trials[i].number for i in pareto_front(points)}
    table = pareto_table(trials, on_front)
    fig = pareto_figure(
        trials, on_front, title=f"AlphaNAS Pareto front of {study_name!r}: accuracy vs parameters"
    )

    out = Path(out) if out is not None else Path(f"{study_name}-pareto.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out, include_plotlyjs=True, full_html=True)
    messages = [f"Figure: {out}"]
    if png:
        png_path = out.with_suffix(".png")
        try:
            fig.write_image(png_path, width=1000, height=650)
            messages.append(f"PNG: {png_path}")
        except Exception as exc:  # noqa: BLE001 - kaleido or its browser missing: keep the HTML
            messages.append(
                f"PNG not written ({type(exc).__name__}: {first_line(exc)}); the HTML figure is "
                f"at {out}"
            )

    summary = _pareto_note(study_name, trials, on_front)
    optuna_dashboard.save_plotly_graph_object(study, fig, graph_object_id=FIGURE_ID)
    optuna_dashboard.save_note(study, summary)
    messages.append(
        f"Attached the figure and a summary note to study {study_name!r}; see them with "
        f"`optuna-dashboard {storage}`"
    )
    n_feasible = sum(t.feasible for t in trials)
    header = (
        f"Pareto front of study {study_name!r}: {len(trials)} evaluated trials "
        f"({n_feasible} feasible), {len(on_front)} on the front (accuracy up, parameters down)."
    )
    return "\n\n".join([header, table, "\n".join(messages)])


def _pareto_note(study_name: str, trials: Sequence[EvaluatedTrial], on_front: set[int]) -> str:
    feasible = [t for t in trials if t.feasible]
    lines = [
        f"## AlphaNAS: Pareto front of `{study_name}`",
        "",
        f"{len(trials)} evaluated trials ({len(feasible)} feasible, "
        f"{len(trials) - len(feasible)} infeasible); {len(on_front)} on the Pareto front over "
        "validation accuracy (up) and parameters (down). The figure *AlphaNAS Pareto front* shows "
        "every trial; infeasible ones are red crosses.",
        "",
    ]
    scored = [t for t in feasible if t.quality is not None]
    if scored:
        best = max(scored, key=lambda e: (e.quality, -e.number))
        lines += [
            f"**Best feasible by Q**: trial {best.number}, mask `{best.mask}` "
            f"({best.n_layers} layers), accuracy {best.accuracy:.4f}, "
            f"{_millions(best.n_params)} M parameters, Q {best.quality:.4f}.",
            "",
        ]
    lines += [
        "Trials on the front:",
        "",
        pareto_table([t for t in trials if t.number in on_front], on_front),
        "",
        "_Written by `alphanas pareto`; running it again replaces this note and the figure._",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------ final fine-tune, test


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``correct`` successes in ``n`` trials.

    With ``z=1.96`` it is the 95% confidence interval of an accuracy measured on ``n`` examples; it
    stays inside [0, 1] and is sensible at 0 or ``n`` correct.

    Raises:
        ValueError: ``n < 1``, ``correct`` outside ``[0, n]`` or ``z <= 0``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n!r}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct!r}")
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z!r}")
    p = correct / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class TestResult:
    """Accuracy on a test split with its 95% Wilson score interval."""

    __test__ = False  # not a pytest test class

    correct: int
    n: int
    accuracy: float
    ci_low: float
    ci_high: float

    @classmethod
    def from_counts(cls, correct: int, n: int, z: float = 1.96) -> TestResult:
        low, high = wilson_interval(correct, n, z)
        return cls(correct=correct, n=n, accuracy=correct / n, ci_low=low, ci_high=high)


def report_data_config(config: StudyConfig) -> DataConfig:
    """The data of the final fine-tune: ``[data]`` with the ``[report]`` sizes.

    The validation split is the search's (same seed and size). Training uses
    ``[report] train_size`` examples of the rest (all of it when unset or ``"all"``); the test
    split is ``[report] test_size`` examples, else ``[data] test_size``, else all of it.
    """
    report = config.report
    test_size = report.test_size if report.test_size is not None else config.data.test_size
    return dataclasses.replace(config.data, train_size=report.train_size, test_size=test_size)


def final_training_config(config: StudyConfig) -> TrainingConfig:
    """``[training]`` with the ``[report]`` budget (epochs or max_steps, seed), one evaluation."""
    report = config.report
    return dataclasses.replace(
        config.training,
        epochs=report.epochs,
        max_steps=report.max_steps,
        seed=report.seed,
        evaluations=1,
    )


def final_fine_tune(
    model: torch.nn.Module,
    mask: Sequence[int] | str,
    train: TokenizedSplit,
    validation: TokenizedSplit,
    training: TrainingConfig,
    accelerator: Any,
    *,
    pad_token_id: int,
) -> tuple[torch.nn.Module, FineTuneResult]:
    """Build the sub-model for ``mask`` (a copy; ``model`` is untouched) and fine-tune it.

    Returns:
        The fine-tuned sub-model (unwrapped from the Accelerator, in eval mode) and the
        :class:`~alphanas_optuna.training.FineTuneResult` (validation accuracy at the end).
    """
    from alphanas_optuna.synthesis import drop_layers
    from alphanas_optuna.training import fine_tune, make_loaders

    sub = drop_layers(model, mask)
    train_dl, eval_dl = make_loaders(train, validation, training, pad_token_id=pad_token_id)
    result = fine_tune(sub, train_dl, eval_dl, training, accelerator)
    sub = accelerator.unwrap_model(sub)
    sub.eval()
    return sub, result


def evaluate_test(
    model: torch.nn.Module,
    test: TokenizedSplit,
    accelerator: Any,
    *,
    pad_token_id: int,
    batch_size: int = 64,
) -> TestResult:
    """Accuracy of ``model`` on every example of ``test``, with its 95% Wilson interval."""
    from alphanas_optuna.data import make_dataloader
    from alphanas_optuna.training import predict

    if len(test) == 0:
        raise ReportError("the test split is empty; the data source needs a test split")
    loader = accelerator.prepare(
        make_dataloader(test, batch_size=batch_size, pad_token_id=pad_token_id, shuffle=False)
    )
    try:
        preds, refs = predict(model, loader, accelerator)
    finally:
        accelerator.free_memory()
    return TestResult.from_counts(int((preds == refs).sum()), int(refs.numel()))


@dataclass
class _Setup:
    """What table1 and export share: the study's best trial, the model once, each split once."""

    config: StudyConfig
    study_name: str
    best: FrozenTrial
    model: Any
    tokenizer: Any
    pad_token_id: int
    train: TokenizedSplit
    validation: TokenizedSplit
    test: TokenizedSplit
    training: TrainingConfig
    accelerator: Any

    @property
    def full_mask(self) -> str:
        from alphanas_optuna.synthesis import n_encoder_layers

        return "1" * n_encoder_layers(self.model)

    def fine_tune(self, mask: str) -> tuple[Any, FineTuneResult]:
        return final_fine_tune(
            self.model,
            mask,
            self.train,
            self.validation,
            self.training,
            self.accelerator,
            pad_token_id=self.pad_token_id,
        )

    def test_result(self, model: Any) -> TestResult:
        return evaluate_test(
            model,
            self.test,
            self.accelerator,
            pad_token_id=self.pad_token_id,
            batch_size=self.training.eval_batch_size,
        )


def _setup(config: StudyConfig, storage: str, study_name: str, *, need_test: bool) -> _Setup:
    from alphanas_optuna.data import load_splits, tokenize_split
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.synthesis import load_pretrained, n_encoder_layers

    study = _load_study(storage, study_name)
    best = best_feasible_trial(study, config.fitness)  # fails fast, before loading anything
    data = report_data_config(config)
    splits = load_splits(data)
    if need_test and len(splits.test[1]) == 0:
        raise ReportError(
            f"{data.source}: no test split; the report evaluates on one (a folder with "
            "test.parquet/.csv/.jsonl next to train, a Hub dataset with a 'test' split, or aclImdb)"
        )
    training = final_training_config(config)
    # The final fine-tune's seed also draws the new classification head, as in a search trial.
    model, tokenizer = load_pretrained(
        config.model.name, num_labels=config.model.num_labels, seed=training.seed
    )
    mask = best.user_attrs["mask"]
    n_layers = n_encoder_layers(model)
    if len(mask) != n_layers:
        raise ReportError(
            f"study {study_name!r}: the best mask {mask} has {len(mask)} bits but the model "
            f"{config.model.name!r} has {n_layers} encoder layers; use the study file the study "
            "was searched with"
        )
    tok = {
        name: tokenize_split(
            *getattr(splits, name),
            tokenizer,
            data.max_length,
            fingerprint=f"{splits.fingerprint}:{name}",
        )
        if len(getattr(splits, name)[1])
        else None
        for name in ("train", "validation", "test")
    }
    return _Setup(
        config=config,
        study_name=study_name,
        best=best,
        model=model,
        tokenizer=tokenizer,
        pad_token_id=tokenizer.pad_token_id or 0,
        train=tok["train"],
        validation=tok["validation"],
        test=tok["test"],
        training=training,
        accelerator=get_accelerator(config.training.mixed_precision),
    )


# ---------------------------------------------------------------------------------------- Table 1


@dataclass(frozen=True)
class Table1Row:
    """One model of Table 1."""

    label: str
    mask: str
    n_layers: int
    n_params: int
    validation_accuracy: float
    test: TestResult
    train_seconds: float


@dataclass(frozen=True)
class Table1:
    """Full model vs best mask after the same final fine-tune (see :func:`build_table1`)."""

    study_name: str
    best_trial: int
    search_accuracy: float
    search_quality: float | None
    train_examples: int
    training: TrainingConfig
    rows: tuple[Table1Row, ...]

    def markdown(self) -> str:
        full = self.rows[0].n_params
        lines = [
            f"### Table 1: full model vs best mask of study `{self.study_name}`",
            "",
            "| model | mask | layers | params (M) | params vs full | test accuracy | 95% CI | n |",
            "|:---|:---|---:|---:|---:|---:|:---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.label} | `{r.mask}` | {r.n_layers} | {_millions(r.n_params)} | "
                f"{100 * r.n_params / full:.1f}% | {r.test.accuracy:.4f} | "
                f"[{r.test.ci_low:.4f}, {r.test.ci_high:.4f}] | {r.test.n} |"
            )
        budget = (
            f"{self.training.max_steps} steps"
            if self.training.max_steps is not None
            else f"{self.training.epochs:g} epoch{'s' if self.training.epochs != 1 else ''}"
        )
        q = "" if self.search_quality is None else f", Q {self.search_quality:.4f}"
        lines += [
            "",
            f"Each model fine-tuned on {self.train_examples} training examples for {budget} "
            f"(batch size {self.training.batch_size}, learning rate {self.training.learning_rate:g}, "
            f"seed {self.training.seed}), then evaluated on n test examples; "
            "95% CI: Wilson score interval. "
            f"Best mask: trial {self.best_trial} (validation accuracy during the search "
            f"{self.search_accuracy:.4f}{q}).",
        ]
        return "\n".join(lines)


def build_table1(
    config: StudyConfig,
    storage: str,
    study_name: str,
    extra_masks: Sequence[tuple[str, str]] = (),
) -> Table1:
    """Fine-tune the full model and the study's best mask with the ``[report]`` budget; test both.

    ``extra_masks`` adds rows ``(label, mask)`` trained and tested the same way, e.g. a fixed
    layer-dropping rule at the best mask's depth.

    The model is loaded once and each split tokenised once; both models train with the same
    settings and seed on the same data (see :func:`report_data_config` and
    :func:`final_training_config`). If the best mask keeps every layer, one model is trained.

    Raises:
        NoFeasibleTrialError: The study has no feasible trial.
        ReportError: No such study, no test split, or a mask that does not fit the model.
    """
    from alphanas_optuna.synthesis import count_parameters

    setup = _setup(config, storage, study_name, need_test=True)
    best_mask = setup.best.user_attrs["mask"]
    rows: list[Table1Row] = []
    results: dict[str, Table1Row] = {}
    for label, mask in (
        ("full", setup.full_mask),
        (f"best (trial {setup.best.number})", best_mask),
        *extra_masks,
    ):
        if mask in results:
            rows.append(dataclasses.replace(results[mask], label=label))
            continue
        model, result = setup.fine_tune(mask)
        row = Table1Row(
            label=label,
            mask=mask,
            n_layers=mask.count("1"),
            n_params=count_parameters(model),
            validation_accuracy=result.accuracy,
            test=setup.test_result(model),
            train_seconds=result.seconds,
        )
        del model
        results[mask] = row
        rows.append(row)
    quality = setup.best.user_attrs.get("quality")
    return Table1(
        study_name=study_name,
        best_trial=setup.best.number,
        search_accuracy=float(setup.best.user_attrs["accuracy"]),
        search_quality=None if quality is None else float(quality),
        train_examples=len(setup.train),
        training=setup.training,
        rows=tuple(rows),
    )


def table1(config: StudyConfig, storage: str, study_name: str, out: Path | None = None) -> str:
    """The seed's Table 1 for a study, as markdown (also written to ``out`` if given).

    Full model vs the study's best mask (best Q among feasible trials): active layers, parameters,
    test accuracy after a final fine-tune with the ``[report]`` budget, n and the 95% Wilson score
    interval. See :func:`build_table1`.
    """
    text = build_table1(config, storage, study_name).markdown()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    return text


# ------------------------------------------------------------------------------------------ export


def export(config: StudyConfig, storage: str, study_name: str, out_dir: Path) -> Path:
    """Fine-tune the study's best sub-model like :func:`table1` does and save it to ``out_dir``.

    ``out_dir`` receives the model (``save_pretrained``), its tokenizer, and ``alphanas.json``
    with the study, trial, mask, parameter count, the search's validation accuracy and Q, and the
    final fine-tune's validation and test accuracy (with n and 95% CI when there is a test
    split). ``AutoModelForSequenceClassification.from_pretrained(out_dir)`` loads it.

    Returns:
        ``out_dir``.

    Raises:
        NoFeasibleTrialError: The study has no feasible trial.
        ReportError: No such study, or a mask that does not fit the model.
    """
    from alphanas_optuna.synthesis import count_parameters

    setup = _setup(config, storage, study_name, need_test=False)
    best = setup.best
    mask = best.user_attrs["mask"]
    model, result = setup.fine_tune(mask)
    test = setup.test_result(model) if setup.test is not None else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _no_progress_bars():
        model.save_pretrained(out_dir)
        setup.tokenizer.save_pretrained(out_dir)
    info = {
        "study": study_name,
        "trial": best.number,
        "base_model": config.model.name,
        "mask": mask,
        "n_layers": mask.count("1"),
        "n_params": count_parameters(model),
        "accuracy": float(best.user_attrs["accuracy"]),
        "quality": best.user_attrs.get("quality"),
        "final_fine_tune": {
            "train_examples": len(setup.train),
            "epochs": setup.training.epochs,
            "max_steps": setup.training.max_steps,
            "seed": setup.training.seed,
            "validation_accuracy": result.accuracy,
        },
        "test": None
        if test is None
        else {"accuracy": test.accuracy, "n": test.n, "ci95": [test.ci_low, test.ci_high]},
    }
    (out_dir / "alphanas.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir


# ----------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Hide transformers' progress bars (``save_pretrained`` shows one per shard); restore after."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}" if n >= 1e6 else f"{n / 1e6:.4f}"
