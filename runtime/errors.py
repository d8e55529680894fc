"""Errors shared by the export tool and the deploy-side runtime."""


class UserError(Exception):
    """A problem with the user's input (a file, a flag, an artifact directory).

    The CLI prints its message as one line, without a traceback: say which file or argument
    is wrong and what was expected.
    """
