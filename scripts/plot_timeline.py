"""Per-frame speed of a shot made by ``face4d generate --timeline``, with its window joins and keys:
where a seam would show as a spike at a join (docs/timeline_speed.png).

    python scripts/plot_timeline.py OUT --timeline "..." --duration 10 [--hold 0.3] --png docs/timeline_speed.png

``OUT`` is the output folder of the generate command (its ``sample_000/landmarks.npz`` is read);
the timeline options must be the command's, so that the plan (``face4d.windows.plan_shot``) is
the one the shot was made with. Prints the speeds at the joins and their ratio to the speed elsewhere.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from face4d.data.interchange import load_sequences
from face4d.timeline import timeline_arg
from face4d.windows import plan_shot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--timeline", required=True)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--hold", type=float)
    parser.add_argument("--png", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = timeline_arg(args.timeline, fps=30, duration=args.duration, hold=args.hold)
    joins = plan_shot(timeline, 30).joins
    seq = load_sequences(args.out / "sample_000" / "landmarks.npz").sequence(0)
    speed = np.linalg.norm(np.diff(seq, axis=0), axis=-1).mean(-1)
    other = np.setdiff1d(np.arange(len(speed)), joins)
    print(f"{len(seq)} frames; speed at the {len(joins)} joins: mean {speed[joins].mean():.4f}, max "
          f"{speed[joins].max():.4f} cm/frame; elsewhere: mean {speed[other].mean():.4f}, max {speed.max():.4f}; "
          f"ratio {speed[joins].mean() / speed[other].mean():.2f}")
    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=100)
    ax.plot((np.arange(len(speed)) + 0.5) / 30, speed, lw=1.2, color="k", label="speed (mean landmark, cm/frame)")
    for j in joins:
        ax.axvline((j + 0.5) / 30, color="tab:orange", lw=0.8, alpha=0.7)
    ax.plot([], [], color="tab:orange", lw=0.8, label="window joins")
    for key, f in zip(timeline.keys, timeline.key_frames(30)):
        ax.annotate(key.condition.strip('"')[:14], (f / 30, speed.max() * 1.02), fontsize=7, ha="center")
    ax.set_xlabel("seconds")
    ax.set_ylim(0, speed.max() * 1.15)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
