"""Does distillation from the full model lift small masks? Paired by seed, on all-MiniLM-L6-v2 and
IMDB, at the final budget of `studies/minilm-imdb-evidence.toml` (`[report]`: 2,000 training
reviews, 5,000 test reviews).

For each depth k: the best mask of the measured 63-mask table at that depth (highest mean
validation accuracy in `benchmarks/data/minilm-l6-imdb.csv`) and the keep-bottom-k rule, each
fine-tuned with and without ``[training] distill`` at the same seed, for several seeds. The teacher
is the full model fine-tuned at the same budget at seed 0, once (its cost is reported apart); the
students' ``train_seconds`` are their own training alone.

Rows go to `benchmarks/data/distill-minilm-imdb.csv` (columns
``k,mask,seed,distill,test_accuracy,train_seconds``)::

    python benchmarks/distill.py run --data ../shared/data/imdb --seeds 0 1 2 3 4 --depths 2 3 4
    python benchmarks/distill.py sweep --data ../shared/data/imdb      # alpha x T, validation only
    python benchmarks/distill.py search --data ../shared/data/imdb     # the quickstart, with and without
    python benchmarks/distill.py timing --data ../shared/data/imdb     # student seconds, paired
    python benchmarks/distill.py collect
    # a given teacher (the full model fine-tuned on 3x the reviews) against the default one:
    python benchmarks/distill.py given --data ../shared/data/imdb --k 2 --seeds 0 1 2 3

An interrupted run resumes: rows already in the CSV are not run again.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from search_vs_rules import rule_masks  # noqa: E402

from alphanas_optuna.config import StudyConfig, load_study_config  # noqa: E402
from alphanas_optuna.distill import DistillConfig  # noqa: E402
from alphanas_optuna.intervals import t_interval  # noqa: E402

STUDY = ROOT / "studies" / "minilm-imdb-evidence.toml"
TABLE = ROOT / "benchmarks" / "data" / "minilm-l6-imdb.csv"
OUT_CSV = ROOT / "benchmarks" / "data" / "distill-minilm-imdb.csv"
SWEEP_JSON = ROOT / "runs" / "distill-sweep.json"
GIVEN_CSV = ROOT / "benchmarks" / "data" / "distill-given-teacher-minilm-imdb.csv"
FIELDS = ["k", "mask", "seed", "distill", "test_accuracy", "train_seconds"]
DISTILL = DistillConfig(alpha=0.5, temperature=2.0)
TEACHER_SEED = 0


def best_masks(depths: list[int]) -> dict[int, str]:
    """Per depth, the mask with the best mean validation accuracy of the measured table."""
    by_mask: dict[str, list[float]] = defaultdict(list)
    with TABLE.open() as f:
        for r in csv.DictReader(f):
            by_mask[r["mask"]].append(float(r["accuracy"]))
    means = {m: sum(v) / len(v) for m, v in by_mask.items()}
    return {k: max((m for m in means if m.count("1") == k), key=means.get) for k in depths}


def plan(depths: list[int], seeds: list[int]) -> list[tuple[int, str, int, int]]:
    best = best_masks(depths)
    runs = []
    for seed in seeds:  # seeds outermost: a partial run still gives complete pairs
        for k in depths:
            masks = [best[k]] + [m for m in [rule_masks(6, k)["bottom"]] if m != best[k]]
            for mask in masks:
                for distill in (0, 1):
                    runs.append((k, mask, seed, distill))
    return runs


def _setup(data: str | None, splits: tuple[str, ...]):
    import torch

    from alphanas_optuna.final import final_training_config, report_data_config
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.task import load_task

    torch.set_num_threads(1)
    config: StudyConfig = load_study_config(STUDY)
    if data:
        config = config.replace(data=dataclasses.replace(config.data, source=data))
    training = final_training_config(config)
    task = load_task(
        config.model.name,
        report_data_config(config),
        num_labels=config.model.num_labels,
        seed=TEACHER_SEED,
        splits=splits,
    )
    return config, training, task, get_accelerator(config.training.mixed_precision)


def _student(
    config: StudyConfig, task, mask: str, cfg, accelerator, *, out, writer, row: list, label: str
) -> None:
    """Fine-tune ``mask`` with ``cfg`` (the default teacher at seed TEACHER_SEED when ``cfg``
    distils) and test it; append ``row`` + its test accuracy and seconds to the CSV (``writer``
    on the open file ``out``, flushed, so that a stopped run keeps what it measured) and print
    ``label`` with the figures."""
    from alphanas_optuna.final import evaluate_test, final_fine_tune

    model, result = final_fine_tune(
        task.model,
        mask,
        task.tokenized["train"],
        task.tokenized["validation"],
        cfg,
        accelerator,
        pad_token_id=task.pad_token_id,
        teacher_seed=TEACHER_SEED,
        tokenizer=task.tokenizer,
    )
    test = evaluate_test(
        model,
        task.tokenized["test"],
        accelerator,
        pad_token_id=task.pad_token_id,
        batch_size=config.training.eval_batch_size,
    )
    writer.writerow([*row, f"{test.accuracy:.5f}", f"{result.seconds:.1f}"])
    out.flush()
    print(
        f"{label}: test {test.accuracy:.4f} "
        f"(validation {result.accuracy:.4f}, {result.seconds:.0f} s)",
        flush=True,
    )


def phase_run(data: str | None, depths: list[int], seeds: list[int]) -> None:
    from alphanas_optuna.distill import teacher_for

    done = set()
    if OUT_CSV.exists():
        with OUT_CSV.open() as f:
            done = {
                (int(r["k"]), r["mask"], int(r["seed"]), int(r["distill"]))
                for r in csv.DictReader(f)
            }
    todo = [r for r in plan(depths, seeds) if r not in done]
    print(f"{len(todo)} runs to do", flush=True)
    if not todo:
        return
    config, training, task, accelerator = _setup(data, ("train", "validation", "test"))
    train, validation = task.tokenized["train"], task.tokenized["validation"]
    start = time.perf_counter()
    teacher = teacher_for(
        task.model,
        train,
        validation,
        training,
        accelerator,
        pad_token_id=task.pad_token_id,
        seed=TEACHER_SEED,
    )
    info = {
        "teacher_validation_accuracy": teacher.accuracy,
        "teacher_seconds": teacher.seconds,
        "cached": teacher.cached,
        "this_process_seconds": time.perf_counter() - start,
    }
    print(f"teacher: {info}", flush=True)
    (ROOT / "runs").mkdir(exist_ok=True)
    (ROOT / "runs" / "distill-teacher.json").write_text(json.dumps(info, indent=1))
    new = not OUT_CSV.exists()
    with OUT_CSV.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(FIELDS)
        for k, mask, seed, distill in todo:
            cfg = dataclasses.replace(training, seed=seed, distill=DISTILL if distill else None)
            _student(
                config,
                task,
                mask,
                cfg,
                accelerator,
                out=f,
                writer=writer,
                row=[k, mask, seed, distill],
                label=f"k={k} {mask} seed {seed} distill {distill}",
            )


def phase_sweep(data: str | None, k: int, seeds: list[int]) -> None:
    """alpha x temperature for the best k-layer mask, on the validation split only."""
    from alphanas_optuna.final import final_fine_tune

    results = json.loads(SWEEP_JSON.read_text()) if SWEEP_JSON.exists() else {}
    config, training, task, accelerator = _setup(data, ("train", "validation"))
    mask = best_masks([k])[k]
    grid = [(0.0, 1.0)] + [(a, t) for a in (0.5, 0.9) for t in (2.0, 4.0)]
    for seed in seeds:
        for alpha, temperature in grid:
            key = f"{mask} seed={seed} alpha={alpha} T={temperature}"
            if key in results:
                continue
            distill = DistillConfig(alpha, temperature) if alpha > 0 else None
            cfg = dataclasses.replace(training, seed=seed, distill=distill)
            _, result = final_fine_tune(
                task.model,
                mask,
                task.tokenized["train"],
                task.tokenized["validation"],
                cfg,
                accelerator,
                pad_token_id=task.pad_token_id,
                teacher_seed=TEACHER_SEED,
            )
            results[key] = result.accuracy
            SWEEP_JSON.write_text(json.dumps(results, indent=1))
            print(f"{key}: validation {result.accuracy:.4f}", flush=True)


def phase_search(data: str | None, seed: int) -> None:
    """`studies/quickstart.toml` searched with and without distillation (same sampler seed): does
    distillation change the study's answer?"""
    import optuna

    from alphanas_optuna.answer import winner
    from alphanas_optuna.search import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = load_study_config(ROOT / "studies" / "quickstart.toml")
    if data:
        base = base.replace(data=dataclasses.replace(base.data, source=data))
    base = base.replace(sampler={**base.sampler, "seed": seed})
    (ROOT / "runs").mkdir(exist_ok=True)
    answers = {}
    for name, distill in (("plain", None), ("distilled", DISTILL)):
        config = base.replace(training=dataclasses.replace(base.training, distill=distill))
        study_name = f"distill-search-{name}-{seed}"
        storage = f"sqlite:///{ROOT / 'runs' / (study_name + '.db')}"
        earlier = ROOT / "runs" / f"pruning-default-{seed}.db"
        if distill is None and earlier.exists():
            # benchmarks/pruning.py's default arm is this very search (its confirmation runs
            # are left out below).
            study_name, storage = f"pruning-default-{seed}", f"sqlite:///{earlier}"
        search(config, storage=storage, study_name=study_name, progress=False)
        study = optuna.load_study(study_name=study_name, storage=storage)
        w = winner(study, use_confirmations=False)
        seconds = sum(
            float(t.user_attrs.get("train_seconds") or 0)
            for t in study.trials
            if not t.user_attrs.get("confirmation")
        )
        answers[name] = {
            "mask": w.mask,
            "quality": w.quality,
            "stderr": w.stderr,
            "accuracy": w.accuracy,
            "n_evaluations": w.n_evaluations,
            "train_seconds": seconds,
        }
        print(f"{name}: {answers[name]}", flush=True)
    (ROOT / "runs" / f"distill-search-{seed}.json").write_text(json.dumps(answers, indent=1))


def phase_timing(data: str | None, k: int, reps: int, steps: int) -> None:
    """Seconds of a student's training with and without distillation, alternated back to back
    (same mask, seed and batches), so that the machine's load hits both alike."""
    from alphanas_optuna.final import final_fine_tune

    config, training, task, accelerator = _setup(data, ("train", "validation"))
    mask = best_masks([k])[k]
    seconds: dict[int, list[float]] = {0: [], 1: []}
    for rep in range(reps):
        for distill in (0, 1) if rep % 2 == 0 else (1, 0):
            cfg = dataclasses.replace(
                training, max_steps=steps, distill=DISTILL if distill else None
            )
            _, result = final_fine_tune(
                task.model,
                mask,
                task.tokenized["train"],
                task.tokenized["validation"],
                cfg,
                accelerator,
                pad_token_id=task.pad_token_id,
                teacher_seed=TEACHER_SEED,
            )
            seconds[distill].append(result.seconds)
            print(f"rep {rep} distill {distill}: {result.seconds:.1f} s", flush=True)
    ratios = [b / a for a, b in zip(seconds[0], seconds[1], strict=True)]
    mean, low, high = t_interval(ratios)
    print(
        f"{mask}, {steps} steps, {reps} pairs: time ratio with/without {mean:.3f} [{low:.3f}, {high:.3f}]"
    )


def phase_given(data: str | None, k: int, seeds: list[int], teacher_reviews: int) -> None:
    """A given teacher (``[training.distill] teacher``): the full model fine-tuned at the same
    settings on ``teacher_reviews`` training reviews instead of the students' 2,000, saved as a
    checkpoint; the best k-layer mask learns from it and from the default teacher (the full model
    at the students' budget), paired by seed, tested on the test split."""
    from alphanas_optuna.final import final_fine_tune, report_data_config
    from alphanas_optuna.task import load_task

    config, training, task, accelerator = _setup(data, ("train", "validation", "test"))
    folder = ROOT / "runs" / f"teacher-minilm-{teacher_reviews}"
    if not (folder / "config.json").is_file():
        bigger = dataclasses.replace(report_data_config(config), train_size=teacher_reviews)
        big = load_task(
            config.model.name, bigger, num_labels=config.model.num_labels, seed=TEACHER_SEED
        )
        settings = dataclasses.replace(training, seed=TEACHER_SEED, distill=None)
        model, result = final_fine_tune(
            big.model,
            "1" * len(best_masks([k])[k]),
            big.tokenized["train"],
            big.tokenized["validation"],
            settings,
            accelerator,
            pad_token_id=big.pad_token_id,
        )
        print(
            f"given teacher: {teacher_reviews} reviews, validation {result.accuracy:.4f}, "
            f"{result.seconds:.0f} s",
            flush=True,
        )
        model.save_pretrained(folder)
        big.tokenizer.save_pretrained(folder)
        del model, big
    mask = best_masks([k])[k]
    done = set()
    if GIVEN_CSV.exists():
        with GIVEN_CSV.open() as f:
            done = {(r["mask"], int(r["seed"]), r["teacher"]) for r in csv.DictReader(f)}
    new = not GIVEN_CSV.exists()
    with GIVEN_CSV.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["k", "mask", "seed", "teacher", "test_accuracy", "train_seconds"])
        for seed in seeds:
            for label, distill in (
                ("full model", DISTILL),
                (f"given {teacher_reviews}", dataclasses.replace(DISTILL, teacher=str(folder))),
            ):
                if (mask, seed, label) in done:
                    continue
                cfg = dataclasses.replace(training, seed=seed, distill=distill)
                _student(
                    config,
                    task,
                    mask,
                    cfg,
                    accelerator,
                    out=f,
                    writer=writer,
                    row=[k, mask, seed, label],
                    label=f"{mask} seed {seed} teacher {label}",
                )


def phase_collect() -> None:
    with OUT_CSV.open() as f:
        rows = list(csv.DictReader(f))
    runs = {(int(r["k"]), r["mask"], int(r["seed"]), int(r["distill"])): r for r in rows}
    print(
        "| k | mask | pairs | without | with distillation | paired gain (points) | 95% CI | time ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|:---:|---:|")
    for k, mask in sorted({(k, m) for k, m, _, _ in runs}):
        seeds = sorted(s for kk, m, s, d in runs if (kk, m, d) == (k, mask, 0))
        pairs = [s for s in seeds if (k, mask, s, 1) in runs]
        if not pairs:
            continue
        off = [float(runs[(k, mask, s, 0)]["test_accuracy"]) for s in pairs]
        on = [float(runs[(k, mask, s, 1)]["test_accuracy"]) for s in pairs]
        gain = t_interval([100 * (b - a) for a, b in zip(off, on, strict=True)])
        t_off = sum(float(runs[(k, mask, s, 0)]["train_seconds"]) for s in pairs)
        t_on = sum(float(runs[(k, mask, s, 1)]["train_seconds"]) for s in pairs)
        print(
            f"| {k} | `{mask}` | {len(pairs)} | {sum(off) / len(off):.4f} | {sum(on) / len(on):.4f} "
            f"| {gain[0]:+.2f} | [{gain[1]:+.2f}, {gain[2]:+.2f}] | {t_on / t_off:.2f}x |"
        )
    print("\nPer depth, both masks' pairs pooled:\n")
    print("| k | pairs | paired gain (points) | 95% CI | time ratio (sum with / sum without) |")
    print("|---:|---:|---:|:---:|---:|")
    for k in sorted({k for k, _, _, _ in runs}):
        keys = [(m, s) for kk, m, s, d in runs if kk == k and d == 0 and (k, m, s, 1) in runs]
        if not keys:
            continue
        gains = [
            100
            * (
                float(runs[(k, m, s, 1)]["test_accuracy"])
                - float(runs[(k, m, s, 0)]["test_accuracy"])
            )
            for m, s in keys
        ]
        mean, low, high = t_interval(gains)
        t_on = sum(float(runs[(k, m, s, 1)]["train_seconds"]) for m, s in keys)
        t_off = sum(float(runs[(k, m, s, 0)]["train_seconds"]) for m, s in keys)
        print(
            f"| {k} | {len(keys)} | {mean:+.2f} | [{low:+.2f}, {high:+.2f}] | {t_on / t_off:.2f}x |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=["run", "sweep", "search", "timing", "given", "collect"])
    parser.add_argument(
        "--teacher-reviews", type=int, default=6000, help="training reviews of the given teacher"
    )
    parser.add_argument("--data", default=None, help="local IMDB folder (train/test parquet)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--depths", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument("--k", type=int, default=2, help="depth of the sweep's mask")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (phase search)")
    args = parser.parse_args(argv)
    if args.phase == "run":
        phase_run(args.data, args.depths, args.seeds)
    elif args.phase == "sweep":
        phase_sweep(args.data, args.k, args.seeds)
    elif args.phase == "search":
        phase_search(args.data, args.seed)
    elif args.phase == "timing":
        phase_timing(args.data, args.k, reps=6, steps=60)
    elif args.phase == "given":
        phase_given(args.data, args.k, args.seeds, args.teacher_reviews)
    else:
        phase_collect()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
