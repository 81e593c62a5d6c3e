"""alphanas prepare-data: the folder that --data reads, from the aclImdb tarball, a folder, a
file, or a Hub dataset (the Hub is faked: it is unreachable here)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from alphanas_optuna import cli
from alphanas_optuna.data import DataConfig, load_splits

REVIEWS = {
    ("train", "pos"): ["great movie", "loved it", "a joy"],
    ("train", "neg"): ["awful plot", "hated it"],
    ("test", "pos"): ["wonderful"],
    ("test", "neg"): ["boring", "a waste"],
}


def write_acl_tarball(path: Path) -> Path:
    """A tiny ``aclImdb_v1.tar.gz``: labelled reviews, an unlabelled one, and other files."""
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, text: str) -> None:
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for (split, polarity), texts in REVIEWS.items():
            for i, text in enumerate(texts):
                add(f"aclImdb/{split}/{polarity}/{i}_{7 if polarity == 'pos' else 2}.txt", text)
        add("aclImdb/train/unsup/0_0.txt", "no label")
        add("aclImdb/README", "readme")
    return path


def read(path: Path) -> list[tuple[str, int]]:
    table = pq.read_table(path).to_pydict()
    return list(zip(table["text"], table["label"]))


def test_prepare_data_from_the_acl_tarball(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tarball = write_acl_tarball(tmp_path / "aclImdb_v1.tar.gz")
    out = tmp_path / "imdb"
    assert cli.main(["prepare-data", str(out), "--source", str(tarball)]) == 0
    assert f"{out / 'train.parquet'} (5 rows)" in capsys.readouterr().out
    # Negatives then positives, by file name: the order of the unpacked aclImdb folder.
    assert read(out / "train.parquet") == [
        ("awful plot", 0),
        ("hated it", 0),
        ("great movie", 1),
        ("loved it", 1),
        ("a joy", 1),
    ]
    assert read(out / "test.parquet") == [("boring", 0), ("a waste", 0), ("wonderful", 1)]
    splits = load_splits(DataConfig(source=str(out), validation_size=2, train_size=None))
    assert len(splits.train[1]) + len(splits.validation[1]) == 5 and len(splits.test[1]) == 3

    # The same reviews as the unpacked folder.
    with tarfile.open(tarball) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "unpacked", **safe)
    again = tmp_path / "again"
    argv = ["prepare-data", str(again), "--source", str(tmp_path / "unpacked" / "aclImdb")]
    assert cli.main(argv) == 0
    for name in ("train.parquet", "test.parquet"):
        assert read(again / name) == read(out / name)

    # Existing files are not replaced without --overwrite.
    assert cli.main(["prepare-data", str(out), "--source", str(tarball)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0]
    assert cli.main(["prepare-data", str(out), "--source", str(tarball), "--overwrite"]) == 0


def test_prepare_data_from_a_csv_with_other_columns(tmp_path: Path) -> None:
    csv = tmp_path / "reviews.csv"
    csv.write_text("review,stars\ngood,1\nbad,0\nfine,1\n")
    out = tmp_path / "out"
    argv = ["prepare-data", str(out), "--source", str(csv), "--text-column", "review"]
    assert cli.main([*argv, "--label-column", "stars"]) == 0
    assert read(out / "train.parquet") == [("good", 1), ("bad", 0), ("fine", 1)]
    assert not (out / "test.parquet").exists()  # the source has no test split


def test_prepare_data_from_a_hub_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    calls = []

    def fake_hub(dataset_id, *args, **kwargs):
        calls.append(dataset_id)
        return datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}),
                "test": datasets.Dataset.from_dict({"text": ["c"], "label": [1]}),
                "unsupervised": datasets.Dataset.from_dict({"text": ["d"], "label": [-1]}),
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    out = tmp_path / "imdb"
    assert cli.main(["prepare-data", str(out)]) == 0
    assert calls == ["stanfordnlp/imdb"]
    assert read(out / "train.parquet") == [("a", 0), ("b", 1)]
    assert read(out / "test.parquet") == [("c", 1)]


def test_prepare_data_from_a_broken_tarball(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "aclImdb_v1.tar.gz"
    bad.write_bytes(b"not a tarball")
    assert cli.main(["prepare-data", str(tmp_path / "o"), "--source", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be read as an aclImdb tarball" in err[0]
    assert not (tmp_path / "o").exists()
