"""core.provenance: config hashes that key caches, and the versions manifests record."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.core.provenance import as_dict, config_hash, package_versions


@dataclass
class Cfg:
    lr: float = 1e-3
    epochs: int = 3


def test_hash_is_stable_under_key_order():
    a = {"lr": 1e-3, "epochs": 3, "nested": {"x": 1, "y": [1, 2]}}
    b = {"nested": {"y": [1, 2], "x": 1}, "epochs": 3, "lr": 1e-3}
    assert config_hash(a) == config_hash(b)
    assert config_hash(a, include_versions=False) == config_hash(b, include_versions=False)


def test_hash_changes_with_any_value():
    base = {"lr": 1e-3, "epochs": 3}
    h = config_hash(base)
    assert config_hash({**base, "epochs": 4}) != h
    assert config_hash({**base, "lr": 2e-3}) != h
    assert config_hash({**base, "extra": None}) != h


def test_dataclass_and_dict_hash_alike():
    assert as_dict(Cfg()) == {"lr": 1e-3, "epochs": 3}
    assert config_hash(Cfg()) == config_hash({"epochs": 3, "lr": 1e-3})
    assert config_hash(Cfg(epochs=5)) != config_hash(Cfg())


def test_hash_length_and_versions_key():
    h = config_hash(Cfg(), length=8)
    assert len(h) == 8 and all(c in "0123456789abcdef" for c in h)
    assert config_hash(Cfg()).startswith(h)
    assert config_hash(Cfg(), include_versions=False) != config_hash(Cfg())  # versions are part of the key


def test_package_versions_names_every_package():
    versions = package_versions()
    for name in ("python", "torch", "transformer-lens", "safetensors", "workbench"):
        assert isinstance(versions[name], str) and versions[name]
