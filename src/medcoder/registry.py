"""One way to register things: an explicit, read-only table from a config name to a class or
function.

Why one small class: scorers, calibrators, corpus loaders and routing rules were once dispatched
three ways (a decorator filled by an import side effect, a dict, an if/elif chain). A
:class:`Registry` is built from a literal table in the module that owns the family, so adding an
entry is one visible line there, nothing registers itself by being imported, and an unknown name
is always the same one-line :class:`~medcoder.errors.ConfigError` naming the config field, the
value and the valid names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from medcoder.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only name -> entry table for one family (``field`` is the config key that names an
    entry, used in errors: e.g. ``calibration.method``)."""

    def __init__(self, field: str, entries: Mapping[str, T]) -> None:
        self.field = field
        self._entries: dict[str, T] = dict(entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, name: Any) -> T:
        """The entry called ``name``; an unknown name is a one-line ``ConfigError``."""
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(f"{self.field}={name!r} is not known",
                              hint=f"use one of: {', '.join(self._entries)}")
        return self._entries[name]

    def with_entry(self, name: str, entry: T) -> Registry[T]:
        """A copy with one more entry (tests and plug-ins extend a table without mutating the
        shipped one)."""
        return Registry(self.field, {**self._entries, name: entry})

    def __repr__(self) -> str:
        return f"Registry({self.field!r}, {sorted(self._entries)})"
