"""The faults a user can fix. Anything else is a bug or the machine's limit and keeps its own type and traceback."""


class InputError(ValueError):
    """Bad input the user can fix (a missing folder, an unreachable hub, malformed data, a bad flag). The message says
    what to do; a command prints it as one line and exits with code 2."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """A library's message as one line: its first."""
    return (str(error).strip().splitlines() or [""])[0][:limit]
