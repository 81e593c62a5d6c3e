"""AlphaNASSampler: noise-aware elitist evolution over layer masks, as an Optuna sampler.

The genotype is the layer mask that :func:`alphanas_optuna.suggest_mask` suggests as one
categorical parameter per encoder layer (``layer_00``, ``layer_01``, ...). The sampler decides a
trial's whole mask when the objective asks for the first of these parameters, writes it to the
trial's system attributes (so other workers see it at once) and answers every later bit from it.
Any other parameter goes to a fallback sampler.

The parts, as in Optuna's ``samplers/nsgaii``:

* :mod:`.sampler`: the Optuna-facing class, :class:`AlphaNASSampler`;
* :mod:`.digest`: what the sampler reads from the storage, folded in once per finished trial;
* :mod:`.evidence`: each evaluated mask's evaluations, and the estimates made from them;
* :mod:`.model`: the value model (noise-aware, pooled across masks) and the feasibility model;
* :mod:`.elites`: the one elite rule;
* :mod:`.proposals`: pure proposal functions (random, flip, nearest free, neighbourhood,
  design, re-evaluation).

This package imports only Optuna and NumPy.
"""

from alphanas_optuna.sampler.sampler import PROPOSAL_KEY, AlphaNASSampler, evaluation_index

__all__ = ["PROPOSAL_KEY", "AlphaNASSampler", "evaluation_index"]
