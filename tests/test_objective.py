from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from tiny_models import tiny_model, tiny_tokenizer

from alphanas_optuna import AlphaNASObjective, FitnessConfig, count_parameters, drop_layers
from alphanas_optuna.data import TokenizedSplit, make_dataloader, tokenize_split
from alphanas_optuna.objective import USER_ATTRS, check_directions
from alphanas_optuna.training import TrainingConfig, fine_tune

POS = ["great movie", "loved it", "excellent acting", "wonderful story", "best film", "really fun"]
NEG = ["awful plot", "hated it", "terrible acting", "boring story", "worst film", "a waste"]


def _toy(n: int, seed: int) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    texts = []
    for y in labels:
        words = POS if y else NEG
        texts.append(" ".join(rng.choice(words, size=rng.integers(1, 4))) + " the movie")
    return tokenize_split(texts, labels, tiny_tokenizer(), 32, cache_dir="")


TRAIN = _toy(96, 0)
VALID = _toy(48, 1)
FAST = TrainingConfig(
    epochs=4, learning_rate=1e-2, batch_size=16, warmup_ratio=0.0, seed=0, freeze_embeddings=False
)


def _objective(n_layers: int = 3, **kwargs) -> AlphaNASObjective:
    torch.manual_seed(0)
    model = tiny_model("bert", n_layers=n_layers)
    kwargs.setdefault("training", FAST)
    kwargs.setdefault("fitness", FitnessConfig(lambda_per_million=1000.0, min_accuracy=0.75))
    return AlphaNASObjective(model=model, pad_token_id=0, train=TRAIN, validation=VALID, **kwargs)


def _study(directions: list[str] | None = None, **kwargs) -> optuna.Study:
    if directions is None:
        directions = ["maximize"]
    return optuna.create_study(
        directions=directions, sampler=optuna.samplers.RandomSampler(seed=0), **kwargs
    )


def _without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every dropout probability at 0, so two training runs can match exactly."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _mask_params(mask: str) -> dict[str, int]:
    return {f"layer_{i:02d}": int(b) for i, b in enumerate(mask)}


def test_fine_tune_learns_the_toy_task_and_reports_each_evaluation() -> None:
    from alphanas_optuna.objective import get_accelerator

    model = tiny_model("bert", n_layers=2)
    seen: list[tuple[int, float]] = []
    cfg = dataclasses.replace(FAST, evaluations=4)
    train_dl = make_dataloader(TRAIN, batch_size=16, pad_token_id=0, shuffle=True)
    eval_dl = make_dataloader(VALID, batch_size=64, pad_token_id=0, shuffle=False)
    result = fine_tune(
        model,
        train_dl,
        eval_dl,
        cfg,
        get_accelerator(),
        on_evaluate=lambda s, a: seen.append((s, a)),
    )
    assert result.steps == 24  # 96 / 16 * 4 epochs
    assert [s for s, _ in seen] == [6, 12, 18, 24]
    assert result.history == seen
    assert result.accuracy == seen[-1][1]
    assert result.accuracy >= 0.9
    assert result.train_examples_seen == 96 * 4


def test_freeze_embeddings_keeps_the_word_embeddings_and_trains_the_rest() -> None:
    from alphanas_optuna.objective import get_accelerator

    model = tiny_model("bert", n_layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = dataclasses.replace(FAST, epochs=1, freeze_embeddings=True)
    train_dl = make_dataloader(TRAIN, batch_size=16, pad_token_id=0, shuffle=True)
    eval_dl = make_dataloader(VALID, batch_size=64, pad_token_id=0, shuffle=False)
    fine_tune(model, train_dl, eval_dl, cfg, get_accelerator())
    after = model.state_dict()
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(before[word], after[word])
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "bert.encoder.layer.0.attention.self.query.weight" in changed
    assert "classifier.weight" in changed
    assert "bert.embeddings.position_embeddings.weight" in changed


@pytest.mark.parametrize("batching", ["length-split", "length-grouped", "random"])
def test_batching_reaches_the_training_batches(
    monkeypatch: pytest.MonkeyPatch, batching: str
) -> None:
    import alphanas_optuna.training as training

    parts_per_batch: list[int] = []
    spreads: list[int] = []
    original = training.fine_tune

    def recording_fine_tune(model, train_loader, *args, **kwargs):
        for batch in train_loader:
            parts = batch if isinstance(batch, list) else [batch]
            parts_per_batch.append(len(parts) if isinstance(batch, list) else 0)
            lengths = torch.cat([p["attention_mask"].sum(1) for p in parts])
            spreads.append(int(lengths.max() - lengths.min()))
        return original(model, train_loader, *args, **kwargs)

    monkeypatch.setattr(training, "fine_tune", recording_fine_tune)
    cfg = dataclasses.replace(FAST, epochs=1, batching=batching, micro_batch_tokens=40)
    study = _study()
    study.enqueue_trial(_mask_params("111"))
    fitness = FitnessConfig(min_accuracy=0.0)
    study.optimize(_objective(training=cfg, fitness=fitness), n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    # The toy reviews have 4 to 12 tokens: random batches of 16 mix them, grouped ones barely;
    # split ones are the random batches in parts of at most 40 tokens (16 x 12 = 192 > 40).
    assert (sum(spreads) / len(spreads) <= 2) is (batching == "length-grouped"), spreads
    if batching == "length-split":
        assert min(parts_per_batch) >= 2, parts_per_batch
    else:
        assert set(parts_per_batch) == {0}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_length_split_trains_exactly_like_random_batches(accumulation: int) -> None:
    """Micro-batches of a random batch, weighted by their share, give the batch's gradient: the
    same weights after training as with the unsplit random batches (dropout off)."""
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.training import make_loaders

    def trained(batching: str) -> dict[str, torch.Tensor]:
        model = _without_dropout(tiny_model("bert", n_layers=2))
        cfg = TrainingConfig(
            max_steps=6,
            batch_size=16,
            learning_rate=1e-3,
            gradient_accumulation_steps=accumulation,
            batching=batching,
            micro_batch_tokens=24,
            freeze_embeddings=False,
            seed=1,
        )
        if batching == "length-split":  # really split (a fresh loader: each pass reshuffles)
            train_dl, _ = make_loaders(TRAIN, VALID, cfg, pad_token_id=0)
            assert all(len(parts) >= 4 for parts in train_dl)
        train_dl, eval_dl = make_loaders(TRAIN, VALID, cfg, pad_token_id=0)
        result = fine_tune(model, train_dl, eval_dl, cfg, get_accelerator())
        assert result.steps == 6 and result.train_examples_seen == 6 * accumulation * 16
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    before = tiny_model("bert", n_layers=2).state_dict()
    split, random = trained("length-split"), trained("random")
    grouped = trained("length-grouped")
    moved = max(float((random[k] - before[k]).abs().max()) for k in random)
    assert moved > 1e-3  # training changed the weights
    for k in random:
        torch.testing.assert_close(split[k], random[k], rtol=1e-4, atol=1e-5, msg=k)
    # Other batches (length-grouped) give other weights: the comparison above can fail.
    assert any(not torch.allclose(grouped[k], random[k], atol=1e-4) for k in random)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_length_split_gradients_equal_the_whole_batch_gradients(
    monkeypatch: pytest.MonkeyPatch, accumulation: int
) -> None:
    """The gradient each optimizer step sees (batches of 20 over 96 examples: a short last batch),
    not only the weights after AdamW, which hides a common scale."""
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.training import make_loaders

    def gradients(batching: str) -> list[dict[str, torch.Tensor]]:
        captured: list[dict[str, torch.Tensor]] = []
        original = torch.optim.AdamW.step
        model = tiny_model("bert", n_layers=2)
        names = {id(p): name for name, p in model.named_parameters()}

        def capturing_step(self, *args, **kwargs):
            grads = {names[id(p)]: p.grad for g in self.param_groups for p in g["params"]}
            captured.append({n: g.clone() for n, g in grads.items() if g is not None})
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, "step", capturing_step)
        _without_dropout(model)
        cfg = TrainingConfig(
            epochs=1,
            batch_size=20,
            learning_rate=1e-3,
            gradient_accumulation_steps=accumulation,
            max_grad_norm=0.0,
            batching=batching,
            micro_batch_tokens=24,
            freeze_embeddings=False,
            seed=2,
        )
        train_dl, eval_dl = make_loaders(TRAIN, VALID, cfg, pad_token_id=0)
        fine_tune(model, train_dl, eval_dl, cfg, get_accelerator())
        monkeypatch.setattr(torch.optim.AdamW, "step", original)
        return captured

    whole, split = gradients("random"), gradients("length-split")
    assert len(whole) == len(split) == math.ceil(5 / accumulation)
    # The first step's gradient by hand: the mean over its batches of each batch's mean loss.
    model = _without_dropout(tiny_model("bert", n_layers=2)).train()
    loader = make_dataloader(
        TRAIN, batch_size=20, pad_token_id=0, shuffle=True, seed=2, batching="random"
    )
    first = [b for _, b in zip(range(accumulation), loader)]
    (sum(model(**b).loss for b in first) / accumulation).backward()
    by_hand = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert by_hand.keys() == whole[0].keys()
    for name, grad in by_hand.items():
        torch.testing.assert_close(whole[0][name], grad, rtol=1e-4, atol=1e-7, msg=name)
    for step_whole, step_split in zip(whole, split):
        assert step_whole.keys() == step_split.keys() and step_whole
        for name, grad in step_whole.items():
            torch.testing.assert_close(step_split[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_fine_tune_refuses_an_accelerator_of_several_processes() -> None:
    class TwoProcesses:
        num_processes = 2

    train_dl = make_dataloader(TRAIN, batch_size=16, pad_token_id=0, shuffle=True)
    with pytest.raises(RuntimeError, match="one worker per GPU"):
        fine_tune(tiny_model("bert", n_layers=1), train_dl, train_dl, FAST, TwoProcesses())


def test_fine_tune_matches_the_trainer_given_the_same_head_and_batches(tmp_path) -> None:
    """The loop is the Trainer's optimisation: same head, same random batches, no dropout ->
    the same weights (AdamW with decoupled decay, linear warm-up/decay, clipping), whether the
    batches run whole or split by length."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from alphanas_optuna.data import LengthGroupedBatches
    from alphanas_optuna.objective import get_accelerator
    from alphanas_optuna.training import make_loaders

    cfg = TrainingConfig(
        epochs=2,
        batch_size=16,
        learning_rate=1e-3,
        warmup_ratio=0.25,
        weight_decay=0.1,
        max_grad_norm=0.5,
        freeze_embeddings=False,
        micro_batch_tokens=24,
        seed=4,
    )

    def fresh() -> torch.nn.Module:
        return _without_dropout(tiny_model("bert", n_layers=2))

    class SameBatches(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return _EpochOrders(
                LengthGroupedBatches(TRAIN.lengths, 16, shuffle=True, seed=4, mega_batch=1)
            )

    reference = fresh()
    steps = cfg.total_steps(len(TRAIN) // 16)
    args = TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=16,
        warmup_steps=int(cfg.warmup_ratio * steps),
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=4,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    rows = [
        {"input_ids": ids.tolist(), "labels": int(y)}
        for ids, y in zip(TRAIN.input_ids, TRAIN.labels)
    ]
    SameBatches(
        model=reference,
        args=args,
        train_dataset=rows,
        data_collator=DataCollatorWithPadding(tiny_tokenizer()),
    ).train()
    expected = reference.state_dict()

    for batching in ("random", "length-split"):
        model = fresh()
        train_dl, eval_dl = make_loaders(
            TRAIN, VALID, dataclasses.replace(cfg, batching=batching), pad_token_id=0
        )
        result = fine_tune(model, train_dl, eval_dl, cfg, get_accelerator())
        assert result.steps == steps == 12
        got = model.state_dict()
        initial = fresh().state_dict()
        moved = max(float((expected[k] - initial[k]).abs().max()) for k in got)
        assert moved > 3e-3
        for k in expected:
            torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=2e-5, msg=k)


class _EpochOrders(torch.utils.data.Sampler[int]):
    """Each pass yields the next epoch of a batch sampler, flattened."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches.lengths)

    def __iter__(self):
        for batch in self.batches:
            yield from batch


def test_max_steps_and_gradient_accumulation_count_optimizer_steps(step_counter) -> None:
    from alphanas_optuna.objective import get_accelerator

    cfg = TrainingConfig(
        max_steps=5, gradient_accumulation_steps=2, batch_size=8, learning_rate=1e-3
    )
    train_dl = make_dataloader(TRAIN, batch_size=8, pad_token_id=0, shuffle=True)
    eval_dl = make_dataloader(VALID, batch_size=64, pad_token_id=0, shuffle=False)
    result = fine_tune(tiny_model("bert", n_layers=1), train_dl, eval_dl, cfg, get_accelerator())
    assert result.steps == 5 == len(step_counter)
    assert result.train_examples_seen == 5 * 2 * 8


def test_feasible_trial_returns_q_and_stores_every_attribute() -> None:
    objective = _objective(fitness=FitnessConfig(lambda_per_million=0.5, min_accuracy=0.6))
    study = _study()
    study.enqueue_trial(_mask_params("101"))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE
    ua = t.user_attrs
    assert set(USER_ATTRS) <= set(ua)
    assert ua["mask"] == "101" and ua["n_layers"] == 2 and ua["feasible"] is True
    expected_n = count_parameters(drop_layers(objective.model, (1, 0, 1)))
    assert ua["n_params"] == expected_n
    assert ua["accuracy"] >= 0.6
    assert t.value == pytest.approx(ua["accuracy"] - 0.5 * expected_n / 1e6)
    assert ua["quality"] == pytest.approx(t.value)
    assert ua["infeasible_reason"] is None and ua["train_seconds"] > 0
    # Its validation pass is timed: the sub-model's measured inference time.
    assert 0 < ua["eval_seconds"] < ua["train_seconds"]
    # The base model is untouched by the trial.
    assert objective.model.config.num_hidden_layers == 3


def test_too_many_parameters_is_pruned_before_any_training(step_counter) -> None:
    objective = _objective()
    n_two = objective.n_params((1, 1, 0))
    objective.fitness = FitnessConfig(max_params=n_two - 1)
    study = _study()
    study.enqueue_trial(_mask_params("110"))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED
    assert step_counter == []
    assert t.user_attrs["feasible"] is False
    assert t.user_attrs["n_params"] == n_two
    assert t.user_attrs["accuracy"] is None and t.user_attrs["train_seconds"] == 0.0
    assert "max_params" in t.user_attrs["infeasible_reason"]


def test_low_accuracy_is_pruned_with_its_accuracy_recorded() -> None:
    objective = _objective(fitness=FitnessConfig(min_accuracy=1.0))
    objective.training = TrainingConfig(max_steps=1, learning_rate=1e-6, batch_size=16)
    study = _study()
    study.enqueue_trial(_mask_params("011"))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    ua = t.user_attrs
    assert t.state == TrialState.PRUNED
    assert ua["accuracy"] is not None and ua["accuracy"] < 1.0
    assert (
        ua["infeasible_reason"].startswith("accuracy ")
        and "min_accuracy 1.0" in ua["infeasible_reason"]
    )
    assert ua["quality"] == pytest.approx(ua["accuracy"] - 0.002 * ua["n_params"] / 1e6)


def test_same_mask_reuses_the_earlier_result_without_training(step_counter) -> None:
    objective = _objective(fitness=FitnessConfig(lambda_per_million=0.1, min_accuracy=0.5))
    study = _study()
    study.enqueue_trial(_mask_params("110"))
    study.enqueue_trial(_mask_params("110"))
    study.optimize(objective, n_trials=1)
    steps_first = len(step_counter)
    assert steps_first == 24
    study.optimize(objective, n_trials=1)
    first, second = study.trials
    assert len(step_counter) == steps_first  # no training the second time
    assert second.user_attrs["reused_from"] == first.number
    assert second.user_attrs["accuracy"] == first.user_attrs["accuracy"]
    assert second.value == first.value and second.state == first.state
    assert second.user_attrs["train_seconds"] == 0.0
    assert second.user_attrs["eval_seconds"] == first.user_attrs["eval_seconds"] > 0

    # Other settings (here: another learning rate) are another fidelity: no reuse.
    other = _objective(
        training=TrainingConfig(epochs=1, learning_rate=1e-3, batch_size=16),
        fitness=FitnessConfig(lambda_per_million=0.1, min_accuracy=0.0),
    )
    study.enqueue_trial(_mask_params("110"))
    study.optimize(other, n_trials=1)
    assert "reused_from" not in study.trials[2].user_attrs
    assert len(step_counter) > steps_first

    # Changing the settings of the same objective is another fidelity too.
    steps_before = len(step_counter)
    objective.training = dataclasses.replace(objective.training, learning_rate=5e-3)
    study.enqueue_trial(_mask_params("110"))
    study.optimize(objective, n_trials=1)
    assert "reused_from" not in study.trials[3].user_attrs
    assert len(step_counter) == steps_before + 24


def test_a_reevaluation_trains_again_with_another_seed(step_counter, monkeypatch) -> None:
    """The sampler's k-th repeat of a mask (its proposal says ``evaluation: k``) is trained with
    seed + k, never answered from the earlier result, and keeps the first one's fidelity."""
    import alphanas_optuna.training as training_module
    from alphanas_optuna.sampler import PROPOSAL_KEY

    seeds: list[int] = []
    original = training_module.fine_tune

    def recording(model, train_dl, eval_dl, config, *args, **kwargs):
        seeds.append(config.seed)
        return original(model, train_dl, eval_dl, config, *args, **kwargs)

    monkeypatch.setattr(training_module, "fine_tune", recording)

    objective = _objective(fitness=FitnessConfig(lambda_per_million=0.1, min_accuracy=0.0))
    study = _study()
    study.enqueue_trial(_mask_params("110"))
    study.optimize(objective, n_trials=1)
    steps_first = len(step_counter)
    study.enqueue_trial(_mask_params("110"))
    trial = study.ask()
    proposal = {"mask": "110", "origin": "reevaluation", "parent": 0, "generation": 1}
    study._storage.set_trial_system_attr(
        trial._trial_id, PROPOSAL_KEY, {**proposal, "evaluation": 2}
    )
    study.tell(trial, objective(trial))
    first, again = study.trials
    assert len(step_counter) == 2 * steps_first  # trained again, not reused
    assert "reused_from" not in again.user_attrs
    assert first.user_attrs["seed"] == objective.training.seed
    assert again.user_attrs["seed"] == objective.training.seed + 2
    assert again.user_attrs["evaluation"] == 2 and "evaluation" not in first.user_attrs
    assert again.user_attrs["fidelity"] == first.user_attrs["fidelity"]
    assert seeds == [objective.training.seed, objective.training.seed + 2]  # what trained


def test_two_objective_study_returns_accuracy_and_params() -> None:
    objective = _objective(fitness=FitnessConfig(min_accuracy=0.5))
    study = _study(["maximize", "minimize"])
    study.enqueue_trial(_mask_params("100"))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE
    assert t.values == [t.user_attrs["accuracy"], float(t.user_attrs["n_params"])]


def test_directions_that_do_not_fit_are_refused() -> None:
    objective = _objective()
    study = _study(["minimize"])
    with pytest.raises(ValueError, match=r"directions are \(minimize\).*--direction maximize"):
        study.optimize(objective, n_trials=1)
    assert check_directions([optuna.study.StudyDirection.MAXIMIZE]) is False
    with pytest.raises(ValueError, match="maximize, maximize"):
        check_directions([optuna.study.StudyDirection.MAXIMIZE] * 2)


def test_pruner_stops_a_hopeless_trial_at_an_evaluation_point() -> None:
    objective = _objective(
        training=TrainingConfig(epochs=3, learning_rate=1e-6, batch_size=16, evaluations=3)
    )
    study = _study(pruner=optuna.pruners.ThresholdPruner(lower=0.99))
    study.enqueue_trial(_mask_params("111"))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED
    assert t.user_attrs["pruned_at_step"] == 6
    assert list(t.intermediate_values) == [6]
    assert "pruner" in t.user_attrs["infeasible_reason"]
    assert t.user_attrs["train_seconds"] > 0  # it trained until the pruner stopped it


def test_nan_loss_fails_the_trial_and_the_study_goes_on() -> None:
    objective = _objective(fitness=FitnessConfig(min_accuracy=0.0))
    with torch.no_grad():
        objective.model.classifier.weight.fill_(float("nan"))
    study = _study()
    study.enqueue_trial(_mask_params("111"))
    study.enqueue_trial(_mask_params("010"))
    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    assert "TrainingDiverged" in study.trials[0].user_attrs["fail_reason"]
    assert all(math.isnan(t.user_attrs["n_params"]) is False for t in study.trials)


def test_out_of_memory_fails_the_trial_and_the_study_goes_on(monkeypatch) -> None:
    import alphanas_optuna.training as training

    real_fine_tune = training.fine_tune
    calls = []

    def out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB\nmore"
            )
        return real_fine_tune(*args, **kwargs)

    monkeypatch.setattr(training, "fine_tune", out_of_memory_once)
    objective = _objective(fitness=FitnessConfig(min_accuracy=0.0))
    study = _study()
    study.enqueue_trial(_mask_params("111"))
    study.enqueue_trial(_mask_params("010"))
    study.optimize(objective, n_trials=2)
    failed, done = study.trials
    assert failed.state == TrialState.FAIL and done.state == TrialState.COMPLETE
    assert failed.user_attrs["fail_reason"] == (
        "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    assert failed.user_attrs["mask"] == "111" and failed.user_attrs["n_params"] > 0
    assert failed.user_attrs["accuracy"] is None and failed.user_attrs["feasible"] is False


@pytest.mark.parametrize("error", [KeyboardInterrupt(), ValueError("a bug")])
def test_an_interrupted_or_broken_trial_still_says_which_mask_it_was(monkeypatch, error) -> None:
    import alphanas_optuna.training as training

    def interrupted(*args, **kwargs):
        raise error

    monkeypatch.setattr(training, "fine_tune", interrupted)
    objective = _objective()
    study = _study()
    study.enqueue_trial(_mask_params("101"))
    with pytest.raises(type(error)):
        study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.FAIL
    assert set(USER_ATTRS) <= set(t.user_attrs)
    assert t.user_attrs["mask"] == "101" and t.user_attrs["n_layers"] == 2
    assert t.user_attrs["n_params"] == objective.n_params((1, 0, 1))
    assert t.user_attrs["accuracy"] is None and t.user_attrs["feasible"] is False
    expected = "KeyboardInterrupt" if isinstance(error, KeyboardInterrupt) else "ValueError: a bug"
    assert t.user_attrs["fail_reason"] == expected


def test_a_retried_trial_keeps_its_mask_but_not_what_the_failed_attempt_learnt() -> None:
    from alphanas_optuna.search import _retry_trial

    study = _study()
    trial = study.ask(
        {f"layer_{i:02d}": optuna.distributions.CategoricalDistribution([0, 1]) for i in range(3)}
    )
    for key, value in {
        "mask": "101",
        "n_params": 123,
        "accuracy": 0.5,
        "pruned_at_step": 6,
        "fail_reason": "KeyboardInterrupt",
        "reused_from": 0,
        "my_note": "kept",
    }.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)
    _retry_trial(study, study.trials[0])
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING
    assert retry.params == study.trials[0].params
    assert retry.user_attrs == {"mask": "101", "n_params": 123, "my_note": "kept"}


def test_two_objective_studies_prune_infeasible_trials_the_same_way(step_counter) -> None:
    objective = _objective(training=TrainingConfig(max_steps=1, learning_rate=1e-6, batch_size=16))
    objective.fitness = FitnessConfig(min_accuracy=1.0, max_params=objective.n_params((1, 1, 0)))
    study = _study(["maximize", "minimize"])
    study.enqueue_trial(_mask_params("111"))  # too many parameters: never trains
    study.enqueue_trial(_mask_params("100"))  # trains, below min_accuracy
    study.optimize(objective, n_trials=1)
    assert step_counter == []
    study.optimize(objective, n_trials=1)
    over, low = study.trials
    assert [over.state, low.state] == [TrialState.PRUNED, TrialState.PRUNED]
    assert "max_params" in over.user_attrs["infeasible_reason"]
    assert low.user_attrs["infeasible_reason"].startswith("accuracy ")
    assert len(step_counter) > 0 and low.user_attrs["train_seconds"] > 0
    for t in (over, low):
        assert set(USER_ATTRS) <= set(t.user_attrs) and t.user_attrs["feasible"] is False


def test_a_mask_that_keeps_nothing_is_pruned_without_training(step_counter) -> None:
    objective = _objective()
    study = _study()
    study.enqueue_trial(_mask_params("000"))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.PRUNED and step_counter == []
    assert t.user_attrs["infeasible_reason"] == "the mask keeps no layer"


def test_label_out_of_range_names_num_labels() -> None:
    bad = TokenizedSplit(input_ids=TRAIN.input_ids, labels=TRAIN.labels * 3)
    with pytest.raises(ValueError, match="num_labels=2"):
        AlphaNASObjective(model=tiny_model("bert", 2), pad_token_id=0, train=bad, validation=VALID)
    negative = TokenizedSplit(input_ids=VALID.input_ids, labels=VALID.labels - 1)
    with pytest.raises(ValueError, match=r"validation has label -1; labels must be 0"):
        AlphaNASObjective(
            model=tiny_model("bert", 2), pad_token_id=0, train=TRAIN, validation=negative
        )
    with pytest.raises(ValueError, match="lambda_per_million"):
        FitnessConfig(lambda_per_million=-1)
    with pytest.raises(ValueError, match="min_accuracy"):
        FitnessConfig(min_accuracy=2)
    with pytest.raises(ValueError, match="learning_rate"):
        TrainingConfig(learning_rate=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match=r"mixed_precision='bf16' but training.mixed_precision"):
        _objective(accelerator=type("Accelerator", (), {"mixed_precision": "bf16"})())


def test_the_last_evaluation_is_reported_but_never_pruned() -> None:
    objective = _objective(
        training=TrainingConfig(
            epochs=2, learning_rate=1e-6, batch_size=16, evaluations=2, freeze_embeddings=False
        ),
        fitness=FitnessConfig(min_accuracy=0.0),
    )
    study = _study(pruner=optuna.pruners.ThresholdPruner(lower=0.99))
    study.enqueue_trial(_mask_params("111"))
    study.optimize(objective, n_trials=1)
    t = study.trials[0]
    # Pruned at the first of two evaluation points (step 6 of 12), not at the last.
    assert t.user_attrs["pruned_at_step"] == 6

    single = _objective(
        training=TrainingConfig(epochs=1, learning_rate=1e-6, batch_size=16, evaluations=1),
        fitness=FitnessConfig(min_accuracy=0.0, lambda_per_million=0.5),
    )
    study = _study(pruner=optuna.pruners.ThresholdPruner(lower=0.99))
    study.enqueue_trial(_mask_params("111"))
    study.optimize(single, n_trials=1)
    t = study.trials[0]
    assert t.state == TrialState.COMPLETE
    # What is reported is the study's objective at that step, Q = A - lambda*N, not A.
    assert t.intermediate_values == {6: pytest.approx(t.user_attrs["quality"])}
    assert t.user_attrs["quality"] < t.user_attrs["accuracy"] - 0.01


def test_max_length_beyond_the_model_is_refused_before_training(tmp_path) -> None:
    from conftest import write_tiny_model, write_toy_data

    from alphanas_optuna.data import DataConfig

    model = write_tiny_model(tmp_path / "model")  # 128 positions
    data = write_toy_data(tmp_path / "data")
    with pytest.raises(ValueError, match=r"\[data\] max_length = 256 .* \(126 tokens\)"):
        AlphaNASObjective.from_pretrained(
            str(model), data=DataConfig(source=str(data), validation_size=20, max_length=256)
        )
    with pytest.raises(ValueError, match="seed"):
        TrainingConfig(seed=-1)


def test_the_training_seed_draws_a_missing_classification_head(tmp_path) -> None:
    from conftest import write_toy_data
    from tiny_models import tiny_config, tiny_tokenizer
    from transformers import BertModel

    from alphanas_optuna.data import DataConfig

    # A bare encoder checkpoint (like sentence-transformers' all-MiniLM-L6-v2): no head in it.
    BertModel(tiny_config("bert")).save_pretrained(tmp_path / "encoder")
    tiny_tokenizer().save_pretrained(tmp_path / "encoder")
    data = DataConfig(
        source=str(write_toy_data(tmp_path / "data")), validation_size=20, max_length=64
    )

    def head(seed: int) -> torch.Tensor:
        objective = AlphaNASObjective.from_pretrained(
            str(tmp_path / "encoder"), data=data, training=TrainingConfig(seed=seed)
        )
        return objective.model.classifier.weight.detach().clone()

    first = head(0)
    assert torch.equal(first, head(0))  # the same head in every process
    assert not torch.allclose(first, head(1))
