"""The task of a study loaded once: the pretrained model, its tokenizer, and the tokenised splits.

One loader for the search's objective and for the final fine-tune of ``alphanas report`` and
``alphanas export``, so both apply the same checks (the model's longest input, labels against
``num_labels``) to the same data. It joins :mod:`alphanas_optuna.synthesis` and
:mod:`alphanas_optuna.data` and knows nothing of Optuna.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alphanas_optuna.data import DataConfig, TextSplits, TokenizedSplit

__all__ = ["LoadedTask", "load_task", "max_input_tokens"]

SPLITS = ("train", "validation", "test")


@dataclass
class LoadedTask:
    """A pretrained model and the data of one task, tokenised for it.

    Attributes:
        model: The sequence classifier (``AutoModelForSequenceClassification``).
        tokenizer: Its tokenizer.
        pad_token_id: The tokenizer's padding id (0 if it has none).
        splits: The raw texts and labels of every split.
        tokenized: The tokenised splits that were asked for and are not empty.
    """

    model: Any
    tokenizer: Any
    pad_token_id: int
    splits: TextSplits
    tokenized: dict[str, TokenizedSplit]


def max_input_tokens(model: Any, tokenizer: Any) -> int:
    """Longest input the model takes: its position table (less RoBERTa's padding offset) and
    the tokenizer's own limit, where it states a real one."""
    limit = int(getattr(model.config, "max_position_embeddings", 1 << 30) or 1 << 30)
    if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta"):
        limit -= 2
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared < 1_000_000:
        limit = min(limit, declared)
    return limit


def load_task(
    model_name: str,
    data: DataConfig,
    *,
    num_labels: int | None = None,
    seed: int | None = 0,
    splits: Sequence[str] = ("train", "validation"),
) -> LoadedTask:
    """Load the data, then the model (with a classification head of ``num_labels`` classes drawn
    with ``seed``), check that ``data.max_length`` fits the model, and tokenise ``splits``.

    Args:
        model_name: A Hub id, a local folder, or ``package:<module>``.
        data: Where the data comes from and how it is cut.
        num_labels: Classes of the head; default the data's.
        seed: Seed of the weights the checkpoint lacks (the new head).
        splits: Which of ``train``, ``validation``, ``test`` to tokenise (empty ones are left out).

    Raises:
        ValueError: ``data.max_length`` is more than the model accepts; or a bad model or data
            source (see :func:`~alphanas_optuna.synthesis.load_pretrained` and
            :func:`~alphanas_optuna.data.load_splits`).
    """
    from alphanas_optuna.data import load_splits, tokenize_split
    from alphanas_optuna.synthesis import load_pretrained

    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown splits {unknown}; choose from {list(SPLITS)}")
    texts = load_splits(data)
    labels = num_labels if num_labels is not None else texts.num_labels
    model, tokenizer = load_pretrained(model_name, num_labels=labels, seed=seed)
    limit = max_input_tokens(model, tokenizer)
    if data.max_length > limit:
        raise ValueError(
            f"[data] max_length = {data.max_length} is more than {model_name!r} accepts "
            f"({limit} tokens); set max_length <= {limit}"
        )
    tokenized = {
        name: tokenize_split(
            *getattr(texts, name),
            tokenizer,
            data.max_length,
            fingerprint=f"{texts.fingerprint}:{name}",
        )
        for name in splits
        if len(getattr(texts, name)[1])
    }
    return LoadedTask(
        model=model,
        tokenizer=tokenizer,
        pad_token_id=tokenizer.pad_token_id or 0,
        splits=texts,
        tokenized=tokenized,
    )
