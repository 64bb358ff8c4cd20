"""Exceptions with messages meant for users (CLI prints them without a traceback)."""


class SpecExitError(Exception):
    """Base class: a problem the user can fix (bad input, wrong checkpoint, missing token)."""


class CheckpointError(SpecExitError):
    """A draft or target checkpoint does not match what was asked for."""


class TokenizerError(SpecExitError):
    """The tokenizer lacks a token the requested mode needs."""


class ConfigError(SpecExitError):
    """An invalid generation / exit-policy setting."""


def corrupt_weights(path: object, reason: object) -> CheckpointError:
    """The error for a weights file that cannot be read (truncated download, garbled header)."""
    return CheckpointError(
        f"{path}: not a readable safetensors file ({reason}); it is truncated or corrupt, copy or download it again"
    )
