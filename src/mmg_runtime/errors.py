"""Errors shared by the export tool and the deploy-side runtime."""


class UserError(Exception):
    """A problem with the user's input (a file, a flag, an artifact directory).

    The CLI prints its message as one line, without a traceback: say which file or argument
    is wrong and what was expected.
    """


class UsageError(UserError):
    """A command line whose options do not go together (exit status 2, like argparse's own errors)."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of ``error``'s message, at most ``limit`` characters (its type's name when empty)."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
