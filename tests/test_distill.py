"""Distillation: the loss against hand-computed values, the loop's plumbing, the teacher's cache
(one fine-tune per machine, shared by workers), the objective's fidelity, and bad input."""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import NEG, POS
from tiny_models import tiny_config, tiny_model, tiny_tokenizer

from alphanas_optuna import AlphaNASObjective, FitnessConfig
from alphanas_optuna.config import StudyConfig, StudyConfigError, parse_study_config
from alphanas_optuna.data import TokenizedSplit, tokenize_split
from alphanas_optuna.distill import (
    DistillConfig,
    check_teacher,
    distillation_loss,
    load_teacher,
    predict_logits,
    teacher_for,
    with_teacher,
)
from alphanas_optuna.distill import teacher_cache_dir as distill_cache
from alphanas_optuna.final import final_fine_tune
from alphanas_optuna.objective import get_accelerator
from alphanas_optuna.training import TrainingConfig, fine_tune, make_loaders


def _toy(n: int, seed: int) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    texts = []
    for y in labels:
        words = POS if y else NEG
        texts.append(" ".join(rng.choice(words, size=rng.integers(1, 4))) + " the movie")
    return tokenize_split(texts, labels, tiny_tokenizer(), 32, cache_dir="")


TRAIN = _toy(64, 0)
VALID = _toy(48, 1)
FAST = TrainingConfig(
    epochs=8, learning_rate=1e-2, batch_size=16, warmup_ratio=0.0, seed=0, freeze_embeddings=False
)


def _model(n_layers: int = 3, num_labels: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    model = tiny_model("bert", n_layers=n_layers, num_labels=num_labels)
    for module in model.modules():  # no dropout: two runs can match exactly
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own teacher cache: a teacher another test left must not answer for it."""
    monkeypatch.setenv("ALPHANAS_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------- the loss


def test_the_loss_matches_a_hand_computation() -> None:
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[0.0, 1.0], [3.0, 1.0]])
    labels = torch.tensor([0, 1])
    alpha, t = 0.3, 2.0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    kl = ce = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), labels.tolist(), strict=True):
        p_t = softmax([v / t for v in t_row])
        p_s = softmax([v / t for v in s_row])
        kl += sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
        ce += -math.log(softmax(s_row)[y])
    expected = alpha * t * t * kl / 2 + (1 - alpha) * ce / 2
    got = distillation_loss(student, teacher, labels, alpha=alpha, temperature=t)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    # alpha = 0 is plain cross-entropy; a teacher equal to the student adds nothing at alpha = 1.
    plain = distillation_loss(student, teacher, labels, alpha=0.0, temperature=t)
    assert float(plain) == pytest.approx(ce / 2, rel=1e-6)
    same = distillation_loss(student, student, labels, alpha=1.0, temperature=t)
    assert float(same) == pytest.approx(0.0, abs=1e-7)


def test_the_loss_is_float32_for_half_precision_logits() -> None:
    student = torch.tensor([[1.0, 0.0]], dtype=torch.bfloat16, requires_grad=True)
    loss = distillation_loss(
        student, torch.tensor([[0.0, 1.0]]), torch.tensor([0]), alpha=0.5, temperature=2.0
    )
    assert loss.dtype == torch.float32
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad.float()).all()


def test_distill_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        DistillConfig(alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        DistillConfig(temperature=0)
    with pytest.raises(ValueError, match="distill must be None or a DistillConfig"):
        TrainingConfig(distill={"alpha": 0.5})  # type: ignore[arg-type]


def test_only_the_full_mask_without_a_given_teacher_trains_the_teacher() -> None:
    on = DistillConfig(alpha=0.5)
    assert on.trains_teacher((1, 1, 1)) and on.trains_teacher("1111")
    assert not on.trains_teacher((1, 0, 1)) and not on.trains_teacher("0111")
    assert not DistillConfig(alpha=0.0).trains_teacher("111")  # labels only: no teacher
    assert not DistillConfig(alpha=0.5, teacher="org/fine-tuned").trains_teacher("111")


# -------------------------------------------------------------------------------- the loop


def _train(split: TokenizedSplit, config: TrainingConfig) -> tuple[torch.nn.Module, float]:
    model = _model()
    train_dl, eval_dl = make_loaders(split, VALID, config, pad_token_id=0)
    result = fine_tune(model, train_dl, eval_dl, config, get_accelerator())
    return model, result.accuracy


@pytest.mark.parametrize(
    ("batching", "accumulation"), [("length-split", 1), ("random", 2), ("length-grouped", 1)]
)
def test_alpha_zero_trains_exactly_as_without_distillation(
    batching: str, accumulation: int
) -> None:
    config = dataclasses.replace(
        FAST, batching=batching, gradient_accumulation_steps=accumulation, micro_batch_tokens=64
    )
    plain, _ = _train(TRAIN, config)
    noise = np.random.default_rng(0).normal(size=(len(TRAIN), 2)).astype(np.float32)
    distilled, _ = _train(
        with_teacher(TRAIN, noise),
        dataclasses.replace(config, distill=DistillConfig(alpha=0.0, temperature=3.0)),
    )
    for a, b in zip(plain.parameters(), distilled.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batching", ["length-split", "random"])
def test_the_student_follows_the_teacher(batching: str) -> None:
    # A teacher that says the opposite of every label: learning from it alone (alpha = 1) must
    # turn the student against the labels; learning from the labels alone must not.
    flipped = np.where(TRAIN.labels[:, None] == np.arange(2)[None, :], -4.0, 4.0).astype(np.float32)
    split = with_teacher(TRAIN, flipped)
    config = dataclasses.replace(FAST, batching=batching, micro_batch_tokens=64)
    _, labels_only = _train(split, dataclasses.replace(config, distill=DistillConfig(alpha=0.0)))
    _, teacher_only = _train(split, dataclasses.replace(config, distill=DistillConfig(alpha=1.0)))
    assert labels_only >= 0.9
    assert teacher_only <= 0.1


def test_distill_without_teacher_logits_is_refused() -> None:
    with pytest.raises(ValueError, match="carry no teacher_logits"):
        _train(TRAIN, dataclasses.replace(FAST, distill=DistillConfig()))


def test_with_teacher_refuses_logits_of_another_split() -> None:
    with pytest.raises(ValueError, match=r"shape \(3, 2\), expected \(64, classes\)"):
        with_teacher(TRAIN, np.zeros((3, 2)))


def test_predict_logits_are_in_the_splits_order() -> None:
    model = _model()
    model.eval()
    got = predict_logits(model, VALID, pad_token_id=0, batch_size=7, accelerator=get_accelerator())
    with torch.no_grad():
        for i in (0, 5, 17, 47):
            ids = torch.as_tensor(VALID.input_ids[i], dtype=torch.long)[None]
            one = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
            assert np.allclose(got[i], one.numpy(), atol=1e-5)


# ------------------------------------------------------------------------------ the teacher


def test_the_teacher_is_trained_once_and_then_read_from_the_cache(tmp_path, step_counter) -> None:
    model = _model()
    acc = get_accelerator()
    first = teacher_for(model, TRAIN, VALID, FAST, acc, pad_token_id=0, cache_dir=tmp_path)
    trained_steps = len(step_counter)
    assert trained_steps == FAST.total_steps(math.ceil(len(TRAIN) / FAST.batch_size))
    assert not first.cached and first.accuracy >= 0.9 and first.logits.shape == (len(TRAIN), 2)
    # The teacher's logits are those of the full model fine-tuned with the student's settings.
    again, accuracy = _train(TRAIN, FAST)
    assert accuracy == first.accuracy
    direct = predict_logits(again, TRAIN, pad_token_id=0, batch_size=64, accelerator=acc)
    assert np.allclose(direct, first.logits, atol=1e-5)

    step_counter.clear()
    second = teacher_for(
        model,
        TRAIN,
        VALID,
        dataclasses.replace(FAST, distill=DistillConfig(alpha=0.9), evaluations=3),
        acc,
        pad_token_id=0,
        cache_dir=tmp_path,
    )
    assert second.cached and not step_counter and second.key == first.key
    assert np.array_equal(second.logits, first.logits)
    # Anything the teacher depends on makes another one: its seed, its settings, the data.
    for change in (
        {"seed": 1},
        {"training": dataclasses.replace(FAST, learning_rate=5e-3)},
        {"train": _toy(64, 7)},
    ):
        kwargs = {"training": FAST, "train": TRAIN, **change}
        other = teacher_for(
            model,
            kwargs["train"],
            VALID,
            kwargs["training"],
            acc,
            pad_token_id=0,
            seed=kwargs.get("seed"),
            cache_dir=tmp_path,
        )
        assert not other.cached and other.key != first.key


def test_a_second_worker_waits_for_the_first_ones_teacher(tmp_path) -> None:
    model = _model()
    acc = get_accelerator()
    calls: list[str] = []
    out: dict[str, object] = {}

    def slow_fit():
        calls.append("first")
        time.sleep(1.5)
        return model, 0.5

    def second_fit():
        calls.append("second")
        return model, 0.5

    def worker(name, fit):
        out[name] = teacher_for(
            model, TRAIN, VALID, FAST, acc, pad_token_id=0, fit=fit, cache_dir=tmp_path
        )

    a = threading.Thread(target=worker, args=("a", slow_fit))
    a.start()
    time.sleep(0.3)
    b = threading.Thread(target=worker, args=("b", second_fit))
    b.start()
    a.join()
    b.join()
    assert calls == ["first"]
    assert out["b"].cached and np.array_equal(out["a"].logits, out["b"].logits)


def test_a_teacher_of_other_labels_or_vocabulary_is_refused(tmp_path) -> None:
    student = _model()
    with pytest.raises(
        ValueError, match="teacher has num_labels=3 but the student has num_labels=2"
    ):
        check_teacher(_model(num_labels=3), student)
    other = _model()
    other.config.vocab_size = student.config.vocab_size + 1
    with pytest.raises(ValueError, match="vocab_size=.*: its vocabulary do not match"):
        teacher_for(
            student,
            TRAIN,
            VALID,
            FAST,
            get_accelerator(),
            pad_token_id=0,
            trained=other,
            cache_dir=tmp_path,
        )


# ---------------------------------------------------------------------------- the objective


def _objective(training: TrainingConfig) -> AlphaNASObjective:
    return AlphaNASObjective(
        model=_model(),
        pad_token_id=0,
        train=TRAIN,
        validation=VALID,
        training=training,
        fitness=FitnessConfig(lambda_per_million=0.0, min_accuracy=0.0),
    )


def _run(objective: AlphaNASObjective, masks: list[str]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for m in masks:
        study.enqueue_trial({f"layer_{i:02d}": int(b) for i, b in enumerate(m)})
    study.optimize(objective, n_trials=len(masks))
    return study


def test_the_full_mask_trial_is_the_teacher_and_other_workers_reuse_it(step_counter) -> None:
    distilled = dataclasses.replace(FAST, distill=DistillConfig(alpha=0.5, temperature=2.0))
    per_trial = FAST.total_steps(math.ceil(len(TRAIN) / FAST.batch_size))
    worker = _objective(distilled)
    study = _run(worker, ["111", "101"])
    # Two fine-tunes, not three: the full-mask trial trained the teacher.
    assert len(step_counter) == 2 * per_trial
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    plain = _objective(FAST)
    assert worker.fidelity != plain.fidelity  # distilled results never stand in for plain ones
    # The full-mask trial trained exactly as a plain one (it is the teacher).
    step_counter.clear()
    plain_full = _run(plain, ["111"]).trials[0]
    assert plain_full.user_attrs["accuracy"] == study.trials[0].user_attrs["accuracy"]
    # Another worker of the same study on this machine reads the teacher from the cache.
    step_counter.clear()
    other = _run(_objective(distilled), ["011"])
    assert len(step_counter) == per_trial
    assert other.trials[0].user_attrs["fidelity"] == study.trials[0].user_attrs["fidelity"]


def test_final_fine_tune_learns_from_a_given_teacher_without_training_it(
    step_counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alphanas_optuna import distill

    base = _model()
    acc = get_accelerator()
    teacher, _ = final_fine_tune(base, "111", TRAIN, VALID, FAST, acc, pad_token_id=0)
    distilled = dataclasses.replace(FAST, distill=DistillConfig(alpha=0.5))
    assert not list(distill.teacher_cache_dir().glob("*.npz"))
    asked: list[torch.nn.Module] = []
    original = distill.predict_logits

    def spy(model, *args, **kwargs):
        asked.append(model)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(distill, "predict_logits", spy)
    step_counter.clear()
    student, result = final_fine_tune(
        base, "101", TRAIN, VALID, distilled, acc, pad_token_id=0, teacher=teacher
    )
    per_trial = FAST.total_steps(math.ceil(len(TRAIN) / FAST.batch_size))
    assert len(step_counter) == per_trial and result.accuracy >= 0.8
    assert asked == [teacher]  # its logits came from the given teacher
    assert len(list(distill.teacher_cache_dir().glob("*.npz"))) == 1
    # The full mask is the teacher: with distill on, it still trains without it.
    step_counter.clear()
    _, full = final_fine_tune(base, "111", TRAIN, VALID, distilled, acc, pad_token_id=0)
    assert len(step_counter) == per_trial


# ----------------------------------------------------------------------------- study files


def _raw(distill: object) -> dict:
    return {
        "model": {"name": "m"},
        "data": {"source": "d"},
        "training": {"distill": distill},
    }


def test_study_files_take_distill_as_an_inline_table() -> None:
    config = parse_study_config(_raw({"alpha": 0.25, "temperature": 4}))
    assert config.training.distill == DistillConfig(alpha=0.25, temperature=4.0)
    again = StudyConfig.from_dict(config.to_dict())
    assert again.training.distill == config.training.distill
    assert parse_study_config(_raw({})).training.distill == DistillConfig()
    # An unset teacher is left out of the stored settings (and of every digest of them).
    assert config.to_dict()["training"]["distill"] == {"alpha": 0.25, "temperature": 4.0}
    given = parse_study_config(_raw({"teacher": "models/bert-large-imdb"}))
    assert given.training.distill == DistillConfig(teacher="models/bert-large-imdb")
    assert StudyConfig.from_dict(given.to_dict()).training.distill == given.training.distill
    # In a study file, ./ and ../ are relative to the file's folder, as [model] name is.
    here = parse_study_config(_raw({"teacher": "./teacher"}), Path("/studies/s.toml"))
    assert here.training.distill.teacher == str(Path("/studies/teacher").resolve())


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"alpha": 2}, r"<study>: \[training.distill\] alpha must be in \[0, 1\], got 2.0"),
        (
            {"beta": 1},
            r"unknown key \[training.distill\] 'beta'; allowed keys: alpha, temperature, teacher",
        ),
        (
            {"teacher": ""},
            r"\[training.distill\] teacher must be a model folder, Hub id or package",
        ),
        ({"temperature": "hot"}, r"\[training.distill\] temperature must be a number, got 'hot'"),
        (
            0.5,
            r"\[training\] distill must be a table \{ alpha = \.\.\., temperature = \.\.\., teacher",
        ),
        ("all", r"\[training\] distill must be a table"),
    ],
)
def test_bad_distill_values_name_the_key(value: object, message: str) -> None:
    with pytest.raises(StudyConfigError, match=message):
        parse_study_config(_raw(value))


def test_a_damaged_cache_file_is_computed_again(tmp_path) -> None:
    model = _model()
    acc = get_accelerator()
    first = teacher_for(model, TRAIN, VALID, FAST, acc, pad_token_id=0, cache_dir=tmp_path)
    (tmp_path / f"{first.key}.npz").write_bytes(b"PK\x03\x04 truncated")
    again = teacher_for(model, TRAIN, VALID, FAST, acc, pad_token_id=0, cache_dir=tmp_path)
    assert not again.cached and np.allclose(again.logits, first.logits, atol=1e-5)


def test_evaluations_in_the_middle_leave_training_as_it_was() -> None:
    # With dropout on: the teacher of a study whose trials evaluate 3 times is the same model as
    # one trained with a single evaluation (the cache key counts one).
    def trained(evaluations: int) -> torch.nn.Module:
        torch.manual_seed(0)
        model = tiny_model("bert", n_layers=2)
        config = dataclasses.replace(FAST, evaluations=evaluations, epochs=2)
        train_dl, eval_dl = make_loaders(TRAIN, VALID, config, pad_token_id=0)
        fine_tune(model, train_dl, eval_dl, config, get_accelerator())
        return model

    once, thrice = trained(1), trained(3)
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in once.modules())
    for a, b in zip(once.parameters(), thrice.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_teacher_trial_is_never_pruned_and_alpha_zero_needs_no_teacher(step_counter) -> None:
    config = dataclasses.replace(FAST, evaluations=2)
    per_trial = config.total_steps(math.ceil(len(TRAIN) / FAST.batch_size))

    def run(training: TrainingConfig, mask: str) -> optuna.trial.FrozenTrial:
        study = optuna.create_study(
            direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.99)
        )
        study.enqueue_trial({f"layer_{i:02d}": int(b) for i, b in enumerate(mask)})
        study.optimize(_objective(training), n_trials=1)
        return study.trials[0]

    assert run(config, "111").state == optuna.trial.TrialState.PRUNED
    step_counter.clear()
    teacher = run(dataclasses.replace(config, distill=DistillConfig()), "111")
    assert teacher.state == optuna.trial.TrialState.COMPLETE and len(step_counter) == per_trial
    step_counter.clear()
    run(dataclasses.replace(config, distill=DistillConfig(alpha=0.0)), "101")
    assert len(step_counter) == per_trial // 2  # pruned half-way, and no teacher was trained


# ------------------------------------------------------------------------- a given teacher


def _fine_tuned_teacher(folder, num_labels: int = 2) -> str:
    """A 2-layer tiny BERT fine-tuned on TRAIN, saved with the tiny tokenizer as a checkpoint."""
    base = _model(n_layers=2, num_labels=num_labels)
    model, result = final_fine_tune(
        base, "11", TRAIN, VALID, FAST, get_accelerator(), pad_token_id=0
    )
    assert num_labels != 2 or result.accuracy >= 0.8
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


def test_a_given_teacher_teaches_every_mask_the_full_one_too(
    tmp_path, step_counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    import alphanas_optuna.training as training_module

    folder = _fine_tuned_teacher(tmp_path / "teacher")
    given = dataclasses.replace(FAST, distill=DistillConfig(alpha=0.5, teacher=folder))
    soft: list[int] = []
    original = training_module.distillation_loss

    def spy(*args, **kwargs):
        soft.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(training_module, "distillation_loss", spy)
    worker = _objective(given)
    worker.tokenizer = tiny_tokenizer()
    step_counter.clear()
    study = _run(worker, ["111", "101"])
    per_trial = FAST.total_steps(math.ceil(len(TRAIN) / FAST.batch_size))
    # Two fine-tunes: the given teacher is not trained, and the full mask is a student.
    assert len(step_counter) == 2 * per_trial
    assert len(soft) >= 2 * per_trial
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # Its logits are the saved model's, computed once and cached, with its validation accuracy.
    acc = get_accelerator()
    cached = teacher_for(worker.model, TRAIN, VALID, given, acc, pad_token_id=0)
    assert cached.cached and cached.accuracy >= 0.8
    saved = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    expected = predict_logits(saved, TRAIN, pad_token_id=0, batch_size=64, accelerator=acc)
    np.testing.assert_allclose(cached.logits, expected, atol=1e-5)
    # Another teacher, other results: the fidelity and the cache key differ from the default's.
    default = dataclasses.replace(FAST, distill=DistillConfig(alpha=0.5))
    assert worker.fidelity != _objective(default).fidelity
    assert cached.key != teacher_for(worker.model, TRAIN, VALID, default, acc, pad_token_id=0).key
    # Its logits do not depend on the students' seed, budget or base model: one file serves all.
    other = dataclasses.replace(given, seed=7, epochs=2.0)
    assert teacher_for(_model(n_layers=2), TRAIN, VALID, other, acc, pad_token_id=0).cached
    # A checkpoint trained again into the same folder is another teacher (other results), and
    # one saved again unchanged is the same one.
    fidelity = worker.fidelity
    os.utime(next((tmp_path / "teacher").glob("*.safetensors")))
    assert worker.fidelity == fidelity
    assert teacher_for(worker.model, TRAIN, VALID, given, acc, pad_token_id=0).key == cached.key
    with torch.no_grad():
        saved.classifier.bias.add_(0.1)
    saved.save_pretrained(folder)
    assert worker.fidelity != fidelity
    assert teacher_for(worker.model, TRAIN, VALID, given, acc, pad_token_id=0).key != cached.key


def test_a_bad_given_teacher_is_refused_with_one_line_naming_it(tmp_path) -> None:
    from transformers import BertModel

    student = _model()
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match=r"\[training.distill\] teacher: model path .* not exist"):
        load_teacher(str(tmp_path / "nowhere"), student, tokenizer)
    (tmp_path / "empty").mkdir()  # a folder that is not a checkpoint (OSError from transformers)
    with pytest.raises(ValueError, match=r"^\[training.distill\] teacher: .*config\.json"):
        load_teacher(str(tmp_path / "empty"), student, tokenizer)
    with pytest.raises(ValueError, match=r"^\[training.distill\] teacher: .*not installed"):
        teacher_for(
            student,
            TRAIN,
            VALID,
            dataclasses.replace(FAST, distill=DistillConfig(teacher="package:no_such_teacher")),
            get_accelerator(),
            pad_token_id=0,
        )
    encoder = tmp_path / "encoder"  # a pretrained encoder: no classification head
    BertModel(tiny_config("bert", n_layers=2)).save_pretrained(encoder)
    tokenizer.save_pretrained(encoder)
    with pytest.raises(ValueError, match="is not a fine-tuned classifier: its checkpoint lacks"):
        load_teacher(str(encoder), student, tokenizer)
    three = _fine_tuned_teacher(tmp_path / "three", num_labels=3)
    with pytest.raises(ValueError, match="num_labels=3 but the student has num_labels=2"):
        load_teacher(three, student, tokenizer)
    other = tmp_path / "other-vocab"
    _fine_tuned_teacher(other)
    words = tiny_tokenizer()
    words.add_tokens(["zebra"])
    words.save_pretrained(other)
    with pytest.raises(ValueError, match="tokenizer differs from the student's .* 'zebra'"):
        load_teacher(str(other), student, tokenizer)
    assert load_teacher(str(tmp_path / "three"), _model(num_labels=3), tokenizer) is not None
    with pytest.raises(ValueError, match="accepts 126 tokens but the examples hold up to 500"):
        load_teacher(three, _model(num_labels=3), tokenizer, max_length=500)


def test_a_teacher_far_below_chance_is_refused(tmp_path) -> None:
    folder = tmp_path / "flipped"
    _fine_tuned_teacher(folder)
    # The same teacher with its two labels swapped: right about the task, wrong about the ids.
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.save_pretrained(folder)
    given = dataclasses.replace(FAST, distill=DistillConfig(teacher=str(folder)))
    with pytest.raises(ValueError, match="far below chance"):
        teacher_for(_model(), TRAIN, VALID, given, get_accelerator(), pad_token_id=0)
    assert not list(distill_cache().glob("*.npz"))  # nothing wrong is cached
