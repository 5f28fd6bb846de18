"""Parameter-space mappings computed key by key when read, never held whole.

A direction (the teacher's delta, a random control, a direction with the unembedding masked) is
a mapping over the Lineage's clean keys. Held as a dict it costs one model's bytes per direction;
the alignment section scores several at once (about 4x a model's bytes at 7B: 60 GB in bf16).
`LazyParams` is the same mapping with each value made on demand and dropped after use, so a
per-group pass that reads one key at a time holds one key's worth per direction. `dict(lazy)`
materialises it where a whole dict is needed (a `torch.func.jvp` tangent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor


class LazyParams(Mapping[str, Tensor]):
    """key -> `make(key)` on every read (not cached), over the keys and shapes of `shapes`.

    >>> lazy = LazyParams({"w": torch.Size([2])}, lambda k: torch.ones(2))
    >>> list(lazy), lazy.shape_of("w"), lazy["w"].tolist()
    (['w'], torch.Size([2]), [1.0, 1.0])
    """

    def __init__(self, shapes: Mapping[str, torch.Size], make: Callable[[str], Tensor]):
        self._shapes = {k: torch.Size(s) for k, s in shapes.items()}
        self._make = make

    def __getitem__(self, key: str) -> Tensor:
        if key not in self._shapes:
            raise KeyError(key)
        return self._make(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def __contains__(self, key: object) -> bool:
        return key in self._shapes

    def shape_of(self, key: str) -> torch.Size:
        """The key's shape, without computing its value."""
        return self._shapes[key]


def shape_of(direction: Mapping[str, Tensor], key: str) -> torch.Size:
    """A direction's shape at `key`, without computing a lazy value."""
    return direction.shape_of(key) if isinstance(direction, LazyParams) else direction[key].shape


def shapes_of(direction: Mapping[str, Tensor]) -> dict[str, torch.Size]:
    """Every key's shape, without computing lazy values."""
    return {k: shape_of(direction, k) for k in direction}




class ReadCache:
    """Values read from lazy mappings, kept while they fit in `max_bytes` (None: no limit).

    The per-group pass reads each direction's keys once per `vmap(grad)` call, in the same order
    every call. A cache as big as the memory budget makes a small model's lazy directions cost one
    computation each (every key stays); a large model's stay bounded. It fills and then stops
    (no eviction): with reads that cycle over more than it holds, least-recently-used eviction
    would miss every time, while keeping the first entries hits on those at every cycle.
    Plain dicts pass through untouched: their values are held anyway."""

    def __init__(self, max_bytes: int | None):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._store: dict[tuple[str, str], Tensor] = {}

    def view(self, name: str, mapping: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """`mapping` read through the cache under `name` (a LazyParams), or itself (a plain dict)."""
        if not isinstance(mapping, LazyParams):
            return mapping
        return LazyParams(shapes_of(mapping), lambda k: self._read(name, k, mapping))

    def _read(self, name: str, key: str, mapping: Mapping[str, Tensor]) -> Tensor:
        slot = (name, key)
        if slot in self._store:
            return self._store[slot]
        value = mapping[key]
        size = value.numel() * value.element_size()
        if self.max_bytes is None or self.bytes + size <= self.max_bytes:
            self._store[slot] = value
            self.bytes += size
        return value


__all__ = ["LazyParams", "ReadCache", "shape_of", "shapes_of"]
