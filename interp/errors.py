"""The one exception type for errors a user can cause."""


class InterpError(Exception):
    """Bad input from the user: a wrong path, a malformed line, a layer or round out of range.

    The message says what was wrong and what to do. The CLI prints it as one line on stderr
    and exits with code 2.
    """
