"""The project's user errors: problems with the user's input, not bugs.

A bad raw file, a bad parameter, missing data or a broken download is the user's to fix,
so the command line prints its message as one line (``Error: ...``) instead of a
traceback (``neural_eq_morphing.cli``); anything else is a bug and keeps its traceback.
Knows nothing of Kedro or click, so domain code may raise these.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors whose message tells the user what was wrong and what to do."""


def user_error_in(error: BaseException) -> UserError | None:
    """The first :class:`UserError` in ``error``'s chain of causes, or ``None``.

    Kedro and fsspec wrap the errors of datasets (``DatasetError: Failed while loading
    data ...``), so the user's error may be a cause rather than the error itself.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
