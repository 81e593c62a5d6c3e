"""Brief fine-tuning of a (sub-)model with Hugging Face Accelerate, and its evaluation.

One linear loop in the style of accelerate's ``nlp_example.py``: set_seed, build the optimizer and
schedule, prepare, forward/backward, evaluate with ``gather_for_metrics``. The caller owns the
:class:`accelerate.Accelerator` (one per process, reused across trials; :func:`fine_tune` frees its
references with ``free_memory`` when it returns). This module knows nothing of Optuna: the
``on_evaluate`` callback is how an objective reports intermediate accuracy and stops a trial (by
raising).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from alphanas_optuna.data import BATCHING, TokenizedSplit, make_dataloader
from alphanas_optuna.distill import DistillConfig, distillation_loss

__all__ = [
    "FineTuneResult",
    "TrainingConfig",
    "TrainingDiverged",
    "evaluate",
    "fine_tune",
    "make_loaders",
]

_PRECISIONS = ("no", "fp16", "bf16")


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainingConfig:
    """Fine-tuning hyper-parameters of one trial.

    Attributes:
        epochs: Passes over the training subset (fractions allowed). Ignored when ``max_steps``
            is set.
        max_steps: Optimizer steps in total, instead of epochs.
        learning_rate: Peak AdamW learning rate.
        batch_size: Examples per forward pass (per device).
        eval_batch_size: Examples per forward pass when evaluating.
        gradient_accumulation_steps: Forward passes per optimizer step.
        warmup_ratio: Share of the steps with linear warm-up; then linear decay to 0.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        max_grad_norm: Gradient clipping norm; 0 disables clipping.
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` (set on the Accelerator).
        evaluations: Evaluation points spread evenly over training, the last one at the end; each
            calls ``on_evaluate`` (so a pruner can stop the trial early).
        freeze_embeddings: Keep the word-embedding matrix fixed (default ``False``: every weight
            is trained, as by the ``Trainer``). Its gradient and AdamW update cost as much as
            several encoder layers (30522 x 384 = 11.7M of MiniLM-L6's 22.7M parameters), so
            freezing it makes a step of a shallow sub-model on short inputs several times faster;
            on long inputs it saved no time and cost MiniLM 0.5 points of IMDB accuracy on
            average (see BENCHMARKS.md). The matrix still counts in N.
        batching: How training batches are formed (see
            :func:`alphanas_optuna.data.make_dataloader`). ``"length-split"`` (default): random
            batches, as the ``Trainer``'s, each run as micro-batches of similar length whose
            gradients add up to the batch's: the same optimisation with less padding (on IMDB at
            512 tokens a trial is about 2x faster). ``"length-grouped"``: batches of similar
            length (the ``Trainer``'s ``group_by_length``; a little faster, but other batches).
            ``"random"``: random batches padded to their longest example.
        micro_batch_tokens: Padded tokens of one micro-batch with ``"length-split"`` (examples
            times the longest one); also bounds a forward pass's activation memory.
        seed: Seed of initialisation of new heads, data order and dropout.
        distill: Learn from a teacher's soft predictions as well as the labels
            (:class:`~alphanas_optuna.distill.DistillConfig`); the training batches must then
            carry ``teacher_logits`` (see :func:`alphanas_optuna.distill.teacher_for`).
    """

    epochs: float = 1.0
    max_steps: int | None = None
    learning_rate: float = 5e-5
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    evaluations: int = 1
    freeze_embeddings: bool = False
    batching: str = "length-split"
    micro_batch_tokens: int = 1024
    seed: int = 0
    distill: DistillConfig | None = None

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "learning_rate": 0 < self.learning_rate < 1,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "gradient_accumulation_steps": self.gradient_accumulation_steps >= 1,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "weight_decay": self.weight_decay >= 0,
            "max_grad_norm": self.max_grad_norm >= 0,
            "mixed_precision": self.mixed_precision in _PRECISIONS,
            "evaluations": self.evaluations >= 1,
            "batching": self.batching in BATCHING,
            "micro_batch_tokens": isinstance(self.micro_batch_tokens, int)
            and self.micro_batch_tokens >= 1,
            "seed": isinstance(self.seed, int) and 0 <= self.seed < 2**32,
            "distill": self.distill is None or isinstance(self.distill, DistillConfig),
        }
        allowed = {
            "epochs": "> 0",
            "max_steps": ">= 1 or None",
            "learning_rate": "in (0, 1)",
            "batch_size": ">= 1",
            "eval_batch_size": ">= 1",
            "gradient_accumulation_steps": ">= 1",
            "warmup_ratio": "in [0, 1)",
            "weight_decay": ">= 0",
            "max_grad_norm": ">= 0",
            "mixed_precision": f"one of {_PRECISIONS}",
            "evaluations": ">= 1",
            "batching": f"one of {BATCHING}",
            "micro_batch_tokens": "an integer >= 1",
            "seed": "an integer in [0, 2**32)",
            "distill": "None or a DistillConfig (alpha, temperature, teacher)",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} must be {allowed[name]}, got {getattr(self, name)!r}")

    def settings(self) -> dict[str, Any]:
        """The fields as a dict for digests of what results depend on (trial and confirmation
        fidelities): ``distill`` left out when unset, so that digests from before distillation
        existed are unchanged, else as :meth:`~alphanas_optuna.distill.DistillConfig.settings`
        gives it (a given teacher's identity included)."""
        out = dataclasses.asdict(self)
        if self.distill is None:
            del out["distill"]
        else:
            out["distill"] = self.distill.settings()
        return out

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps for a training set of ``batches_per_epoch`` batches."""
        if self.max_steps is not None:
            return self.max_steps
        updates_per_epoch = batches_per_epoch / self.gradient_accumulation_steps
        return max(1, math.ceil(updates_per_epoch * self.epochs))


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` measured."""

    accuracy: float
    steps: int
    seconds: float
    train_examples_seen: int
    history: list[tuple[int, float]] = field(default_factory=list)
    #: Seconds of the last pass over the validation loader: the trained model's inference time
    #: on it (NaN when no evaluation ran).
    eval_seconds: float = math.nan


def fine_tune(
    model: torch.nn.Module,
    train_loader: torch.utils.data.DataLoader,
    eval_loader: torch.utils.data.DataLoader,
    config: TrainingConfig,
    accelerator: Any,
    *,
    on_evaluate: Callable[[int, float], None] | None = None,
) -> FineTuneResult:
    """Fine-tune ``model`` in place and return its validation accuracy.

    Args:
        model: A sequence classifier whose forward takes ``input_ids``, ``attention_mask`` and
            ``labels`` and returns ``loss`` and ``logits``.
        train_loader: Training batches (see :func:`alphanas_optuna.data.make_dataloader`).
        eval_loader: Validation batches.
        config: Hyper-parameters.
        accelerator: The process's :class:`accelerate.Accelerator`.
        on_evaluate: Called as ``on_evaluate(step, accuracy)`` at each evaluation point; it may
            raise to stop training (an objective raises ``optuna.TrialPruned``).

    Raises:
        TrainingDiverged: The loss became NaN or infinite.
        RuntimeError: The Accelerator spans several processes; a trial runs in one (start one
            worker per GPU).
    """
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    if accelerator.num_processes > 1:
        raise RuntimeError(
            f"fine_tune runs a trial in one process, but the Accelerator has "
            f"{accelerator.num_processes}; start one worker per GPU instead (CUDA_VISIBLE_DEVICES=i "
            "alphanas search ...), not `accelerate launch`"
        )
    start = time.perf_counter()
    set_seed(config.seed)
    total = config.total_steps(len(train_loader))
    eval_points = _evaluation_steps(total, config.evaluations)

    if config.freeze_embeddings:
        embeddings = model.get_input_embeddings()
        if embeddings is not None:
            embeddings.weight.requires_grad_(False)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (
                no_decay if p.ndim < 2 or "LayerNorm" in name or "layernorm" in name else decay
            ).append(p)
    optimizer = _adamw(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    model, optimizer, train_dl, eval_dl, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    accum = config.gradient_accumulation_steps
    history: list[tuple[int, float]] = []
    step = seen = micro = 0
    accuracy = eval_seconds = float("nan")
    try:
        model.train()
        while step < total:
            for batch in train_dl:
                # A "length-split" batch is a list of micro-batches: weighting each one's mean loss
                # by its share of the batch adds their gradients up to the whole batch's.
                parts = batch if isinstance(batch, list) else [batch]
                size = sum(int(part["labels"].shape[0]) for part in parts)
                batch_loss = 0.0
                for part in parts:
                    share = int(part["labels"].shape[0]) / size
                    loss = _loss(model, part, config.distill) * share
                    accelerator.backward(loss / accum)
                    batch_loss = batch_loss + loss.detach()
                # One device-to-host wait per batch, not per micro-batch.
                if not torch.isfinite(batch_loss):
                    raise TrainingDiverged(f"training loss is {float(batch_loss)} at step {step}")
                micro += 1
                seen += size
                if micro % accum:
                    continue
                if config.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step in eval_points:
                    eval_start = time.perf_counter()
                    accuracy = evaluate(model, eval_dl, accelerator)
                    eval_seconds = time.perf_counter() - eval_start
                    history.append((step, accuracy))
                    if on_evaluate is not None:
                        on_evaluate(step, accuracy)
                    model.train()
                if step >= total:
                    break
        model.eval()
    finally:
        # Drop the Accelerator's references to this trial's model and optimizer.
        accelerator.free_memory()
        del optimizer, scheduler
    return FineTuneResult(
        accuracy=accuracy,
        steps=step,
        seconds=time.perf_counter() - start,
        train_examples_seen=seen,
        history=history,
        eval_seconds=eval_seconds,
    )


def _loss(model: torch.nn.Module, batch: dict[str, Any], distill: DistillConfig | None) -> Any:
    teacher = batch.pop("teacher_logits", None)
    if distill is None or distill.alpha == 0:  # alpha 0: the labels alone
        return model(**batch).loss
    if teacher is None:
        raise ValueError(
            "training.distill is set but the training batches carry no teacher_logits; attach "
            "the teacher's logits with alphanas_optuna.distill.with_teacher"
        )
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return distillation_loss(
        logits,
        teacher,
        batch["labels"],
        alpha=distill.alpha,
        temperature=distill.temperature,
    )


def make_loaders(
    train: TokenizedSplit,
    validation: TokenizedSplit,
    config: TrainingConfig,
    *,
    pad_token_id: int,
) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """The training loader (shuffled with ``config.seed``, batched as ``config.batching``) and the
    validation loader (sorted by length) for :func:`fine_tune`."""
    train_dl = make_dataloader(
        train,
        batch_size=config.batch_size,
        pad_token_id=pad_token_id,
        shuffle=True,
        seed=config.seed,
        batching=config.batching,
        micro_batch_tokens=config.micro_batch_tokens,
    )
    eval_dl = make_dataloader(
        validation, batch_size=config.eval_batch_size, pad_token_id=pad_token_id, shuffle=False
    )
    return train_dl, eval_dl


def evaluate(model: torch.nn.Module, loader: Any, accelerator: Any) -> float:
    """Accuracy of ``model`` on ``loader`` (gathered across processes)."""
    preds, refs = predict(model, loader, accelerator)
    return int((preds == refs).sum()) / max(int(refs.numel()), 1)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: Any, accelerator: Any) -> tuple[Any, Any]:
    """Predicted and true labels of every example of ``loader``, in the loader's order."""
    model.eval()
    preds, refs = [], []
    for batch in loader:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        p, r = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        preds.append(p.cpu())
        refs.append(r.cpu())
    if not preds:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    return torch.cat(preds), torch.cat(refs)


def _adamw(groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step where torch supports it (CPU and CUDA, float32)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr)


def _evaluation_steps(total: int, evaluations: int) -> set[int]:
    n = min(evaluations, total)
    return {max(1, round(total * (i + 1) / n)) for i in range(n)}
