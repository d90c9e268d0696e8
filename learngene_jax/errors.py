"""Errors that reach the user as one line: what is wrong and how to fix it.

Command-line tools catch `UserError` and print its message instead of a traceback.
"""


class UserError(Exception):
    """A problem with the user's input (config, checkpoint, gene, data) with a one-line fix."""


class GeneError(UserError):
    """A gene that is missing, corrupt, or does not fit what it is used for."""


class ConversionError(UserError):
    """A checkpoint that does not map onto the target layout (lists every bad key)."""


class ConfigError(UserError):
    """A config key or value that does not exist or does not fit."""


class DataError(UserError):
    """A dataset or data_dir that is missing or unreadable."""


def fail(exc_type: type[UserError], message: str) -> None:
    """Raise `exc_type(message)` with the message squashed onto one line."""
    raise exc_type(" ".join(str(message).split()))
