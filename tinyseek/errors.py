"""The one exception type for bad user input.

Anything a user can get wrong (a data file, a config field, a checkpoint, a request) raises
`TinyseekError` with a one-line message naming the file, line, field or tensor. The command line
prints that line and exits 2; no traceback for a user's mistake.
"""


class TinyseekError(Exception):
    """Bad input from a user; the message is one line that names what was wrong."""
