"""The final fine-tune of a study's answer: Table 1 (``alphanas report``) and the exported model
(``alphanas export``).

Both fine-tune with the ``[report]`` budget on the ``[data]`` source (the model loaded once with
:func:`~alphanas_optuna.task.load_task`, the same loader as the search's objective), then evaluate
on the test split with a 95% Wilson interval (:mod:`alphanas_optuna.intervals`). The study's
answer is :func:`~alphanas_optuna.results.best_feasible_trial`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphanas_optuna.intervals import TestResult
from alphanas_optuna.record import TrialRecord
from alphanas_optuna.results import (
    ReportError,
    best_feasible_trial,
    load_existing_study,
    study_answer,
)

if TYPE_CHECKING:
    import torch
    from optuna.trial import FrozenTrial

    from alphanas_optuna.config import StudyConfig
    from alphanas_optuna.data import DataConfig, TokenizedSplit
    from alphanas_optuna.training import FineTuneResult, TrainingConfig

__all__ = [
    "FinalSetup",
    "Table1",
    "Table1Row",
    "build_table1",
    "evaluate_test",
    "export",
    "final_fine_tune",
    "final_training_config",
    "inference_latency",
    "prepare_final",
    "report_data_config",
    "table1",
]


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
    teacher_seed: int | None = None,
    teacher: torch.nn.Module | None = None,
    tokenizer: Any = None,
) -> tuple[torch.nn.Module, FineTuneResult]:
    """Build the sub-model for ``mask`` (a copy; ``model`` is untouched) and fine-tune it.

    With ``training.distill`` the sub-model learns from the full model's logits (see
    :func:`alphanas_optuna.distill.teacher_for`: from the machine's cache, else from ``teacher``,
    an already fine-tuned full model, else from a fine-tune of the full model at
    ``teacher_seed``, default ``training.seed``). The full mask itself is the teacher and
    trains without distillation, unless ``training.distill.teacher`` names a fine-tuned
    classifier to learn from (then every mask learns from it; ``tokenizer``, the student's, is
    compared with its tokenizer).

    Returns:
        The fine-tuned sub-model (unwrapped from the Accelerator, in eval mode) and the
        :class:`~alphanas_optuna.training.FineTuneResult` (validation accuracy at the end).
    """
    from alphanas_optuna.synthesis import drop_layers
    from alphanas_optuna.training import fine_tune, make_loaders

    if training.distill is not None and training.distill.alpha > 0:
        if training.distill.trains_teacher(mask):
            training = dataclasses.replace(training, distill=None)
        elif train.teacher_logits is None:
            from alphanas_optuna.distill import teacher_for, with_teacher

            logits = teacher_for(
                model,
                train,
                validation,
                training,
                accelerator,
                pad_token_id=pad_token_id,
                seed=teacher_seed,
                trained=teacher,
                tokenizer=tokenizer,
            ).logits
            train = with_teacher(train, logits)
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
class FinalSetup:
    """What table1 and export share: the study's answer, the model once, each split once."""

    config: StudyConfig
    study_name: str
    best: FrozenTrial
    model: Any
    tokenizer: Any
    pad_token_id: int
    train: TokenizedSplit
    validation: TokenizedSplit
    test: TokenizedSplit | None
    training: TrainingConfig
    accelerator: Any
    confirmed_runs: int = 0

    @property
    def best_record(self) -> TrialRecord:
        record = TrialRecord.read(self.best)
        assert record is not None  # best_feasible_trial only returns recorded trials
        return record

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
            tokenizer=self.tokenizer,
        )

    def teach_with(self, full: Any) -> None:
        """With ``[training] distill``: the fine-tuned full model ``full`` is the teacher of every
        later :meth:`fine_tune` (its logits on the training examples are kept, not the model)."""
        from alphanas_optuna.distill import teacher_for, with_teacher

        teacher = teacher_for(
            self.model,
            self.train,
            self.validation,
            self.training,
            self.accelerator,
            pad_token_id=self.pad_token_id,
            trained=full,
        )
        self.train = with_teacher(self.train, teacher.logits)

    def test_result(self, model: Any) -> TestResult:
        if self.test is None:
            raise ReportError("the test split is empty; the data source needs a test split")
        return evaluate_test(
            model,
            self.test,
            self.accelerator,
            pad_token_id=self.pad_token_id,
            batch_size=self.training.eval_batch_size,
        )


def prepare_final(
    config: StudyConfig, storage: str, study_name: str, *, need_test: bool
) -> FinalSetup:
    """Find the study's answer, then load the model and the ``[report]`` data once.

    Raises:
        ReportError: No such study, no test split (when ``need_test``), or a mask that does not
            fit the model.
        NoFeasibleTrialError: The study has no feasible trial.
    """
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.synthesis import n_encoder_layers
    from alphanas_optuna.task import load_task

    study = load_existing_study(storage, study_name)
    answer = study_answer(study, config.fitness)  # fails fast, before loading anything
    best = best_feasible_trial(study, config.fitness)
    data = report_data_config(config)
    training = final_training_config(config)
    # The final fine-tune's seed also draws the new classification head, as in a search trial.
    task = load_task(
        config.model.name,
        data,
        num_labels=config.model.num_labels,
        seed=training.seed,
        splits=("train", "validation", "test"),
    )
    if need_test and "test" not in task.tokenized:
        raise ReportError(
            f"{data.source}: no test split; the report evaluates on one (a folder with "
            "test.parquet/.csv/.jsonl next to train, a Hub dataset with a 'test' split, or aclImdb)"
        )
    mask = TrialRecord.read(best).mask
    n_layers = n_encoder_layers(task.model)
    if len(mask) != n_layers:
        raise ReportError(
            f"study {study_name!r}: the best mask {mask} has {len(mask)} bits but the model "
            f"{config.model.name!r} has {n_layers} encoder layers; use the study file the study "
            "was searched with"
        )
    return FinalSetup(
        config=config,
        study_name=study_name,
        best=best,
        model=task.model,
        tokenizer=task.tokenizer,
        pad_token_id=task.pad_token_id,
        train=task.tokenized["train"],
        validation=task.tokenized["validation"],
        test=task.tokenized.get("test"),
        training=training,
        accelerator=get_accelerator(config.training.mixed_precision),
        confirmed_runs=answer.n_evaluations if answer.confirmed else 0,
    )


# ---------------------------------------------------------------------------------------- Table 1


def inference_latency(
    model: torch.nn.Module,
    batch_size: int,
    max_length: int,
    accelerator: Any,
    *,
    repeats: int = 10,
    warmup: int = 2,
) -> float:
    """Median seconds of one forward pass of ``model`` over a batch of ``batch_size`` inputs of
    ``max_length`` tokens on the accelerator's device, after ``warmup`` untimed passes.

    The inputs are random token ids with no padding: a full batch at the longest input the
    study uses, the case that sizing a model for deployment is about.
    """
    import statistics
    import time

    import torch

    device = accelerator.device
    vocab = int(getattr(model.config, "vocab_size", 1000))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch_size, max_length), generator=generator).to(device)
    mask = torch.ones_like(ids)
    model = model.to(device)
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


LATENCY_BATCHES = (1, 32)


@dataclass(frozen=True)
class Table1Row:
    """One model of Table 1.

    ``latency`` maps a batch size (:data:`LATENCY_BATCHES`) to the median seconds of one
    forward pass at ``[data] max_length`` (:func:`inference_latency`).
    """

    label: str
    mask: str
    n_layers: int
    n_params: int
    validation_accuracy: float
    test: TestResult
    train_seconds: float
    latency: dict[int, float] = dataclasses.field(default_factory=dict)


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
    confirmed_runs: int = 0
    max_length: int | None = None
    device: str = "cpu"

    def markdown(self) -> str:
        full = self.rows[0]
        latency_heads = "".join(f" latency b={b} (ms) |" for b in LATENCY_BATCHES)
        lines = [
            f"### Table 1: full model vs best mask of study `{self.study_name}`",
            "",
            "| model | mask | layers | params (M) | params vs full | test accuracy | 95% CI | n |"
            + latency_heads
            + " speed-up |",
            "|:---|:---|---:|---:|---:|---:|:---:|---:|" + "---:|" * len(LATENCY_BATCHES) + "---:|",
        ]
        for r in self.rows:
            cells = "".join(
                f" {1000 * r.latency[b]:.1f} |" if b in r.latency else " – |"
                for b in LATENCY_BATCHES
            )
            big = LATENCY_BATCHES[-1]
            speed = (
                f"{full.latency[big] / r.latency[big]:.2f}x"
                if big in r.latency and big in full.latency and r.latency[big] > 0
                else "–"
            )
            lines.append(
                f"| {r.label} | `{r.mask}` | {r.n_layers} | {_millions(r.n_params)} | "
                f"{100 * r.n_params / full.n_params:.1f}% | {r.test.accuracy:.4f} | "
                f"[{r.test.ci_low:.4f}, {r.test.ci_high:.4f}] | {r.test.n} |{cells} {speed} |"
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
            "",
        ]
        d = self.training.distill
        if d is not None and d.teacher is not None:
            lines += [
                f"Every model, the full one too, distilled from the given teacher `{d.teacher}` "
                f"(alpha {d.alpha:g}, temperature {d.temperature:g}).",
                "",
            ]
        elif d is not None:
            lines += [
                f"Sub-models distilled from the full model above (alpha {d.alpha:g}, temperature "
                f"{d.temperature:g}); the full model trains without distillation.",
                "",
            ]
        lines += [
            (
                f"The best mask was confirmed: the best mean over {self.confirmed_runs} "
                "`alphanas confirm` runs on the validation split."
                if self.confirmed_runs
                else "The best mask was not confirmed (run `alphanas confirm` to re-train the "
                "top candidates with several seeds before the report)."
            ),
            "",
            f"Latency: median of timed forward passes after warm-up, on {self.device}, at "
            f"{self.max_length} tokens; speed-up at batch {LATENCY_BATCHES[-1]} against the "
            "full model.",
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

    setup = prepare_final(config, storage, study_name, need_test=True)
    best_mask = setup.best_record.mask
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
            latency={
                b: inference_latency(model, b, config.data.max_length, setup.accelerator)
                for b in LATENCY_BATCHES
            },
        )
        distill = setup.training.distill
        if distill is not None and distill.trains_teacher(mask):
            setup.teach_with(model)  # the full model teaches the others: no second fine-tune
        del model
        results[mask] = row
        rows.append(row)
    record = setup.best_record
    return Table1(
        study_name=study_name,
        best_trial=setup.best.number,
        search_accuracy=float(record.accuracy),
        search_quality=None if record.quality is None else float(record.quality),
        train_examples=len(setup.train),
        training=setup.training,
        rows=tuple(rows),
        confirmed_runs=setup.confirmed_runs,
        max_length=config.data.max_length,
        device=str(setup.accelerator.device),
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

    setup = prepare_final(config, storage, study_name, need_test=False)
    best, record = setup.best, setup.best_record
    mask = record.mask
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
        "accuracy": float(record.accuracy),
        "quality": record.quality,
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
