"""AlphaNAS for Optuna: search which encoder layers of a pretrained BERT-family classifier to keep.

The sampler and the mask helpers import only Optuna and NumPy. Everything that needs torch or
transformers (synthesis, data, training, the objective) is imported on first use, so
``from alphanas_optuna import AlphaNASSampler`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from alphanas_optuna.answer import Winner, winner, winners
from alphanas_optuna.mask import format_mask, parse_mask, suggest_mask
from alphanas_optuna.sampler import AlphaNASSampler

if TYPE_CHECKING:
    from alphanas_optuna.objective import AlphaNASObjective, FitnessConfig
    from alphanas_optuna.search import load_objective, load_study
    from alphanas_optuna.synthesis import count_parameters, drop_layers

__version__ = "0.1.0"

_LAZY = {
    "AlphaNASObjective": "alphanas_optuna.objective",
    "FitnessConfig": "alphanas_optuna.objective",
    "count_parameters": "alphanas_optuna.synthesis",
    "drop_layers": "alphanas_optuna.synthesis",
    "load_objective": "alphanas_optuna.search",
    "load_study": "alphanas_optuna.search",
}

__all__ = [
    "AlphaNASObjective",
    "AlphaNASSampler",
    "Winner",
    "FitnessConfig",
    "count_parameters",
    "drop_layers",
    "format_mask",
    "load_objective",
    "load_study",
    "parse_mask",
    "suggest_mask",
    "winner",
    "winners",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'alphanas_optuna' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
