"""Tabular fitness landscapes over layer masks, where every mask's (accuracy, parameters) is known.

A landscape maps each non-empty mask to ``(accuracy, n_params)``; a search on it costs nothing, so a
sampler can be run for many seeds. Two kinds:

* :func:`synthetic_landscape`: a 12-layer, bert-base-sized model (24.39M parameters outside the
  encoder, 7.0877M per encoder layer). Dropping the set ``D`` of layers costs a "damage"

      L(D) = sum_{i in D} w_i + sum_{i, i+1 in D} c_i + sum_{(i, j) in P, i, j in D} e_ij

  with per-layer importances ``w`` (the instance's profile), extra damage ``c`` for dropping two
  neighbouring layers, and a few random long-range pairs ``P`` whose joint removal helps or hurts.
  Accuracy is ``A = 0.5 + (A_full - 0.5) * exp(-L) + noise``: damage saturates towards chance
  (0.5), so layers interact through the exponential as well, and a fixed noise per mask (standard
  deviation 0.004, about the seed-to-seed spread of a short fine-tuning run) makes the landscape
  rugged.
  The profiles: ``top`` (the upper layers matter least, as reported for BERT), ``middle`` (a
  U-shape: the middle layers matter least), ``random`` (log-normal importances in random order)
  and ``bottom`` (the lower layers matter least: the opposite of ``top``, to check that a sampler
  does not rely on a bottom-layers prior). Three families shaped after what was measured on real
  models, with a different random draw per instance:

  * ``collapse``: as on all-MiniLM-L6-v2, a sub-model without one of the top ``r`` layers (``r``
    of 1–3, per instance) collapses towards the majority class (accuracy near 0.5: infeasible),
    whatever else it keeps; the other layers have random importances.
  * ``distant``: strong interactions between distant layers (``|i - j| >= 3``): dropping both of
    a pair costs much more, or much less, than their sum, which no bits-and-neighbours model
    sees.
  * ``plateau``: most layers are nearly interchangeable (small, nearly equal importances), so
    many masks of one depth lie within a fraction of a point of each other, and a few layers
    matter.
* :func:`table_landscape`: a measured table (CSV with ``mask``, ``accuracy``, ``n_params``; several
  rows per mask, e.g. seeds, are averaged).
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BERT_BASE_FIXED = 24.39e6
BERT_BASE_PER_LAYER = 7.0877e6

__all__ = ["Landscape", "synthetic_landscape", "table_landscape", "PROFILES"]

PROFILES = ("top", "middle", "random", "bottom", "collapse", "distant", "plateau")


@dataclass
class Landscape:
    """Every mask's accuracy and parameter count, plus the fitness they give.

    Attributes:
        name: A short label for tables.
        n_layers: Mask length.
        accuracy: mask string -> validation accuracy.
        n_params: mask string -> parameter count.
        min_accuracy: The feasibility floor of the study the landscape stands for.
    """

    name: str
    n_layers: int
    accuracy: dict[str, float]
    n_params: dict[str, float]
    min_accuracy: float = 0.75

    def feasible(
        self, mask: str, min_accuracy: float | None = None, max_params: float = 100e6
    ) -> bool:
        """Whether the objective keeps (does not prune) ``mask``."""
        floor = self.min_accuracy if min_accuracy is None else min_accuracy
        return self.accuracy[mask] >= floor and self.n_params[mask] <= max_params

    def fitness(self, mask: str, lam: float) -> float:
        """Q = A - lam * N / 1e6."""
        return self.accuracy[mask] - lam * self.n_params[mask] / 1e6

    def optimum(
        self, lam: float, min_accuracy: float | None = None, max_params: float = 100e6
    ) -> tuple[str, float, float]:
        """The best feasible mask, its Q, and the worst feasible Q."""
        scores = {
            m: self.fitness(m, lam)
            for m in self.accuracy
            if self.feasible(m, min_accuracy, max_params)
        }
        if not scores:
            raise ValueError(f"landscape {self.name} has no feasible mask")
        best = max(scores, key=scores.__getitem__)
        return best, scores[best], min(scores.values())


def _noise(instance: int, mask: str, sd: float) -> float:
    digest = hashlib.sha256(f"{instance}:{mask}".encode()).digest()
    u1 = (int.from_bytes(digest[:8], "little") + 1) / 2**64
    u2 = int.from_bytes(digest[8:16], "little") / 2**64
    return sd * math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def synthetic_landscape(
    profile: str, instance: int, n_layers: int = 12, full_accuracy: float = 0.93
) -> Landscape:
    """A synthetic bert-base-like landscape (see the module docstring).

    Args:
        profile: One of :data:`PROFILES`.
        instance: Seed of the instance's random parts (importances' jitter, pairs, noise).
        n_layers: Number of encoder layers.
        full_accuracy: Accuracy of the full model before noise.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    rng = np.random.default_rng(1000 + instance)
    pos = np.arange(n_layers) / (n_layers - 1)  # 0 bottom .. 1 top
    if profile == "top":
        base = 0.11 * (1.0 - pos) ** 1.5 + 0.006
    elif profile == "bottom":
        base = 0.11 * pos**1.5 + 0.006
    elif profile == "middle":
        base = 0.12 * (2.0 * np.abs(pos - 0.5)) ** 2 + 0.008
    elif profile == "plateau":
        # About what a layer's parameters are worth at lambda = 0.002: dropping one costs
        # roughly what it saves, so many masks lie within a fraction of a point.
        base = np.full(n_layers, 0.033)
        important = rng.choice(n_layers, 2, replace=False)
        base[important] = rng.uniform(0.08, 0.16, 2)
    else:  # random, collapse, distant
        base = rng.permutation(np.exp(rng.normal(np.log(0.03), 0.9, n_layers)))
    jitter = 0.08 if profile == "plateau" else 0.25
    w = base * np.exp(rng.normal(0.0, jitter, n_layers))
    c = rng.uniform(0.0, 0.01 if profile == "plateau" else 0.04, n_layers - 1)
    pairs = {}
    for _ in range(n_layers // 2):
        i, j = sorted(rng.choice(n_layers, 2, replace=False).tolist())
        pairs[(i, j)] = float(rng.normal(0.0, 0.03))
    if profile == "distant":
        for _ in range(n_layers):
            i = int(rng.integers(0, n_layers - 3))
            j = int(rng.integers(i + 3, n_layers))
            # Mostly extra damage; sometimes two layers are redundant with each other.
            effect = rng.uniform(0.04, 0.10) if rng.random() < 0.7 else -rng.uniform(0.01, 0.04)
            pairs[(i, j)] = pairs.get((i, j), 0.0) + float(effect)
    critical = []
    if profile == "collapse":
        critical = list(range(n_layers - int(rng.integers(1, 4)), n_layers))
    accuracy: dict[str, float] = {}
    n_params: dict[str, float] = {}
    for value in range(1, 2**n_layers):
        bits = [(value >> i) & 1 for i in range(n_layers)]
        mask = "".join(map(str, bits))
        dropped = [1 - b for b in bits]
        damage = sum(w[i] for i in range(n_layers) if dropped[i])
        damage += sum(c[i] for i in range(n_layers - 1) if dropped[i] and dropped[i + 1])
        damage += sum(e for (i, j), e in pairs.items() if dropped[i] and dropped[j])
        damage = max(damage, 0.0)
        if critical and not all(bits[i] for i in critical):
            damage += 3.0  # Collapse towards the majority class.
        acc = 0.5 + (full_accuracy - 0.5) * math.exp(-damage) + _noise(instance, mask, 0.004)
        accuracy[mask] = float(min(max(acc, 0.0), 1.0))
        n_params[mask] = BERT_BASE_FIXED + BERT_BASE_PER_LAYER * sum(bits)
    return Landscape(f"synthetic-{profile}-{instance}", n_layers, accuracy, n_params)


def table_landscape(
    path: str | Path, name: str | None = None, min_accuracy: float = 0.75, seed: int | None = None
) -> Landscape:
    """A landscape from a measured CSV (columns ``mask``, ``accuracy``, ``n_params``; rows with the
    same mask, e.g. different seeds, are averaged; ``seed`` keeps only that seed's rows). Masks missing from the table are an error when
    a sampler proposes them, so the table must cover every non-empty mask."""
    acc: dict[str, list[float]] = defaultdict(list)
    params: dict[str, float] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if seed is not None and int(row["seed"]) != seed:
                continue
            mask = row["mask"].strip()
            acc[mask].append(float(row["accuracy"]))
            params[mask] = float(row["n_params"])
    n_layers = {len(m) for m in acc}
    if len(n_layers) != 1:
        raise ValueError(f"{path}: masks of different lengths {sorted(n_layers)}")
    n = n_layers.pop()
    missing = [
        format(v, f"0{n}b")[::-1] for v in range(1, 2**n) if format(v, f"0{n}b")[::-1] not in acc
    ]
    if missing:
        raise ValueError(f"{path}: {len(missing)} masks missing, e.g. {missing[:3]}")
    return Landscape(
        name or Path(path).stem,
        n,
        {m: float(np.mean(v)) for m, v in acc.items()},
        params,
        min_accuracy,
    )
