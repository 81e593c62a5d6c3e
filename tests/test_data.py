from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_tokenizer

from alphanas_optuna.data import (
    DataConfig,
    DataError,
    HubUnavailableError,
    LengthGroupedBatches,
    load_splits,
    make_dataloader,
    split_by_length,
    tokenize_split,
)

IMDB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imdb"

POS = ["great movie", "loved it", "excellent acting", "wonderful story", "best film"]
NEG = ["awful plot", "hated it", "terrible acting", "boring story", "worst film"]


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        label = i % 2
        words = (POS if label else NEG)[i % 5]
        rows.append({"text": f"{words} " * (1 + i % 7), "label": label, "id": i})
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        lines = ["text,label"] + [f'"{r["text"]}",{r["label"]}' for r in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_folder_of_files_is_split_stratified_without_overlap(tmp_path: Path, suffix: str) -> None:
    _write(tmp_path / f"train{suffix}", _rows(200))
    _write(tmp_path / f"test{suffix}", _rows(60))
    cfg = DataConfig(source=str(tmp_path), train_size=100, validation_size=40, test_size=30)
    splits = load_splits(cfg)
    assert len(splits.train[0]) == 100
    assert len(splits.validation[0]) == 40
    assert len(splits.test[0]) == 30
    assert splits.num_labels == 2
    # Stratified: both classes in proportion (the source is balanced).
    assert splits.validation[1].sum() == 20
    assert splits.train[1].sum() == 50
    assert splits.test[1].sum() == 15


def test_validation_never_overlaps_train_and_is_seeded(tmp_path: Path) -> None:
    rows = _rows(300)
    for i, r in enumerate(rows):
        r["text"] = f"review {i} " + r["text"]  # unique texts
    _write(tmp_path / "train.parquet", rows)
    a = load_splits(DataConfig(source=str(tmp_path), train_size=None, validation_size=50, seed=1))
    b = load_splits(DataConfig(source=str(tmp_path), train_size=None, validation_size=50, seed=1))
    c = load_splits(DataConfig(source=str(tmp_path), train_size=None, validation_size=50, seed=2))
    assert not set(a.train[0]) & set(a.validation[0])
    assert len(a.train[0]) + len(a.validation[0]) == 300
    assert a.validation[0] == b.validation[0] and a.fingerprint == b.fingerprint
    assert a.validation[0] != c.validation[0] and a.fingerprint != c.fingerprint
    assert a.test[0] == [] and len(a.test[1]) == 0


def test_single_file_and_acl_imdb_folder(tmp_path: Path) -> None:
    single = _write(tmp_path / "one.jsonl", _rows(50))
    splits = load_splits(DataConfig(source=str(single), train_size=None, validation_size=10))
    assert len(splits.train[0]) == 40 and len(splits.validation[0]) == 10

    acl = tmp_path / "aclImdb"
    for split in ("train", "test"):
        for label, name in ((0, "neg"), (1, "pos")):
            (acl / split / name).mkdir(parents=True)
            for i in range(6):
                (acl / split / name / f"{i}_{label * 9 + 1}.txt").write_text(f"{name} review {i}")
    splits = load_splits(DataConfig(source=str(tmp_path), train_size=None, validation_size=4))
    assert len(splits.train[0]) == 8 and len(splits.test[0]) == 12
    assert all(t.startswith("pos") == bool(y) for t, y in zip(*splits.test))


def test_bad_inputs_name_the_file_and_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_splits(DataConfig(source=str(tmp_path / "missing.parquet")))
    with pytest.raises(DataError, match="no train file"):
        load_splits(DataConfig(source=str(tmp_path)))
    f = _write(tmp_path / "d" / "train.parquet", _rows(30))
    with pytest.raises(
        DataError, match=r"text column 'review' not found.*\['id', 'label', 'text'\]"
    ):
        load_splits(DataConfig(source=str(f.parent), text_column="review", validation_size=5))
    with pytest.raises(DataError, match="label column 'stars' not found"):
        load_splits(DataConfig(source=str(f.parent), label_column="stars", validation_size=5))
    rows = _rows(30)
    for r in rows:
        r["label"] = "positive" if r["label"] else "negative"
    g = _write(tmp_path / "e" / "train.parquet", rows)
    with pytest.raises(
        DataError, match=r"train.parquet: label column 'label' must hold integers.*'negative'"
    ):
        load_splits(DataConfig(source=str(g.parent), validation_size=5))
    with pytest.raises(DataError, match="leaves no training data"):
        load_splits(DataConfig(source=str(f.parent), validation_size=30))
    with pytest.raises(ValueError, match="train_size"):
        DataConfig(train_size=0)
    with pytest.raises(ValueError, match="max_length"):
        DataConfig(max_length=2)


def test_unreachable_hub_says_how_to_use_local_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'stanfordnlp/imdb' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(HubUnavailableError, match=r"stanfordnlp/imdb.*--data"):
        load_splits(DataConfig())


def test_tokenize_is_cached_and_keyed_by_max_length(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    texts = ["great movie " * n for n in range(1, 30)]
    labels = np.arange(len(texts)) % 2
    a = tokenize_split(texts, labels, tok, 16, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    assert max(a.lengths) == 16 and min(a.lengths) == 4  # [CLS] great movie [SEP]
    b = tokenize_split(texts, labels, tok, 16, cache_dir=tmp_path)
    assert all(np.array_equal(x, y) for x, y in zip(a.input_ids, b.input_ids))
    assert len(list(tmp_path.glob("*.npz"))) == 1  # served from the cache
    tokenize_split(texts, labels, tok, 24, cache_dir=tmp_path)
    tokenize_split(texts[:-1], labels[:-1], tok, 16, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    # A damaged cache file is rebuilt, not trusted.
    files[0].write_bytes(b"garbage")
    c = tokenize_split(texts, labels, tok, 16, cache_dir=tmp_path)
    assert all(np.array_equal(x, y) for x, y in zip(a.input_ids, c.input_ids))


def test_batches_are_length_grouped_padded_and_cover_every_example() -> None:
    tok = tiny_tokenizer()
    texts = ["great movie " * (1 + (i * 7) % 23) for i in range(100)]
    labels = np.arange(100) % 2
    split = tokenize_split(texts, labels, tok, 64, cache_dir="")
    loader = make_dataloader(
        split, batch_size=8, pad_token_id=0, shuffle=True, seed=3, batching="length-grouped"
    )
    seen, padded, tight = [], 0, 0
    for batch in loader:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.shape == mask.shape
        assert (ids[mask == 0] == 0).all()
        padded += int((mask == 0).sum())
        tight += int(mask.sum())
        seen.extend(batch["labels"].tolist())
    assert len(seen) == 100 and sum(seen) == 50
    # Grouping by length keeps padding far below random batching's.
    rng = np.random.default_rng(0)
    lengths = split.lengths
    perm = rng.permutation(100)
    random_pad = sum(
        int(lengths[perm[i : i + 8]].max() * len(perm[i : i + 8]) - lengths[perm[i : i + 8]].sum())
        for i in range(0, 100, 8)
    )
    assert padded < 0.25 * random_pad
    # Seeded: the same order twice for a fresh loader with the same seed.
    order_a = [b for b in LengthGroupedBatches(lengths, 8, shuffle=True, seed=3)]
    order_b = [b for b in LengthGroupedBatches(lengths, 8, shuffle=True, seed=3)]
    assert order_a == order_b


def test_split_by_length_partitions_a_batch_within_the_token_budget() -> None:
    lengths = [5, 12, 3, 12, 7, 30, 4, 6]
    groups = split_by_length(lengths, 24)
    # Every position once, longest first; each group's size x its longest length fits the budget,
    # except a lone example longer than the budget.
    assert sorted(sum(groups, [])) == list(range(8))
    flat = [lengths[i] for g in groups for i in g]
    assert flat == sorted(lengths, reverse=True)
    assert groups[0] == [5]  # 30 tokens > 24: on its own
    for g in groups[1:]:
        assert len(g) * max(lengths[i] for i in g) <= 24
    assert [len(g) for g in groups] == [1, 2, 3, 2]  # 12+12 | 7,6,5 | 4,3
    assert split_by_length(lengths, 10_000) == [sorted(range(8), key=lambda i: -lengths[i])]
    assert split_by_length(lengths, 1) == [[i] for i in sorted(range(8), key=lambda i: -lengths[i])]
    with pytest.raises(ValueError, match="max_tokens"):
        split_by_length(lengths, 0)


def test_batching_modes_random_split_and_grouped() -> None:
    tok = tiny_tokenizer()
    texts = ["great movie " * (1 + (i * 7) % 23) for i in range(96)]
    labels = np.arange(96) % 2
    split = tokenize_split(texts, labels, tok, 64, cache_dir="")

    def batches(batching: str, seed: int, budget: int = 64) -> list:
        return list(
            make_dataloader(
                split,
                batch_size=8,
                pad_token_id=0,
                shuffle=True,
                seed=seed,
                batching=batching,
                micro_batch_tokens=budget,
            )
        )

    def lengths(batch: dict) -> list[int]:
        return batch["attention_mask"].sum(1).tolist()

    def spread(batch_lengths: list[list[int]]) -> float:
        return float(np.mean([max(b) - min(b) for b in batch_lengths]))

    random = [lengths(b) for b in batches("random", 3)]
    grouped = [lengths(b) for b in batches("length-grouped", 3)]
    split_batches = batches("length-split", 3)
    # Every example once either way; random batches mix lengths, grouped ones do not.
    assert sorted(sum(random, [])) == sorted(sum(grouped, [])) == sorted(split.lengths.tolist())
    assert spread(grouped) < 0.25 * spread(random)
    # Random batches are seeded.
    assert (
        [lengths(b) for b in batches("random", 3)]
        == random
        != [lengths(b) for b in batches("random", 4)]
    )
    # "length-split": the random batches, each as micro-batches padded to their own longest
    # example and within the token budget (unless a single example is longer).
    assert len(split_batches) == len(random)
    tokens_split = tokens_random = 0
    for parts, whole in zip(split_batches, batches("random", 3)):
        assert isinstance(parts, list)
        assert sorted(sum((lengths(p) for p in parts), [])) == sorted(lengths(whole))
        assert sorted(sum((p["labels"].tolist() for p in parts), [])) == sorted(
            whole["labels"].tolist()
        )
        for p in parts:
            width = p["input_ids"].shape[1]
            assert width == max(lengths(p))
            assert len(lengths(p)) == 1 or p["input_ids"].numel() <= 64
        tokens_split += sum(p["input_ids"].numel() for p in parts)
        tokens_random += whole["input_ids"].numel()
    assert tokens_split < 0.8 * tokens_random
    # Evaluation (no shuffle) ignores the batching: one padded dict per batch, sorted by length.
    (first, *_) = make_dataloader(split, batch_size=8, pad_token_id=0, shuffle=False)
    assert isinstance(first, dict) and lengths(first) == sorted(lengths(first), reverse=True)
    with pytest.raises(ValueError, match="batching"):
        make_dataloader(split, batch_size=8, pad_token_id=0, shuffle=True, batching="sorted")
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        make_dataloader(split, batch_size=8, pad_token_id=0, shuffle=True, micro_batch_tokens=0)


@pytest.mark.skipif(
    not (IMDB / "train.parquet").is_file(), reason=f"IMDB parquet not found at {IMDB}"
)
def test_real_imdb_parquet_folder() -> None:
    splits = load_splits(
        DataConfig(source=str(IMDB), train_size=500, validation_size=300, test_size=400, seed=0)
    )
    assert splits.num_labels == 2
    assert (len(splits.train[0]), len(splits.validation[0]), len(splits.test[0])) == (500, 300, 400)
    assert splits.train[1].mean() == 0.5 and splits.validation[1].mean() == 0.5


def test_null_labels_and_malformed_csv_are_named(tmp_path: Path) -> None:
    rows = _rows(20)
    rows[3]["label"] = None
    f = _write(tmp_path / "a" / "train.parquet", rows)
    with pytest.raises(DataError, match=r"label column 'label' must hold integers.*None"):
        load_splits(DataConfig(source=str(f.parent), validation_size=5))
    bad = tmp_path / "b" / "train.csv"
    bad.parent.mkdir()
    bad.write_text('text,label\n"unterminated,1\nok,0,extra,fields\n')
    with pytest.raises(DataError, match=r"train.csv: cannot be read as csv"):
        load_splits(DataConfig(source=str(bad.parent), validation_size=2))
    with pytest.raises(ValueError, match="seed"):
        DataConfig(seed=-1)


@pytest.mark.parametrize("kind", ["parquet-no-rows", "csv-0-bytes", "csv-header-only"])
def test_an_empty_file_is_called_empty(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "parquet-no-rows":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.int64())})
        pq.write_table(table, folder / "train.parquet")
        needle = "holds no rows"
    elif kind == "csv-0-bytes":
        (folder / "train.csv").write_text("")
        needle = r"is empty \(0 bytes\)"
    else:
        (folder / "train.csv").write_text("text,label\n")
        needle = "holds no rows"
    with pytest.raises(DataError, match=needle):
        load_splits(DataConfig(source=str(folder), validation_size=2))


def test_reading_a_csv_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    rows = _rows(30)
    folder = tmp_path / "csv"
    folder.mkdir()
    lines = ["text,label"] + [f'"{r["text"]}",{r["label"]}' for r in rows]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    capfd.readouterr()
    splits = load_splits(DataConfig(source=str(folder), validation_size=6))
    assert len(splits.train[1]) + len(splits.validation[1]) == 30
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # no "Generating train split" bar


def test_an_unreachable_hub_is_known_in_seconds_without_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No network, no offline mode: one connection attempt decides; the libraries' five retries
    (half a minute, a line each) never start."""
    import socket
    import time

    import datasets

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    attempts = []

    def no_network(address, timeout=None, *args, **kwargs):
        attempts.append(address)
        raise OSError("[Errno -2] Name or service not known")

    def must_not_run(*args, **kwargs):
        raise AssertionError("datasets.load_dataset was called")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(datasets, "load_dataset", must_not_run)
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match=r"stanfordnlp/imdb.*unreachable.*--data"):
        load_splits(DataConfig())
    assert time.perf_counter() - start < 1
    assert attempts == [("huggingface.co", 443)]


def test_offline_mode_does_not_probe_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    from alphanas_optuna.hub import hub_reachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_reachable() is None
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub_reachable() is None
