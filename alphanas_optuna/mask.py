"""Layer masks: the AlphaNAS genotype, and how it is stored as Optuna parameters.

A mask has one bit per encoder layer: ``1`` keeps the layer, ``0`` drops it. In a study each bit is a
categorical parameter named ``<prefix><index>`` with two digits (``layer_00``, ``layer_01``, ...), so
the parameters sort by layer in optuna-dashboard. This module depends on nothing but Optuna's trial
interface, so the sampler and any objective can share it without importing torch.

One representation: a mask is a :data:`Mask`, a tuple of 0/1 ints, layer 0 first. It is written
as a bit string (``"110111"``) where a person or the storage reads it (:func:`format_mask`,
:func:`parse_mask`), and the sampler's vectorised code handles it as an integer code with bit ``i``
= layer ``i`` (:func:`mask_to_code`, :func:`mask_from_code`). All conversions live here.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_PREFIX",
    "Mask",
    "format_mask",
    "is_integer",
    "mask_from_code",
    "mask_from_params",
    "mask_to_code",
    "param_name",
    "parse_mask",
    "suggest_mask",
    "validate_mask",
]

DEFAULT_PREFIX = "layer_"
MASK_CHOICES = (0, 1)

Mask = tuple[int, ...]


def param_name(index: int, prefix: str = DEFAULT_PREFIX) -> str:
    """The name of the parameter that holds layer ``index``'s bit, e.g. ``layer_03``."""
    return f"{prefix}{index:02d}"


def validate_mask(mask: Sequence[int] | str, n_layers: int | None = None) -> Mask:
    """Check a mask and return it as a tuple of ints.

    Args:
        mask: Bits as a sequence of 0/1 or a string such as ``"111100000000"``.
        n_layers: The number of encoder layers the mask must cover, if known.

    Raises:
        ValueError: The mask is empty, has the wrong length, holds a value other than 0 or 1, or keeps
            no layer at all.
    """
    if isinstance(mask, str):
        return parse_mask(mask, n_layers)
    bits = tuple(mask)
    if not bits:
        raise ValueError("mask is empty: it needs one bit (0 or 1) per encoder layer")
    if n_layers is not None and len(bits) != n_layers:
        raise ValueError(
            f"mask {_show(bits)} has {len(bits)} bits but the model has {n_layers} encoder layers"
        )
    for i, b in enumerate(bits):
        # bool is an int subclass; numpy ints are not, so compare by value but reject other types.
        if not is_integer(b) or int(b) not in MASK_CHOICES:
            raise ValueError(f"mask bit {i} is {b!r}; allowed values are 0 (drop) and 1 (keep)")
    bits = tuple(int(b) for b in bits)
    if not any(bits):
        raise ValueError(f"mask {format_mask(bits)} drops every layer; keep at least one")
    return bits


def parse_mask(text: str, n_layers: int | None = None) -> Mask:
    """Parse a mask written as a bit string, e.g. ``"111100000000"``."""
    stripped = text.strip()
    if not stripped or any(c not in "01" for c in stripped):
        raise ValueError(f"mask {text!r} must be a string of 0s and 1s, one per encoder layer")
    return validate_mask(tuple(int(c) for c in stripped), n_layers)


def format_mask(mask: Iterable[int]) -> str:
    """Write a mask as a bit string, layer 0 first: ``(1, 1, 0)`` -> ``"110"``."""
    return "".join(str(int(b)) for b in mask)


def suggest_mask(
    trial: optuna.trial.BaseTrial, n_layers: int, prefix: str = DEFAULT_PREFIX
) -> Mask:
    """Suggest a layer mask as ``n_layers`` categorical parameters with choices ``(0, 1)``.

    :class:`~alphanas_optuna.AlphaNASSampler` recognises these parameters by ``prefix`` and proposes
    them jointly; any other sampler treats them as independent categoricals.

    Example:
        .. code-block:: python

            import optuna
            from alphanas_optuna import suggest_mask

            def objective(trial):
                mask = suggest_mask(trial, 12)
                return sum(mask)

            study = optuna.create_study(direction="maximize")
            study.optimize(objective, n_trials=3)

    Returns:
        The mask as a tuple of ints. It may keep no layer when another sampler drew it; the
        AlphaNAS sampler never proposes that mask.
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    return tuple(
        int(trial.suggest_categorical(param_name(i, prefix), MASK_CHOICES)) for i in range(n_layers)
    )


def mask_from_params(params: Mapping[str, Any], prefix: str = DEFAULT_PREFIX) -> Mask | None:
    """Rebuild the mask from a trial's parameters, or ``None`` if they hold no complete mask of
    0/1 bits (a bit missing, or a value that is not 0 or 1)."""
    indices = []
    for name in params:
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            indices.append(int(name[len(prefix) :]))
    if not indices:
        return None
    n = max(indices) + 1
    if len(indices) != n:
        return None
    try:
        bits = tuple(int(params[param_name(i, prefix)]) for i in range(n))
    except (KeyError, TypeError, ValueError):
        return None
    if any(b not in MASK_CHOICES for b in bits):
        return None
    return bits


def is_integer(value: Any) -> bool:
    """Whether ``value`` is an integer (Python's or NumPy's), and not a bool or a float.

    The one integer check of the package: ``1.0`` and ``True`` are refused wherever an integer
    (a mask bit, a population size, a seed) is asked for.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def mask_to_code(mask: Iterable[int]) -> int:
    """A mask as an integer code, bit ``i`` = layer ``i``: ``(1, 1, 0)`` -> ``3``."""
    code = 0
    for i, b in enumerate(mask):
        if b:
            code |= 1 << i
    return code


def mask_from_code(code: int, n_layers: int) -> Mask:
    """The mask of ``n_layers`` bits that an integer code stands for: ``(3, 3)`` -> ``(1, 1, 0)``."""
    code = int(code)
    if code < 0 or code >> n_layers:
        raise ValueError(f"mask code {code} does not fit in {n_layers} layers")
    return tuple((code >> i) & 1 for i in range(n_layers))


def _show(bits: Sequence[Any]) -> str:
    try:
        return format_mask(bits)
    except (TypeError, ValueError):
        return repr(bits)
