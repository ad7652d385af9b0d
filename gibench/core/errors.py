"""Exceptions for user-facing errors.

Every error a user can cause (a bad suite file, an unknown plugin, a missing dataset, a malformed submission) is a
:class:`GibenchError`. Its message says what is wrong and how to fix it; the CLI prints it without a traceback and
exits non-zero. Programming errors inside gibench stay ordinary exceptions.
"""

from __future__ import annotations

__all__ = [
    "ConfigError", "DataError", "GibenchError", "PluginLoadError", "SubmissionError", "TrainingError",
    "UnknownPluginError",
]


class GibenchError(Exception):
    """Base class of every user-facing gibench error."""


class ConfigError(GibenchError, ValueError):
    """A suite file, a plugin's hyper-parameters or a CLI option is invalid."""


class UnknownPluginError(ConfigError, KeyError):
    """A regularizer, evaluator, dataset or backbone name that no installed plugin provides."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PluginLoadError(GibenchError):
    """A plugin's entry point could not be imported, or two distributions claim the same name."""


class DataError(GibenchError):
    """A dataset is missing on disk or malformed."""


class SubmissionError(GibenchError):
    """A submission folder is missing files or does not match the schema."""


class TrainingError(GibenchError):
    """Training stopped for a recorded reason (for example a non-finite loss)."""
