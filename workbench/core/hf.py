"""Offline loading of local Hugging Face checkpoint directories into `TransformerBridge`s.

Only directories written by `save_pretrained` are accepted, never Hub ids, and the Hub is
switched off while booting, so nothing is downloaded. Remote code is never trusted unless
the caller asks for it (`trust_remote_code=False` by default). `Lineage.from_hf_dirs` and
`Lineage.copy_model` load through here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from workbench.core.errors import ArtifactError
from workbench.core.hf_config import check_hf_configs
from workbench.core.models import resolve_device


@contextlib.contextmanager
def hf_offline() -> Iterator[None]:
    """Forbid Hugging Face Hub requests inside the block (local directories only)."""
    import huggingface_hub.constants as hub_constants

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_const = hub_constants.HF_HUB_OFFLINE
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_const
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_hf_dir(name: str, path: str | os.PathLike) -> Path:
    """A local HF checkpoint directory (with config.json), resolved; never a Hub id."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ArtifactError(
            f"Model {name!r}: {str(path)!r} is not a local directory. Lineage.from_hf_dirs loads local "
            "checkpoints only, never Hub ids: download the model to a directory first "
            "(e.g. `huggingface-cli download ORG/MODEL --local-dir DIR`) and pass DIR."
        )
    if not (p / "config.json").is_file():
        raise ArtifactError(
            f"Model {name!r}: {p} has no config.json, so it is not a Hugging Face checkpoint "
            "directory. Pass the directory written by `save_pretrained`."
        )
    return p.resolve()


def boot_hf_dir(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> TransformerBridge:
    """Boot a bridge from a local HF checkpoint directory with the Hub switched off."""
    path = check_hf_dir(str(path), path)
    kwargs: dict[str, Any] = {"device": resolve_device(device), "trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    with hf_offline():
        return TransformerBridge.boot_transformers(str(path), **kwargs)


def boot_hf_dirs(
    dirs: Mapping[str, str | os.PathLike],
    *,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> tuple[dict[str, TransformerBridge], dict[str, dict[str, Any]]]:
    """Boot every named directory; returns (name -> bridge, name -> provenance meta).

    Every directory is checked, and their config.json files compared (`check_hf_configs`), before
    any model is booted, so a typo or a mixed architecture fails in seconds. The
    meta records the resolved directory (`hf_dir`, which `copy_hf_model` boots again) and
    whether remote code was trusted.
    """
    paths = {name: check_hf_dir(name, p) for name, p in dirs.items()}  # fail before booting any
    check_hf_configs(paths)  # one architecture, read from the config.json files before any weights load
    models = {
        name: boot_hf_dir(p, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        for name, p in paths.items()
    }
    meta = {name: {"hf_dir": str(p), "trust_remote_code": trust_remote_code} for name, p in paths.items()}
    return models, meta


def copy_hf_model(
    bridge: TransformerBridge,
    hf_dir: str | os.PathLike,
    *,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> TransformerBridge:
    """An independent copy of `bridge`: boot `hf_dir` again and load `bridge`'s current weights.

    Never `copy.deepcopy` a bridge: after a forward pass its copy's hooks point at the source.
    """
    new = boot_hf_dir(hf_dir, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    new.load_state_dict({k: v.detach().clone() for k, v in bridge.state_dict().items()}, strict=True)
    return new
