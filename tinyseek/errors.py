"""The one exception type for bad user input, and the "did you mean" its messages offer.

Anything a user can get wrong (a data file, a config field, a checkpoint, a request) raises
`TinyseekError` with a one-line message naming the file, line, field or tensor. The command line
prints that line and exits 2; no traceback for a user's mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TinyseekError(Exception):
    """Bad input from a user; the message is one line that names what was wrong."""


def unknown(what: str, name: str, known: Iterable[str], show: str = "{}", of: str = "", hint: str = "") -> str:
    """`unknown field 'max_step' for PretrainConfig; did you mean 'max_steps'?` when a known name is close (a typo),
    else the known names listed, or `hint` (where to find them) when given. `show` formats a name as the user
    writes it (`--{}` for a flag); `of` follows the name ("for PretrainConfig")."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    head = f"unknown {what} {show.format(name)!r}{' ' + of if of else ''}"
    if close:
        return f"{head}; did you mean {show.format(close[0])!r}?"
    if hint:
        return f"{head} ({hint})"
    return f"{head} (known: {', '.join(show.format(k) for k in sorted(known))})"
