"""Run AlphaNASSampler trials against a shared storage (helper of tests/test_sampler.py).

Usage: python tests/sampler_worker.py STORAGE_URL STUDY_NAME N_TRIALS SEED [plain]

``plain``: the plain seed algorithm (``surrogate=False``).
"""

from __future__ import annotations

import sys

import optuna

from alphanas_optuna import AlphaNASSampler, suggest_mask

WEIGHTS = (0.9, -0.4, 0.7, 0.3, -0.2, 0.5, 0.1, -0.6, 0.8, 0.2)


def objective(trial: optuna.Trial, n_layers: int) -> float:
    mask = suggest_mask(trial, n_layers)
    if sum(mask) == n_layers:  # The full mask is "too big".
        raise optuna.TrialPruned()
    return sum(w * b for w, b in zip(WEIGHTS, mask, strict=False))


def main() -> None:
    url, name, n_trials, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    plain = len(sys.argv) > 5 and sys.argv[5] == "plain"
    n_layers = 8
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("journal:"):
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(url[len("journal:") :])
        )
    else:
        storage = url
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="maximize",
        sampler=AlphaNASSampler(seed=seed, surrogate=not plain),
        load_if_exists=True,
    )
    study.optimize(lambda t: objective(t, n_layers), n_trials=n_trials)


if __name__ == "__main__":
    main()
