"""The package's error types and how an error becomes one line for the user.

Every bad input (study file, data, model, storage, arguments) ends as a :class:`UsageError`, which
the ``alphanas`` command prints as one line on stderr before exiting with status 2. This module
imports nothing heavy, so every stage can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["HubUnreachableError", "UsageError", "call_checked", "first_line", "usage_errors"]

T = TypeVar("T")


class UsageError(Exception):
    """A bad input: the CLI prints the message as one line and exits with status 2."""


class HubUnreachableError(ValueError, OSError):
    """A model or dataset named by a Hugging Face Hub id could not be fetched (the Hub is
    unreachable from here, or has no such repository); the message says how to use local files.

    A bad input (:class:`ValueError`, as every other) that the network causes (:class:`OSError`,
    as ``from_pretrained``'s own errors)."""


def first_line(exc: BaseException, *, default_to_type: bool = False) -> str:
    """The first non-empty line of ``str(exc)`` (libraries put tracebacks and hints below it).

    With ``default_to_type``, an exception without a message gives its type's name instead of
    ``""``.
    """
    for line in str(exc).strip().splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__ if default_to_type else ""


@contextmanager
def usage_errors() -> Iterator[None]:
    """Turn the errors of a bad input raised inside the block into :class:`UsageError`.

    Bad inputs surface as :class:`ValueError` (the stages' own errors, such as
    :class:`alphanas_optuna.data.DataError` and :class:`HubUnreachableError`, derive from it);
    anything else is a bug and keeps its traceback.
    """
    try:
        yield
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def call_checked(func: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``func(*args, **kwargs)`` inside :func:`usage_errors`."""
    with usage_errors():
        return func(*args, **kwargs)
