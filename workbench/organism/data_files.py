"""Checksums and row counts of a seed's data files (`data/{source}.jsonl`): recorded in the seed's
manifest when it is built, verified before any analysis reads a file.

A data file cut at a line boundary still parses, so without this an analysis would quietly run on
the rows that are left. The manifest's `data_files` maps each source to its file, sha256 and row
count; a seed built before this existed has none, and reading it is an error that names the
one-time upgrade (`python -m workbench.organism upgrade DIR`), which records them only after
checking each file's row count against the count the build's filter report wrote (so a file
already cut is refused, not blessed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench.core.errors import ArtifactError, ChecksumError, unknown_name
from workbench.core.io import atomic_write_json, read_json, sha256_file

DATA_KEY = "data_files"


def data_path(seed_dir: str | os.PathLike, source: str) -> Path:
    return Path(seed_dir) / "data" / f"{source}.jsonl"


def count_rows(path: Path) -> int:
    """Non-blank lines (what `read_jsonl` turns into rows)."""
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def data_record(seed_dir: str | os.PathLike, source: str) -> dict[str, Any]:
    """{"file", "sha256", "rows"} of one source's data file, as the manifest records it."""
    path = data_path(seed_dir, source)
    return {"file": f"data/{source}.jsonl", "sha256": sha256_file(path), "rows": count_rows(path)}


def _upgrade_hint(seed_dir: Path) -> str:
    return (f"Record them once with: python -m workbench.organism upgrade {seed_dir.parent} (checks every file's row "
            "count against the build's filter report), or rebuild the organism with python -m workbench.organism.")


def verify_data_file(seed_dir: str | os.PathLike, manifest: dict[str, Any], source: str) -> Path:
    """The path of `source`'s data file after checking its sha256 (and so its row count) against
    the manifest: ChecksumError when it was cut or changed, ArtifactError when the manifest has no
    record (a seed built before data checksums: run the upgrade)."""
    seed_dir = Path(seed_dir)
    records = manifest.get(DATA_KEY)
    if not isinstance(records, dict):
        raise ArtifactError(f"{seed_dir / 'manifest.json'} records no checksums for its data files (built before they "
                            f"were recorded), so {data_path(seed_dir, source)} cannot be verified. {_upgrade_hint(seed_dir)}")
    if source not in records:
        raise unknown_name("data source", source, records, fix=f"Data files recorded in {seed_dir / 'manifest.json'}.")
    record, path = records[source], data_path(seed_dir, source)
    if not path.is_file():
        raise ArtifactError(f"Data file {path} listed in {seed_dir / 'manifest.json'} is missing. Rebuild the seed "
                            f"(python -m workbench.organism --out {seed_dir.parent}): its data stage writes it again.")
    got = sha256_file(path)
    if got != record.get("sha256"):
        rows = count_rows(path)
        raise ChecksumError(
            f"Data file {path} has {rows} rows (sha256 {got[:12]}...); the manifest recorded {record.get('rows')} rows "
            f"(sha256 {str(record.get('sha256'))[:12]}...). It was cut or changed after the build. Rebuild the seed "
            f"(python -m workbench.organism --out {seed_dir.parent}): its data stage writes the file again."
        )
    return path


def upgrade_seed(seed_dir: str | os.PathLike) -> bool:
    """Add `data_files` to a seed manifest that lacks it (True when it did). Each file's row count
    must equal the `kept` count of the build's filter report, else the seed is refused."""
    seed_dir = Path(seed_dir)
    manifest = read_json(seed_dir / "manifest.json")
    if isinstance(manifest.get(DATA_KEY), dict):
        return False
    filters = manifest.get("filter")
    if not isinstance(filters, dict) or not filters:
        raise ArtifactError(f"{seed_dir / 'manifest.json'} has no filter report to check its data files against; "
                            "rebuild the organism (python -m workbench.organism).")
    records = {}
    for source, report in sorted(filters.items()):
        path = data_path(seed_dir, source)
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; rebuild the organism (python -m workbench.organism).")
        record = data_record(seed_dir, source)
        if record["rows"] != report.get("kept"):
            raise ChecksumError(f"{path} has {record['rows']} rows but the build kept {report.get('kept')}: it was cut "
                                f"or changed. Not recording it; rebuild the seed (python -m workbench.organism --out "
                                f"{seed_dir.parent}).")
        records[source] = record
    atomic_write_json(seed_dir / "manifest.json", {**manifest, DATA_KEY: records})
    return True


def upgrade_organism(organism_dir: str | os.PathLike) -> list[Path]:
    """`upgrade_seed` on every seed*/ of an organism directory; the seeds it changed."""
    root = Path(organism_dir)
    seeds = sorted(p.parent for p in root.glob("seed*/manifest.json"))
    if not seeds:
        raise ArtifactError(f"No seed*/manifest.json under {root}; nothing to upgrade.")
    return [s for s in seeds if upgrade_seed(s)]
