"""The one error hierarchy of synthgen.

Every error a user can trigger is a :class:`SynthgenError`. Each subclass also subclasses the
built-in exception it refines (``ValueError``, ``FileNotFoundError``...), so callers that catch the
built-ins keep working. Messages say what was expected, what was found and, where it helps, how to
fix it: "Expected X. Got Y instead."
"""

from __future__ import annotations


class SynthgenError(Exception):
    """Base class of every error synthgen raises on purpose."""


class ConfigError(SynthgenError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class SchemaError(SynthgenError, ValueError):
    """A label schema is malformed, unknown, or does not match the data."""


class LabelValueError(SchemaError):
    """A label map holds a value that its schema does not define."""


class StoreError(SynthgenError):
    """A synthgen Zarr store cannot be created, opened or read."""


class StoreExistsError(StoreError, FileExistsError):
    """The output store already exists and overwriting was not asked for."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No store at the given URL."""


class StoreFormatError(StoreError, ValueError):
    """The store is not a synthgen store, or is of an unsupported format version."""


class StoreLockedError(StoreError):
    """Another writer holds the store's lease."""


class CorruptShardError(StoreError):
    """A shard recorded as complete is missing, altered or cannot be decoded."""


class IncompleteShardError(StoreError, KeyError):
    """A sample was asked for that lies in a shard not recorded as complete."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it plain
        return str(self.args[0]) if self.args else ""


class InputDataError(SynthgenError, ValueError):
    """An input file or folder is missing, corrupt, truncated or inconsistent."""


class CheckpointError(SynthgenError, ValueError):
    """A checkpoint is malformed or does not match what it is used with."""


class KernelInputError(SynthgenError, ValueError):
    """An array given to a kernel has the wrong shape, dtype or values (use LabelValueError for labels)."""


class GateError(SynthgenError, RuntimeError):
    """Too many samples gave up the plausibility gate: the label source draws implausible maps."""


class TrainingDivergedError(SynthgenError, RuntimeError):
    """A training loss became NaN or infinite; nothing of that step is saved."""


class BackendUnavailableError(SynthgenError, RuntimeError):
    """An inference backend or device is not available on this machine."""


class ExportError(SynthgenError, RuntimeError):
    """An exported graph or engine could not be built, or does not compute what the model computes."""
