"""Distillation from the full model (or a given fine-tuned classifier): the loss, and the teacher's
logits computed once and cached.

As in DistilBERT, a sub-model (the student) learns from the soft predictions of the full model
(the teacher) as well as from the labels::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

The ``T^2`` keeps the soft term's gradients on the scale of the hard term's as ``T`` grows
(Hinton et al., 2015). By default the teacher is the full model (every layer) fine-tuned with the
student's own training settings, without distillation, at a fixed seed. With ``teacher`` set it
is a classifier already fine-tuned on the task instead (a larger model, or one trained longer),
loaded as it is; it must share the student's labels and tokenizer. Its logits on the training
examples are all the student needs, so they are computed once, stored under
``$ALPHANAS_CACHE/teacher`` (beside the tokenised data) keyed by everything they depend on (the
base model's weights, the training and validation examples, the training settings and the seed,
or the given teacher's identity), and shared by every worker on the machine: a file lock makes
one worker compute them while the others wait for its file.

This module knows nothing of Optuna.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alphanas_optuna.errors import first_line

if TYPE_CHECKING:
    import torch

    from alphanas_optuna.data import TokenizedSplit
    from alphanas_optuna.training import TrainingConfig

__all__ = [
    "DistillConfig",
    "Teacher",
    "check_teacher",
    "load_teacher",
    "teacher_identity",
    "distillation_loss",
    "predict_logits",
    "teacher_cache_dir",
    "teacher_for",
    "teacher_key",
    "teacher_training",
    "with_teacher",
]

_logger = logging.getLogger(__name__)

# A given teacher's validation accuracy is checked against chance on at least this many examples.
MIN_CHECKED = 20


@dataclass(frozen=True)
class DistillConfig:
    """``[training] distill``: learn from a teacher's soft predictions (the full model's, or
    those of the fine-tuned classifier ``teacher`` names).

    Attributes:
        alpha: Weight of the distillation term (0: labels only, as without distillation;
            1: the teacher only).
        temperature: Softmax temperature ``T`` of both teacher and student in the soft term.
        teacher: A classifier already fine-tuned on the task (a local folder, a Hub id or
            ``package:<module>``) to learn from, instead of the full model fine-tuned here
            (None, the default). Every mask learns from it, the full one too. It must have the
            student's number of labels, in the same order, and the same tokenizer vocabulary.
    """

    alpha: float = 0.5
    temperature: float = 2.0
    teacher: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not (
            isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0
        ):
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if isinstance(self.temperature, bool) or not (
            isinstance(self.temperature, (int, float))
            and math.isfinite(self.temperature)
            and self.temperature > 0
        ):
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        if self.teacher is not None and not (
            isinstance(self.teacher, str) and self.teacher.strip()
        ):
            raise ValueError(
                f"teacher must be a model folder, Hub id or package:<module>, got {self.teacher!r}"
            )

    def trains_teacher(self, mask: Sequence[int | str]) -> bool:
        """Whether fine-tuning ``mask`` makes the study's own teacher: distillation is on, no
        ``teacher`` is given, and ``mask`` keeps every layer. That model learns from the labels
        alone, and its fine-tune teaches every other mask."""
        return self.alpha > 0 and self.teacher is None and all(int(b) for b in mask)

    def settings(self) -> dict[str, Any]:
        """The fields as a dict for digests of what results depend on: ``teacher`` left out
        when unset (so that digests from before it existed are unchanged), else with its
        :func:`teacher_identity` (another checkpoint in the same folder, other results)."""
        out = dataclasses.asdict(self)
        if self.teacher is None:
            del out["teacher"]
        else:
            out["teacher_identity"] = teacher_identity(self.teacher)
        return out


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, labels)``,
    both terms averaged over the batch; computed in float32 whatever the logits' precision."""
    import torch.nn.functional as F

    student = student_logits.float()
    ce = F.cross_entropy(student, labels)
    if alpha == 0:
        return ce
    t = float(temperature)
    kl = F.kl_div(
        F.log_softmax(student / t, dim=-1),
        F.log_softmax(teacher_logits.float() / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * kl + (1.0 - alpha) * ce


def with_teacher(split: TokenizedSplit, logits: np.ndarray) -> TokenizedSplit:
    """``split`` whose batches carry ``logits`` (one row per example) as ``teacher_logits``."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[0] != len(split):
        raise ValueError(
            f"teacher logits have shape {logits.shape}, expected ({len(split)}, classes): one "
            "row per training example"
        )
    return dataclasses.replace(split, teacher_logits=logits)


def check_teacher(
    teacher: Any, student: Any, teacher_tokenizer: Any = None, student_tokenizer: Any = None
) -> None:
    """Refuse a teacher whose classes or vocabulary differ from the student's (its logits would
    mean other labels, or its token ids other words); with both tokenizers, their vocabularies
    are compared word by word.

    Raises:
        ValueError: One line naming what differs.
    """
    if teacher_tokenizer is not None and student_tokenizer is not None:
        theirs, ours = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
        if theirs != ours:
            differ = sorted(set(theirs.items()) ^ set(ours.items()), key=lambda kv: kv[1])
            raise ValueError(
                f"the distillation teacher's tokenizer differs from the student's ({len(theirs)} "
                f"against {len(ours)} tokens; e.g. {differ[0][0]!r} -> {differ[0][1]}): its token "
                "ids would mean other words; use a teacher with the student's tokenizer"
            )
    for name in ("num_labels", "vocab_size"):
        a = getattr(teacher.config, name, None)
        b = getattr(student.config, name, None)
        if a is not None and b is not None and a != b:
            what = "labels" if name == "num_labels" else "vocabulary"
            raise ValueError(
                f"the distillation teacher has {name}={a} but the student has {name}={b}: its "
                f"{what} do not match; use a teacher of the same model and task"
            )


def load_teacher(
    name: str, student: Any, student_tokenizer: Any = None, max_length: int | None = None
) -> torch.nn.Module:
    """Load ``[training.distill] teacher``: a fine-tuned sequence classifier (see
    :func:`~alphanas_optuna.synthesis.load_pretrained`), checked against the student.

    Args:
        name: A local folder, a Hub id or ``package:<module>``.
        student: The student (base) model: labels and vocabulary size are compared.
        student_tokenizer: Its tokenizer: the vocabularies are compared token by token.
        max_length: The longest input (tokens) the teacher must accept.

    Raises:
        ValueError: No such model or not a checkpoint folder, a classification head that the
            checkpoint lacks (a teacher must be fine-tuned on the task already), labels or a
            vocabulary that differ from the student's, or inputs longer than it accepts. One
            line, naming ``[training.distill] teacher``.
    """
    from alphanas_optuna.synthesis import load_pretrained
    from alphanas_optuna.task import max_input_tokens

    try:
        # With its own number of labels: a mismatch is reported below, not as a size error.
        model, tokenizer = load_pretrained(name, num_labels=None, seed=None, fine_tuned=True)
    except (ValueError, OSError) as exc:  # OSError: a folder without config.json or tokenizer
        raise ValueError(
            f"[training.distill] teacher: {first_line(exc, default_to_type=True)}; give a "
            "classifier fine-tuned on the task, or leave teacher unset to fine-tune the full model"
        ) from None
    try:
        check_teacher(model, student, tokenizer, student_tokenizer)
    except ValueError as exc:
        raise ValueError(f"[training.distill] teacher {name!r}: {exc}") from None
    limit = max_input_tokens(model, tokenizer)
    if max_length is not None and max_length > limit:
        raise ValueError(
            f"[training.distill] teacher {name!r} accepts {limit} tokens but the examples hold "
            f"up to {max_length}; set [data] max_length <= {limit} or use another teacher"
        )
    model.eval()
    return model


# (folder, [(file, size, mtime)]) -> digest of the files' contents: a teacher is hashed once per
# process while its files stay as they are.
_IDENTITIES: dict[tuple[str, tuple[tuple[str, int, int], ...]], str] = {}


def teacher_identity(name: str) -> str:
    """What identifies a given teacher: for a local folder (or ``package:<module>``) a digest of
    the contents of every file in it, so that a checkpoint trained again into the same folder is
    another teacher and a copy of it on another machine is the same one; a Hub id stands for
    itself (pin a revision by downloading it to a folder).

    Raises:
        ValueError: A ``package:`` teacher whose module is not installed (naming the key).
    """
    from alphanas_optuna.synthesis import resolve_model_source

    try:
        source = os.path.expanduser(resolve_model_source(name))
    except ValueError as exc:
        raise ValueError(f"[training.distill] teacher: {first_line(exc)}") from None
    if not os.path.isdir(source):
        return name
    files = sorted(p for p in Path(source).rglob("*") if p.is_file())
    stats = tuple(
        (str(p.relative_to(source)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    )
    memo = (os.path.realpath(source), stats)
    if memo not in _IDENTITIES:
        digest = hashlib.sha256()
        for path, (relative, _, _) in zip(files, stats, strict=True):
            digest.update(relative.encode() + b"\0")
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        _IDENTITIES[memo] = "sha256:" + digest.hexdigest()[:24]
    return _IDENTITIES[memo]


def predict_logits(
    model: torch.nn.Module,
    split: TokenizedSplit,
    *,
    pad_token_id: int,
    batch_size: int,
    accelerator: Any,
) -> np.ndarray:
    """Class logits of ``model`` for every example of ``split``, in the split's order (float32)."""
    import torch

    from alphanas_optuna.data import make_dataloader

    loader = make_dataloader(split, batch_size=batch_size, pad_token_id=pad_token_id, shuffle=False)
    # Evaluation batches are sorted by length: remember where each example went.
    order = np.fromiter((i for batch in loader.batch_sampler for i in batch), dtype=np.int64)
    device = accelerator.device
    model = model.to(device)
    model.eval()
    parts = []
    with torch.no_grad(), accelerator.autocast():
        for batch in loader:
            out = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            )
            parts.append(out.logits.float().cpu())
    stacked = torch.cat(parts).numpy()
    logits = np.empty_like(stacked)
    logits[order] = stacked
    return logits


@dataclass(frozen=True)
class Teacher:
    """The teacher's logits on the training examples, and what it cost once.

    Attributes:
        logits: One row of class logits per training example, in the split's order.
        accuracy: The teacher's validation accuracy (NaN if it was not measured here).
        seconds: Seconds its fine-tune and prediction took when they were computed.
        cached: Whether this process read them from the cache instead of computing them.
        key: The cache key.
    """

    logits: np.ndarray
    accuracy: float
    seconds: float
    cached: bool
    key: str


def teacher_cache_dir() -> Path:
    """``$ALPHANAS_CACHE/teacher`` (or ``~/.cache/alphanas_optuna/teacher``)."""
    from alphanas_optuna.data import default_cache_dir

    return default_cache_dir().parent / "teacher"


def teacher_training(training: TrainingConfig, seed: int | None = None) -> TrainingConfig:
    """The teacher's settings: the student's, without distillation, one evaluation (at the end),
    at ``seed`` (default the student's)."""
    return dataclasses.replace(
        training,
        distill=None,
        evaluations=1,
        seed=training.seed if seed is None else seed,
    )


def teacher_key(
    model: torch.nn.Module,
    train: TokenizedSplit,
    validation: TokenizedSplit,
    training: TrainingConfig,
    teacher: str | None = None,
) -> str:
    """What the teacher's logits depend on: the training and validation examples, and either
    the base model's weights and configuration and the teacher's training settings (and seed),
    or a given ``teacher`` (:func:`teacher_identity`) and the precision it predicts in (it is
    not trained, so one set of logits serves every study, seed and budget on these examples)."""
    digest = hashlib.sha256()
    if teacher is None:
        digest.update(model.config.to_json_string(use_diff=False).encode())
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for split in (train, validation):
        digest.update(np.asarray(split.labels, dtype=np.int64).tobytes())
        for ids in split.input_ids:
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
            digest.update(b"|")
    if teacher is None:
        digest.update(json.dumps(dataclasses.asdict(training), sort_keys=True).encode())
    else:
        digest.update(b"teacher:" + teacher_identity(teacher).encode())
        digest.update(b"precision:" + training.mixed_precision.encode())
    return digest.hexdigest()[:24]


def teacher_for(
    model: torch.nn.Module,
    train: TokenizedSplit,
    validation: TokenizedSplit,
    training: TrainingConfig,
    accelerator: Any,
    *,
    pad_token_id: int,
    seed: int | None = None,
    trained: torch.nn.Module | None = None,
    fit: Callable[[], tuple[torch.nn.Module, float]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    tokenizer: Any = None,
) -> Teacher:
    """The teacher's logits on ``train``: from the cache, or by fine-tuning the full ``model``
    with :func:`teacher_training` (``training`` without distillation, at ``seed``) and predicting;
    or, with ``training.distill.teacher`` set, by loading that fine-tuned classifier
    (:func:`load_teacher`; ``trained`` and ``fit`` are then not used) and predicting.

    Args:
        model: The pretrained base model (every layer); never modified.
        train: The student's training examples.
        validation: The validation examples (the teacher's accuracy is measured on them).
        training: The student's training settings.
        accelerator: The process's Accelerator.
        pad_token_id: The tokenizer's padding id.
        seed: The teacher's training seed (default ``training.seed``). Keep it fixed across a
            study's trials, so that one teacher serves them all.
        trained: An already fine-tuned teacher (e.g. the full model that ``alphanas report``
            trains for Table 1); it is checked against ``model`` and not trained again.
        fit: Trains the teacher when the cache lacks it and returns it with its validation
            accuracy, instead of the default fine-tune (an objective's full-mask trial is the
            teacher: it passes its own training, so the teacher costs no extra fine-tune). It
            must train the full model with :func:`teacher_training`'s settings.
        cache_dir: Folder of the cache (default :func:`teacher_cache_dir`); ``""`` disables it.
        tokenizer: The student's tokenizer, compared with a given teacher's.

    Raises:
        ValueError: The teacher's labels or vocabulary differ from the student's, a given
            teacher cannot be loaded or is not fine-tuned, or a cached file does not fit the
            training examples.
    """
    given = training.distill.teacher if training.distill is not None else None
    settings = teacher_training(training, seed)
    key = teacher_key(model, train, validation, settings, given)
    num_labels = int(getattr(model.config, "num_labels", 2))

    def compute() -> tuple[np.ndarray, float]:
        from alphanas_optuna.training import evaluate, fine_tune, make_loaders

        teacher = trained
        if given is not None:
            longest = max(len(ids) for split in (train, validation) for ids in split.input_ids)
            teacher = load_teacher(given, model, tokenizer, max_length=longest)
            # Its validation accuracy, to report and check: one pass, as a trial's evaluation.
            _, eval_dl = make_loaders(train, validation, settings, pad_token_id=pad_token_id)
            teacher = teacher.to(accelerator.device)
            accuracy = evaluate(teacher, eval_dl, accelerator) if len(validation) else math.nan
            # Far below chance: its labels mean something else (another order, another task).
            if len(validation) >= MIN_CHECKED and accuracy < 0.5 / num_labels:
                raise ValueError(
                    f"[training.distill] teacher {given!r} has validation accuracy "
                    f"{accuracy:.4f} on this task, far below chance ({1 / num_labels:.2f}): its "
                    "labels are in another order or of another task; use a teacher fine-tuned "
                    "on this task with the data's label ids"
                )
        elif fit is not None:
            teacher, accuracy = fit()
        elif teacher is None:
            teacher = copy.deepcopy(model)
            train_dl, eval_dl = make_loaders(train, validation, settings, pad_token_id=pad_token_id)
            accuracy = fine_tune(teacher, train_dl, eval_dl, settings, accelerator).accuracy
            teacher = accelerator.unwrap_model(teacher)
        else:
            check_teacher(teacher, model)
            accuracy = math.nan  # measured by whoever trained it
        logits = predict_logits(
            teacher,
            train,
            pad_token_id=pad_token_id,
            batch_size=settings.eval_batch_size,
            accelerator=accelerator,
        )
        if teacher is not trained:
            del teacher
            accelerator.free_memory()
        return logits, accuracy

    if cache_dir is not None and str(cache_dir) == "":
        start = time.perf_counter()
        logits, accuracy = compute()
        teacher = Teacher(logits, accuracy, time.perf_counter() - start, False, key)
    else:
        directory = Path(cache_dir) if cache_dir is not None else teacher_cache_dir()
        teacher = _cached(directory, key, compute)
    if teacher.logits.shape != (len(train), num_labels):
        raise ValueError(
            f"the teacher's logits have shape {teacher.logits.shape} but the student has "
            f"{len(train)} training examples and num_labels={num_labels}: its labels do not match"
        )
    return teacher


def _cached(directory: Path, key: str, compute: Callable[[], tuple[np.ndarray, float]]) -> Teacher:
    path = directory / f"{key}.npz"
    found = _read(path, key)
    if found is not None:
        return found
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive(directory / f"{key}.lock"):
        # Another worker may have written it while this one waited for the lock.
        found = _read(path, key)
        if found is not None:
            return found
        start = time.perf_counter()
        logits, accuracy = compute()
        seconds = time.perf_counter() - start
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, logits=logits, accuracy=np.float64(accuracy), seconds=np.float64(seconds))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    return Teacher(logits, accuracy, seconds, False, key)


def _read(path: Path, key: str) -> Teacher | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return Teacher(
                z["logits"].astype(np.float32),
                float(z["accuracy"]),
                float(z["seconds"]),
                True,
                key,
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return None  # a damaged file is computed again


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (released by the OS if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): workers may each compute the same file
        yield
        return
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _logger.warning(
                "Waiting for another worker to finish the distillation teacher (%s)", lock
            )
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
