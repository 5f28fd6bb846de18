"""One exception family for the workbench: every message names the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ConfigError(WorkbenchError, ValueError):
    """A config field, CLI flag or argument has a value the workbench cannot use."""


class UnknownNameError(ConfigError, KeyError):
    """A name (hook, target, role, preset, parameter group) that does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0]) if self.args else ""


class DataError(WorkbenchError, ValueError):
    """Input data that cannot be used: empty, out of vocabulary, too long, malformed."""


class IncompatibleModelsError(WorkbenchError, ValueError):
    """Models that should share architecture, vocabulary, device or dtype do not."""


class ArtifactError(WorkbenchError, OSError):
    """A file or artifact directory that is missing, foreign, of an unknown schema, or unsafe."""


class ChecksumError(ArtifactError):
    """A file whose sha256 does not match the one its manifest recorded."""


class NumericsError(WorkbenchError, ValueError):
    """NaN or inf in weights, activations or scores: named by model and parameter group or hook."""


class WorkerError(WorkbenchError, RuntimeError):
    """A worker process of a parallel build died or failed with an unexpected error."""


class LockError(ArtifactError):
    """Another writer holds the lock on an artifact."""


class SchemaError(ArtifactError, DataError):
    """A file or row whose content breaks its schema (a missing field, a wrong type, a value out of
    range, a future schema version): the message names the file, the field, the value and the fix.
    Both an ArtifactError (a file) and a DataError (a data row), so callers catching either see it."""


def close_matches(name: str, valid: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to `name`, best first (for 'did you mean' messages)."""
    valid = list(valid)
    matches = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    if not matches:  # fall back to names sharing a component, e.g. the same layer index
        parts = set(name.replace(".", " ").split())
        matches = [v for v in valid if parts & set(v.replace(".", " ").split())][:n]
    return matches


def unknown_name(kind: str, name: str, valid: Iterable[str], fix: str = "") -> UnknownNameError:
    """Build an UnknownNameError that lists the closest valid names."""
    valid = sorted(set(valid))
    near = close_matches(name, valid)
    hint = f" Closest valid {kind} names: {', '.join(near)}." if near else ""
    listing = "" if len(valid) > 30 else f" Valid: {', '.join(valid)}."
    return UnknownNameError(f"Unknown {kind} {name!r}.{hint}{listing}{(' ' + fix) if fix else ''}")


def expect_type(value: object, kind: type | tuple[type, ...], what: str, fix: str = "") -> None:
    """Raise a ConfigError naming `what` when `value` is not a `kind` (arguments swapped or mistyped)."""
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        article = "an" if names[0].lower() in "aeiou" else "a"
        raise ConfigError(f"{what} must be {article} {names}; got {type(value).__name__}.{(' ' + fix) if fix else ''}")
