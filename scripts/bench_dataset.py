"""Time `face4d dataset build` end to end (a fresh process, as a user runs it) and record it in docs/.

Usage: python scripts/bench_dataset.py [--sequences 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "dataset_benchmark.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for variable in (False, True):
        times = []
        for _ in range(args.repeats):
            tmp = Path(tempfile.mkdtemp())
            cmd = [sys.executable, "-m", "face4d.cli", "dataset", "build", "--out", str(tmp / "d"),
                   "--sequences", str(args.sequences), "--quiet"] + (["--variable-length"] if variable else [])
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
            size = sum(p.stat().st_size for p in (tmp / "d").iterdir()) / 2**20
            shutil.rmtree(tmp)
        rows.append((variable, statistics.median(times), min(times), size))
        print(f"variable_length={variable}: median {rows[-1][1]:.2f} s, best {rows[-1][2]:.2f} s, {size:.0f} MiB")
    command = f"python scripts/bench_dataset.py --sequences {args.sequences} --repeats {args.repeats}"
    lines = [
        "# Dataset build speed", "",
        f"Made by `{command}` on {platform.machine()} with {os.cpu_count()} CPU cores "
        f"(Python {platform.python_version()}). Each run is a fresh `face4d dataset build` process "
        "(start-up, head-model load, generation and writing the shards included).", "",
        "| sequences | lengths | median wall time (s) | best (s) | size on disk (MiB) |",
        "|---|---|---|---|---|",
    ]
    for variable, median, best, size in rows:
        kind = "35-45 (`--variable-length`)" if variable else "40"
        lines.append(f"| {args.sequences} | {kind} | {median:.2f} | {best:.2f} | {size:.0f} |")
    lines.append("")
    lines.append("Target (issue: Foundation): under 120 s for 2000 sequences on 2 cores.")
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
