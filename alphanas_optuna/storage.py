"""Opening the Optuna storage of a study: URLs, SQLite files, heartbeats, and how URLs are shown.

Every command that reads or writes a study opens its storage here, so that a bad URL, a missing
folder or an unreachable database gives the same one-line :class:`~alphanas_optuna.errors.UsageError`
everywhere, before any model or data is loaded. Only Optuna (and SQLAlchemy under it) is imported,
inside the functions.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alphanas_optuna.errors import UsageError, first_line

if TYPE_CHECKING:
    import optuna

__all__ = [
    "check_writable",
    "check_storage_url",
    "default_storage",
    "existing_directions",
    "is_new_sqlite",
    "open_storage",
    "sqlite_file",
    "study_names",
    "without_password",
]

# Attempts to open an RDB storage whose schema another worker may be creating at the same moment.
_STORAGE_ATTEMPTS = 5


def default_storage(study_name: str) -> str:
    """``sqlite:///<study_name>.db``: a SQLite file in the current directory."""
    return f"sqlite:///{study_name}.db"


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///FILE`` URL (``None`` for another database or an in-memory one)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def is_new_sqlite(url: str) -> bool:
    """A SQLite URL whose file does not exist yet (so it holds no study)."""
    path = sqlite_file(url)
    return path is not None and not path.exists()


def check_storage_url(url: str) -> None:
    """Refuse, before anything is loaded, a storage that cannot work.

    Raises:
        UsageError: ``url`` is not a database URL, or names a SQLite file whose folder does not
            exist (SQLite would only say "unable to open database file"), or that is a folder.
    """
    if "://" not in url:
        raise UsageError(
            f"storage {url!r} is not a database URL; use sqlite:///FILE.db or "
            "postgresql://user:password@host/database"
        )
    path = sqlite_file(url)
    if path is None:
        return
    if path.is_dir():
        raise UsageError(
            f"storage {url}: {path} is a folder; name a file, e.g. {url.rstrip('/')}/study.db"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(
            f"storage {url}: the folder {folder} does not exist; create it or store the study "
            "elsewhere (sqlite:///FILE.db is a file in the current directory, "
            "sqlite:////abs/path/FILE.db an absolute path)"
        )


def check_writable(url: str) -> None:
    """Refuse a SQLite storage this user cannot write to, before anything is loaded.

    SQLite writes a journal next to the file, so both the file and its folder must be writable.

    Raises:
        UsageError: The file or its folder is read-only for this user; the message names it.
    """
    path = sqlite_file(url)
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(
            f"storage {url}: the SQLite file {path} is read-only for this user; make it writable "
            "(chmod u+w) or copy it somewhere you can write"
        )
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(
            f"storage {url}: the folder {folder} is read-only for this user, and SQLite writes its "
            "journal there; make the folder writable or store the study elsewhere"
        )


def open_storage(
    url: str,
    *,
    create: bool = True,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage | None:
    """An RDB storage, with heartbeats when ``heartbeat_interval`` is given.

    A killed worker's trial stops beating; after ``grace_period`` seconds any worker fails it and
    calls ``stale_trial_callback`` (``alphanas search`` enqueues its mask again).

    Returns:
        The storage, or ``None`` if ``create`` is false and opening it would create a SQLite file.

    Raises:
        UsageError: See :func:`check_storage_url`; or the database cannot be opened.
    """
    import optuna

    check_storage_url(url)
    if not create and is_new_sqlite(url):
        return None
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes write to one SQLite file: wait for the lock instead of failing.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    for attempt in range(_STORAGE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period if heartbeat_interval else None,
                    heartbeat_stale_trial_callback=stale_trial_callback
                    if heartbeat_interval
                    else None,
                )
        except Exception as exc:  # noqa: BLE001 - sqlalchemy's many connection errors
            # Workers started together race to create the schema of a new database: the loser
            # sees an IntegrityError ("UNIQUE constraint failed: alembic_version") or "table
            # already exists"; by the next attempt the schema is there.
            racing = type(exc).__name__ in ("IntegrityError", "OperationalError")
            if racing and attempt + 1 < _STORAGE_ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise UsageError(
                f"cannot open storage {without_password(url)}: "
                f"{first_line(exc, default_to_type=True)}"
            ) from exc
    raise AssertionError("unreachable")


def study_names(url: str) -> list[str]:
    """Names of the studies in the storage at ``url`` (none for a SQLite file not made yet)."""
    import optuna

    storage = open_storage(url, create=False)
    return optuna.get_all_study_names(storage) if storage is not None else []


def existing_directions(storage: optuna.storages.BaseStorage, name: str) -> list[str] | None:
    """The directions of study ``name`` in lower case, or ``None`` if there is no such study."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return [d.name.lower() for d in storage.get_study_directions(study_id)]


def without_password(url: str) -> str:
    """The storage URL with its password, if any, replaced by ``***`` (for printing)."""
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a database URL: print it as given
        return url
    if parsed.password is None:
        return url
    return parsed.render_as_string(hide_password=True)
