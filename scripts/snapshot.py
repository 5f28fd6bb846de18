"""Record every figure the workbench's entry points print and save, and compare two records.

The redesign issue asks that every figure come out the same after a structural change. This
script runs the main job, `compare`, `localise`, `alignment` and `screening` on one organism,
and records per command:

- the numbers printed on stdout, in order (paths normalised away);
- every finite number in every JSON file the command wrote (versions, checksums and timings
  left out), as a sorted list, so a layout change that moves a number keeps it;
- every tensor in every safetensors file, as (shape, sum, sum of |x|).

`compare` then checks that stdout numbers match one for one and that every saved number and
tensor of the old record is found in the new one (within tolerance): files may gain numbers,
they may not lose or change one.

    python scripts/snapshot.py record before.json --organism artifacts/cache/eq-tiny
    ... change the code ...
    python scripts/snapshot.py record after.json --organism artifacts/cache/eq-tiny
    python scripts/snapshot.py compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SKIP_KEYS = {"versions", "sha256", "timings", "elapsed_s", "seconds", "wall_s", "time_s", "plan_hash", "config_hash",
             "inputs_sha256", "weights_sha256", "file"}
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def commands(organism: str, out: str, seeds: list[int]) -> dict[str, list[str]]:
    s = [str(x) for x in seeds]
    py = [sys.executable, "-m"]
    return {
        "probe": [*py, "workbench.probe", "--organism", organism, "--seed", s[0], "--out", f"{out}/report", "--quiet"],
        "compare": [*py, "workbench.compare", "--organism", organism, "--seeds", *s, "--bootstrap", "100",
                    "--out", f"{out}/compare", "--quiet"],
        "localise": [*py, "workbench.localise", organism, "--out", f"{out}/localise"],
        "alignment": [*py, "workbench.alignment", "--organism", organism, "--seeds", *s, "--max-rows", "300",
                      "--out", f"{out}/alignment", "--quiet"],
        "screening": [*py, "workbench.screening", "--organism", organism, "--seeds", *s, "--out", f"{out}/screening",
                      "--quiet"],
    }


def numbers_in(obj, out: list[float]) -> None:
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, (int, float)):
        if math.isfinite(obj):
            out.append(float(obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k not in SKIP_KEYS:
                numbers_in(v, out)
    elif isinstance(obj, list):
        for v in obj:
            numbers_in(v, out)


def tensor_stats(path: Path) -> list[list]:
    from safetensors.torch import load_file

    stats = []
    for t in load_file(str(path)).values():
        t = t.double()
        stats.append([list(t.shape), float(t.sum()), float(t.abs().sum())])
    return stats


def record(args: argparse.Namespace) -> int:
    organism = str(Path(args.organism).resolve())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    snapshot: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in commands(organism, tmp, args.seeds).items():
            if args.only and name not in args.only:
                continue
            print(f"running {name}", file=sys.stderr, flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=args.cwd)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                raise SystemExit(f"{name} exited {proc.returncode}")
            stdout = proc.stdout.replace(tmp, "<OUT>").replace(organism, "<ORGANISM>")
            lines = [ln for ln in stdout.splitlines() if not ln.startswith("wrote ")]
            stdout_numbers = [float(x) for ln in lines for x in NUMBER.findall(re.sub(r"<[A-Z]+>\S*", "", ln))]
            saved: list[float] = []
            tensors: list[list] = []
            root = Path(tmp) / name if name != "probe" else Path(tmp) / "report"
            for path in sorted(root.rglob("*")):
                if path.suffix == ".json" and "activations" not in path.parts:
                    numbers_in(json.loads(path.read_text()), saved)
                elif path.suffix == ".safetensors" and "activations" not in path.parts:
                    tensors += tensor_stats(path)
            snapshot[name] = {"stdout": lines, "stdout_numbers": stdout_numbers, "saved_numbers": sorted(saved),
                              "tensors": sorted(tensors, key=lambda t: (t[0], t[1]))}
    Path(args.path).write_text(json.dumps(snapshot, indent=1))
    print(f"wrote {args.path}: " + ", ".join(f"{k} {len(v['saved_numbers'])} numbers" for k, v in snapshot.items()))
    return 0


def close(a: float, b: float, rtol: float, atol: float) -> bool:
    return abs(a - b) <= atol + rtol * max(abs(a), abs(b))


def missing(before: list[float], after: list[float], rtol: float, atol: float) -> list[float]:
    """Numbers of `before` with no partner in `after` (each partner used once; both sorted)."""
    pool = sorted(after)
    used = [False] * len(pool)
    lost = []
    j0 = 0
    for x in sorted(before):
        while j0 < len(pool) and pool[j0] < x and not close(pool[j0], x, rtol, atol):
            j0 += 1
        j = j0
        while j < len(pool) and (used[j] or (pool[j] < x and not close(pool[j], x, rtol, atol))):
            j += 1
        if j < len(pool) and close(pool[j], x, rtol, atol):
            used[j] = True
        else:
            lost.append(x)
    return lost


def compare(args: argparse.Namespace) -> int:
    before, after = json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text())
    ok = True
    for name, b in before.items():
        if name not in after:
            print(f"{name}: missing from {args.after}")
            ok = False
            continue
        a = after[name]
        sb, sa = b["stdout_numbers"], a["stdout_numbers"]
        bad = [(i, x, y) for i, (x, y) in enumerate(zip(sb, sa)) if not close(x, y, args.rtol, args.atol)]
        if len(sb) != len(sa) or bad:
            ok = False
            print(f"{name}: stdout differs ({len(sb)} vs {len(sa)} numbers; first differences {bad[:5]})")
        lost = missing(b["saved_numbers"], a["saved_numbers"], args.rtol, args.atol)
        if lost:
            ok = False
            print(f"{name}: {len(lost)} of {len(b['saved_numbers'])} saved numbers lost or changed, e.g. {lost[:8]}")
        tb = [tuple([tuple(s), x]) for s, x, _ in b["tensors"]]
        ta = [tuple([tuple(s), x]) for s, x, _ in a["tensors"]]
        lost_t = [t for t in tb if not any(u[0] == t[0] and close(u[1], t[1], args.rtol, args.atol) for u in ta)]
        if lost_t:
            ok = False
            print(f"{name}: {len(lost_t)} of {len(tb)} tensors lost or changed, e.g. {lost_t[:3]}")
        if not (lost or lost_t) and len(sb) == len(sa) and not bad:
            print(f"{name}: equal ({len(sb)} printed numbers, {len(b['saved_numbers'])} saved numbers, "
                  f"{len(tb)} tensors; {len(a['saved_numbers']) - len(b['saved_numbers'])} saved numbers added)")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("record", help="run the entry points and record their figures")
    r.add_argument("path")
    r.add_argument("--organism", default="artifacts/cache/eq-tiny")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--only", nargs="+", help="record only these commands")
    r.add_argument("--cwd", default=str(Path(__file__).resolve().parents[1]))
    c = sub.add_parser("compare", help="check that every figure of BEFORE is in AFTER")
    c.add_argument("before")
    c.add_argument("after")
    c.add_argument("--rtol", type=float, default=1e-6)
    c.add_argument("--atol", type=float, default=1e-9)
    args = p.parse_args(argv)
    return record(args) if args.verb == "record" else compare(args)


if __name__ == "__main__":
    raise SystemExit(main())
