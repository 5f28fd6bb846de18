"""How a result's dataclass fields map to files: tensors apart, JSON for the rest, and back.

`ResultBase` (base.py) uses these so that no result writes its own save/load:

- tensor fields (a Tensor, or a dict, possibly nested, whose leaves are all tensors) go to one
  safetensors file; the JSON keeps the field's shape with each leaf replaced by its tensor's
  name in that file, so other tools can read which tensor is which;
- dataclass values (configs, table rows) are written as dicts and rebuilt from the field's type
  hint on load (the type's `from_dict` when it has one, else its constructor);
- JSON sorts keys, so the insertion order of every dict field (and the dicts nested in it) is
  recorded and restored: tables and figures keep their display order after a round trip.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Union

from torch import Tensor

from workbench.core.errors import ArtifactError, ConfigError

NAME_SEPARATOR = "|"  # joins the keys of a nested tensor dict into one tensor name


# --------------------------------------------------------------------------- tensors


def is_tensor_tree(value: Any) -> bool:
    """A Tensor, or a non-empty dict whose leaves (through nested dicts) are all tensors."""
    if isinstance(value, Tensor):
        return True
    return isinstance(value, dict) and bool(value) and all(is_tensor_tree(v) for v in value.values())


def flatten_tensors(value: Any, prefix: str, out: dict[str, Tensor]) -> Any:
    """Put the tensors of a tensor tree into `out` under names built from their keys; return the
    tree with each tensor replaced by its name (what the JSON records)."""
    if isinstance(value, Tensor):
        if prefix in out:
            raise ConfigError(f"Two tensors would share the name {prefix!r} in the result file; "
                              f"use keys without {NAME_SEPARATOR!r} in nested tensor dicts.")
        out[prefix] = value.detach().to("cpu").contiguous()
        return prefix
    return {k: flatten_tensors(v, f"{prefix}{NAME_SEPARATOR}{k}" if prefix else str(k), out) for k, v in value.items()}


def unflatten_tensors(skeleton: Any, tensors: dict[str, Tensor], where: str) -> Any:
    """The inverse of `flatten_tensors`: the tree with each name replaced by its tensor."""
    if isinstance(skeleton, str):
        if skeleton not in tensors:
            raise ArtifactError(f"{where}: tensor {skeleton!r} is missing from the tensor file. Re-run the analysis.")
        return tensors[skeleton]
    return {k: unflatten_tensors(v, tensors, where) for k, v in skeleton.items()}


# --------------------------------------------------------------------------- JSON values


def to_plain(value: Any, field: str) -> Any:
    """A JSON-ready copy: dataclasses as dicts, tuples as lists; tensors outside a tensor field are refused."""
    if isinstance(value, Tensor):
        raise ConfigError(f"Field {field!r} holds a tensor inside a list or a mixed dict; keep tensors in a Tensor "
                          "field or a dict (of dicts) of tensors only, so they go to the tensor file.")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name), field) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v, field) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, field) for v in value]
    return value


def rebuild(value: Any, hint: Any) -> Any:
    """Turn a JSON value back into the field's type: dataclasses (via `from_dict` when present),
    and lists, tuples, dicts and optionals of them; anything else is returned as it is."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        chosen = next((a for a in options if _fits(value, a)), options[0] if len(options) == 1 else None)
        return rebuild(value, chosen) if chosen is not None else value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        from_dict = getattr(hint, "from_dict", None)
        if callable(from_dict):
            return from_dict(value)
        hints = typing.get_type_hints(hint)
        return hint(**{k: rebuild(v, hints.get(k, Any)) for k, v in value.items()})
    if origin is list and isinstance(value, list):
        return [rebuild(v, args[0] if args else Any) for v in value]
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(rebuild(v, args[0]) for v in value)
        return tuple(rebuild(v, a) for v, a in zip(value, args)) if args else tuple(value)
    if origin is dict and isinstance(value, dict):
        return {k: rebuild(v, args[1] if len(args) == 2 else Any) for k, v in value.items()}
    return value


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value can stand for `hint` (picks the member of a union to rebuild with)."""
    origin = typing.get_origin(hint) or hint
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if origin in (list, tuple):
        return isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(origin, type) and isinstance(value, origin)


# --------------------------------------------------------------------------- key order


def key_order(value: Any) -> dict[str, Any] | None:
    """The insertion order of a dict and of the dicts nested in it, where JSON's sorting would lose it."""
    if not isinstance(value, dict):
        return None
    nested = {str(k): order for k, v in value.items() if (order := key_order(v)) is not None}
    keys = [str(k) for k in value]
    if keys == sorted(keys) and not nested:
        return None
    return {"keys": keys, "nested": nested}


def restore_order(value: Any, order: dict[str, Any] | None) -> Any:
    """`value` with the key order `key_order` recorded (keys it does not name keep their place at the end)."""
    if order is None or not isinstance(value, dict):
        return value
    out = {k: value[k] for k in order["keys"] if k in value}
    out.update((k, v) for k, v in value.items() if k not in out)
    for k, sub in order["nested"].items():
        if k in out:
            out[k] = restore_order(out[k], sub)
    return out
