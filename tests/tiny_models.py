"""Tiny random models and a tiny tokenizer for tests: built in memory, nothing is downloaded.

* ``tiny_model(family, n_layers=4, num_labels=2, seed=0)`` builds a randomly initialised
  ``<Family>ForSequenceClassification`` in eval mode; ``family`` is a ``config.model_type``
  (see ``FAMILIES``; ``"albert"`` is also available for tests of unsupported families).
  ``tiny_config(...)`` returns just the config.
* ``tiny_tokenizer(tmp_path=None)`` builds a WordPiece ``PreTrainedTokenizerFast`` over ``VOCAB``
  (special tokens, a few sentiment words and their pieces). It returns ``input_ids`` and
  ``attention_mask`` only (no ``token_type_ids``, which DistilBERT does not accept). With
  ``tmp_path`` it is also saved there and reloaded, as a real checkpoint folder would be.
* ``VOCAB_SIZE`` is the model vocabulary size; every tiny model accepts the tokenizer's ids.
* ``random_inputs(batch, length, seed)`` gives ``input_ids``/``attention_mask`` tensors with padding.

Import from a test as ``from tiny_models import tiny_model, tiny_tokenizer`` (pytest puts ``tests/``
on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = [
    "FAMILIES",
    "VOCAB",
    "VOCAB_SIZE",
    "random_inputs",
    "tiny_config",
    "tiny_model",
    "tiny_tokenizer",
]

#: Every family that ``alphanas_optuna.synthesis`` supports, by ``config.model_type``.
FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "mpnet", "deberta-v2")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "a", "and", "is", "was", "this", "it", "movie", "film", "plot", "acting", "story",
    "good", "great", "excellent", "wonderful", "loved", "best", "fun", "bad", "terrible", "awful",
    "boring", "worst", "hated", "waste", "not", "very", "really", "i", ".", ",", "!",
    "##s", "##ed", "##ing", "##ly",
]  # fmt: skip
VOCAB = SPECIAL_TOKENS + WORDS
#: Vocabulary size of the tiny models (a little larger than ``VOCAB``).
VOCAB_SIZE = 64
PAD_ID = 0

_HIDDEN = 32
_HEADS = 4
_INTERMEDIATE = 37
_MAX_POSITIONS = 128


def tiny_config(family: str, n_layers: int = 4, num_labels: int = 2):
    """The config of a tiny ``family`` model (hidden size 32, 4 heads, vocabulary ``VOCAB_SIZE``)."""
    import transformers as tf

    common = dict(
        vocab_size=VOCAB_SIZE,
        num_labels=num_labels,
        pad_token_id=PAD_ID,
        max_position_embeddings=_MAX_POSITIONS,
    )
    bert_like = dict(
        common,
        hidden_size=_HIDDEN,
        num_hidden_layers=n_layers,
        num_attention_heads=_HEADS,
        intermediate_size=_INTERMEDIATE,
    )
    if family == "bert":
        return tf.BertConfig(**bert_like)
    if family == "roberta":
        return tf.RobertaConfig(**bert_like, type_vocab_size=1)
    if family == "xlm-roberta":
        return tf.XLMRobertaConfig(**bert_like, type_vocab_size=1)
    if family == "electra":
        return tf.ElectraConfig(**bert_like, embedding_size=16)
    if family == "mpnet":
        return tf.MPNetConfig(**bert_like, relative_attention_num_buckets=32)
    if family == "deberta-v2":
        # Relative attention with position buckets, a layer-normed relative embedding and the
        # convolution after the first layer: every module that lives outside the layer list.
        return tf.DebertaV2Config(
            **bert_like,
            type_vocab_size=0,
            relative_attention=True,
            position_buckets=16,
            max_relative_positions=-1,
            norm_rel_ebd="layer_norm",
            pos_att_type=["p2c", "c2p"],
            share_att_key=True,
            conv_kernel_size=3,
        )
    if family == "distilbert":
        return tf.DistilBertConfig(
            **common, dim=_HIDDEN, n_layers=n_layers, n_heads=_HEADS, hidden_dim=_INTERMEDIATE
        )
    if family == "albert":
        return tf.AlbertConfig(**bert_like, embedding_size=16)
    raise ValueError(f"unknown tiny model family {family!r}; known: {', '.join(FAMILIES)}, albert")


def tiny_model(family: str, n_layers: int = 4, num_labels: int = 2, seed: int = 0):
    """A randomly initialised tiny ``<family>ForSequenceClassification`` in eval mode."""
    from transformers import AutoModelForSequenceClassification

    config = tiny_config(family, n_layers=n_layers, num_labels=num_labels)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    return model.eval()


def random_inputs(batch: int = 3, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids (special tokens excluded) with ragged padding at the end of each row."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(len(SPECIAL_TOKENS), len(VOCAB), (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        pad = min(row * 2, length - 2)
        input_ids[row, length - pad :] = PAD_ID
        attention_mask[row, length - pad :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def tiny_tokenizer(tmp_path: Path | str | None = None):
    """A WordPiece ``PreTrainedTokenizerFast`` over ``VOCAB`` (lower-cases, adds [CLS]/[SEP]).

    Args:
        tmp_path: If given, the tokenizer is saved to ``tmp_path / "tiny-tokenizer"`` and loaded
            back from there, and that folder is ``tokenizer.name_or_path``.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=_MAX_POSITIONS - 2,
    )
    if tmp_path is not None:
        folder = Path(tmp_path) / "tiny-tokenizer"
        tokenizer.save_pretrained(folder)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    return tokenizer
