"""`--device-map auto|FILE.json` and `--max-memory DEVICE=SIZE ...`: where a command's Hugging Face
models load when they are larger than one device (`Lineage.from_hf_dirs(device_map=, max_memory=)`).

    --device-map auto                       one map for every model over the GPUs (the cpu without any)
    --device-map map.json                   an explicit {"model.layers.0": 0, ..., "lm_head": 1}
    --max-memory 0=70GiB 1=70GiB            the lineage's budget per device (GPU index, cuda:N or cpu)

Without --device-map the models load on --device, and --max-memory (its entry for that device)
only bounds the check that they fit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from workbench.analyses.alignment_config import parse_bytes
from workbench.cli.common import FlagTarget
from workbench.core.errors import ArtifactError, ConfigError
from workbench.core.hf_memory import DeviceMap, MaxMemory, check_device_map, device_key


def memory_entry(text: str) -> tuple[str | int, int]:
    """'0=70GiB', 'cuda:1=40GiB', 'cpu=64GiB' -> (accelerate's device key, bytes); an argparse type."""
    device, sep, size = text.partition("=")
    try:
        if not sep or not device.strip():
            raise ConfigError(f"--max-memory {text!r} is not DEVICE=SIZE; write e.g. 0=70GiB, cuda:1=40GiB or cpu=64GiB.")
        value = parse_bytes(size)
        if value is None:
            raise ConfigError(f"--max-memory {text!r}: give a size (e.g. 70GiB), not {size!r}.")
        return device_key(device.strip()), value
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_placement_flags(parser: FlagTarget) -> None:
    """The two flags (see the module doc)."""
    parser.add_argument("--device-map", metavar="auto|FILE.json",
                        help="Hugging Face models larger than one device: 'auto' (one map for every model, each GPU's "
                        "--max-memory or free memory shared by them) or a JSON file {module path: GPU index or \"cpu\"} "
                        "used for every model; --device is then unused (default: every model on --device)")
    parser.add_argument("--max-memory", nargs="+", type=memory_entry, metavar="DEVICE=SIZE",
                        help="memory the models may take per device, e.g. 0=70GiB 1=70GiB (or cpu=64GiB); checked before "
                        "any weight loads (default: the free memory now)")


def read_device_map(text: str) -> str | DeviceMap:
    """'auto', or the explicit map in a JSON file (checked: real devices only)."""
    if text == "auto":
        return "auto"
    path = Path(text)
    if not path.is_file():
        raise ArtifactError(f"--device-map {text!r} is neither 'auto' nor a JSON file. Write auto, or the path of a "
                            'file holding {"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": 1}.')
    try:
        raw: Any = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"--device-map {path}: not readable JSON ({e}). Fix the file.") from None
    return check_device_map(raw)


def placement_of(args: argparse.Namespace) -> tuple[str | DeviceMap | None, MaxMemory | None]:
    """(device_map, max_memory) from the flags, checked before any model loads."""
    device_map = read_device_map(args.device_map) if args.device_map else None
    entries = args.max_memory or []
    keys = [k for k, _ in entries]
    if len(set(map(str, keys))) != len(keys):
        raise ConfigError(f"--max-memory names a device twice: {' '.join(map(str, keys))}. Give each device once.")
    return device_map, (dict(entries) or None)


__all__ = ["add_placement_flags", "memory_entry", "placement_of", "read_device_map"]
