"""The quickstart's fitness ends with a smaller model, on the 63 MiniLM masks measured on IMDB."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from alphanas_optuna.config import load_study_config
from alphanas_optuna.objective import FitnessConfig

ROOT = Path(__file__).resolve().parents[1]
# One evaluation's spread between training seeds (BENCHMARKS.md, "Real data"): about 2.8 points.
SEED_NOISE = 0.028


def mean_measurements() -> dict[str, tuple[float, int]]:
    """Mask -> (accuracy averaged over its seeds, N) from benchmarks/data/minilm-l6-imdb.csv."""
    accuracies: dict[str, list[float]] = defaultdict(list)
    params: dict[str, int] = {}
    with open(ROOT / "benchmarks" / "data" / "minilm-l6-imdb.csv", newline="") as f:
        for row in csv.DictReader(f):
            accuracies[row["mask"]].append(float(row["accuracy"]))
            params[row["mask"]] = int(row["n_params"])
    assert len(accuracies) == 63
    return {m: (sum(a) / len(a), params[m]) for m, a in accuracies.items()}


def ranked(fitness: FitnessConfig) -> list[tuple[float, str]]:
    table = mean_measurements()
    return sorted(((fitness.quality(a, n), m) for m, (a, n) in table.items()), reverse=True)


def test_the_quickstart_answer_is_a_smaller_model_by_more_than_the_noise() -> None:
    fitness = load_study_config(ROOT / "studies" / "quickstart.toml").fitness
    order = ranked(fitness)
    best_q, best = order[0]
    full_q = dict((m, q) for q, m in order)["111111"]
    assert best.count("1") < 6
    # Not a tiny margin: the full model is behind the best mask by more than one evaluation's
    # noise, so a noise-aware choice of the answer still ends with a smaller model.
    assert best_q - full_q > 2 * SEED_NOISE
    # ... and behind the best mask at every depth from 2 to 5 layers.
    for depth in range(2, 6):
        q_depth = max(q for q, m in order if m.count("1") == depth)
        assert q_depth > full_q, depth


def test_at_the_package_default_the_full_minilm_is_the_answer() -> None:
    """Why the quickstart sets lambda: at 0.002 a MiniLM layer is never worth dropping."""
    assert ranked(FitnessConfig())[0][1] == "111111"
