"""FLAME fitting speed and landmark error on generated sequences, written into docs/results.md.

    OMP_NUM_THREADS=1 python scripts/bench_flame.py                         # no FLAME needed (see below)
    OMP_NUM_THREADS=1 python scripts/bench_flame.py --flame-model ~/flame   # your own FLAME model

One 40-frame sequence per expression label is generated on the default head (``Pipeline.generate``'s
``start="target"`` path), and FLAME is fitted to each (``face4d.flame.fit_flame``, default config).
FLAME itself may not be shipped or downloaded here, so without ``--flame-model`` the model is the
**ICT head in FLAME's layout**: its mean face as ``v_template`` (metres), its 100 identity shapes as
the shape columns and its 53 expression shapes as the expression columns, FLAME's five joints
regressed from a few vertices each, every vertex skinned to the neck (the head's expression shapes
already open the jaw), no pose correctives, and the head's 68 landmark vertices as the embedding,
with a 79-row jaw-line table of each contour vertex's neighbouring triangles so that the fit runs
FLAME's yaw look-up too. It has the same number of coefficients as the default fit takes from FLAME
(100 shape, 50 expression) and almost three times FLAME's vertices, so its timings do not flatter.
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from face4d.data.labels import LABELS
from face4d.decoder.retarget import sequence_frames
from face4d.eval.report import markdown_table, update_section
from face4d.flame import CM_PER_M, NUM_JOINTS, FlameFitConfig, FlameLandmarks, FlameModel, ReducedFlame, fit_flame
from face4d.threads import torch_threads
from face4d.pipeline import Pipeline
from meshops.head import HeadModel

SECTION = "flame"
TARGET_S = 5.0
PAPER_S = 470.0
YAW_ROWS = 79


def ict_in_flame_layout(head: HeadModel) -> FlameModel:
    """The ICT head as a FLAME model (module docstring)."""
    count = head.num_vertices
    shapedirs = np.concatenate([head.identity_basis, head.expression_basis]).transpose(1, 2, 0) / CM_PER_M
    neutral = head.neutral.astype(np.float64) / CM_PER_M
    marks = neutral[head.landmark_ids]
    anchors = [marks[8] - [0, 0.04, 0.06], marks[8] - [0, 0.02, 0.05], marks[8] - [0, 0, 0.04],
               marks[36:42].mean(0) - [0, 0, 0.012], marks[42:48].mean(0) - [0, 0, 0.012]]
    regressor = np.zeros((NUM_JOINTS, count))
    for j, point in enumerate(anchors):
        regressor[j, np.argsort(((neutral - point) ** 2).sum(1))[:8]] = 1 / 8
    weights = np.zeros((count, NUM_JOINTS))
    weights[:, 1] = 1.0
    faces = head.faces.astype(np.int64)
    ring = [np.nonzero((faces == vid).any(1))[0] for vid in head.landmark_ids[:17]]
    dynamic = np.stack([[r[k % len(r)] for r in ring] for k in range(YAW_ROWS)])
    corner = (faces[dynamic] == head.landmark_ids[:17][None, :, None]).astype(np.float64)  # weight 1 on it
    static = FlameLandmarks.from_arrays({"vertex_ids": head.landmark_ids}, faces)
    embedding = FlameLandmarks(static.face_idx[17:], static.b_coords[17:], dynamic, corner)
    return FlameModel(neutral, shapedirs, head.num_identity, np.zeros(((NUM_JOINTS - 1) * 9, count * 3)),
                      regressor, weights, np.array([-1, 0, 1, 1, 1]), faces, embedding,
                      "the ICT head in FLAME's layout")


def expression_floor(head: HeadModel, frames: np.ndarray, neutral: int) -> float:
    """Mean landmark distance (mm) left by the least-squares fit of the head's expression shapes to
    the displacements of ``frames`` (F, 68, 3) cm from frame ``neutral``, rigid motion aside."""
    basis = head.landmark_expression_basis.reshape(head.num_expressions, -1).T.astype(np.float64)
    moves = (frames - frames[neutral]).reshape(len(frames), -1).T
    weights, *_ = np.linalg.lstsq(basis, moves, rcond=None)
    left = (basis @ weights - moves).T.reshape(frames.shape)
    return float(np.linalg.norm(left, axis=-1).mean() * 10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flame-model", type=Path, help="a FLAME model folder or file (default: the ICT head "
                                                         "in FLAME's layout)")
    parser.add_argument("--trust-pickle", action="store_true", help="load FLAME's .pkl/.npy originals")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--save-model", type=Path, help="only write the ICT head in FLAME's layout as "
                        "SAVE_MODEL/FLAME_NEUTRAL.npz (a --flame-model folder to try face4d generate with)")
    args = parser.parse_args(argv)
    if args.save_model is not None:
        path = ict_in_flame_layout(HeadModel.load()).save(args.save_model / "FLAME_NEUTRAL.npz")
        print(f"wrote {path}")
        return 0
    load_before = os.getloadavg()

    head = HeadModel.load()
    if args.flame_model is None:
        model = ict_in_flame_layout(head)
    else:
        model = FlameModel.load(args.flame_model, args.trust_pickle)
    pipe = Pipeline(head=head)
    labels = [label.name for label in LABELS]
    print(f"generating {len(labels)} sequences of {args.frames} frames", flush=True)
    with torch_threads(1):  # as face4d demo: small models, one thread is fastest
        generated = [pipe.generate(label=name, frames=args.frames, seed=args.seed).landmarks for name in labels]
    seqs = [sequence_frames(one) for one in generated]  # (frames, neutral frame index)

    config = FlameFitConfig()
    with torch_threads(1):
        start = time.perf_counter()
        fit_flame(model, *seqs[0], config=config)  # the first fit in a process also pays torch's lazy set-up
        first_s = time.perf_counter() - start
        rows, seconds, cpu_seconds, errors = [], [], [], []
        for name, frames in zip(labels, seqs):
            cpu = time.process_time()
            fit = fit_flame(model, *frames, config=config)
            cpu_seconds.append(time.process_time() - cpu)
            seconds.append(fit.seconds)
            errors.append(fit.landmark_error_mm)
            floor = "" if args.flame_model is not None else f"{expression_floor(head, *frames):.3f}"
            rows.append([name, f"{cpu_seconds[-1]:.2f}", f"{fit.seconds:.2f}", f"{fit.landmark_error_mm.mean():.3f}",
                         f"{fit.landmark_error_mm.max():.3f}", floor])
            print(f"{name}: {cpu_seconds[-1]:.2f} s CPU, {fit.seconds:.2f} s wall, landmark error "
                  f"{fit.landmark_error_mm.mean():.3f} mm mean, {fit.landmark_error_mm.max():.3f} mm worst frame",
                  flush=True)
    load_after = os.getloadavg()

    seconds, cpu_seconds, errors = np.array(seconds), np.array(cpu_seconds), np.stack(errors)
    rows.append(["**all**", f"**{np.median(cpu_seconds):.2f}** median, {cpu_seconds.max():.2f} max",
                 f"{np.median(seconds):.2f} median, {seconds.max():.2f} max", f"**{errors.mean():.3f}**",
                 f"{errors.max():.3f}", "" if args.flame_model is not None
                 else f"{np.mean([expression_floor(head, *frames) for frames in seqs]):.3f}"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ)
    command = " ".join(filter(None, [env, "python", shlex.join(["scripts/bench_flame.py", *sys.argv[1:]])]))
    columns = np.r_[np.arange(min(config.num_shape, model.num_shape)),
                    model.num_shape + np.arange(min(config.num_expression, model.num_expression))]
    kept = ReducedFlame(model, columns).num_kept
    met = "met" if cpu_seconds.max() <= TARGET_S else "NOT met"
    text = "\n".join([
        "## FLAME fitting", "",
        f"Made by `{command}` on {cores} CPU cores ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}, the fit on one thread (`Pipeline.fit_flame` runs it so); load average (1 min) "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after: other jobs shared the cores, so the wall "
        "times below are inflated. The CPU time is the measure: the fit is one compute-bound thread, so on an "
        "idle machine its wall time is its CPU time.", "",
        f"Model: {model.source} ({model.num_vertices:,} vertices, {len(columns)} fitted coefficients: "
        f"{config.num_shape} shape, {min(config.num_expression, model.num_expression)} expression; the fit works "
        f"on {kept} of its vertices plus the joints). One {args.frames}-frame sequence per label, generated on the "
        f"default head (seed {args.seed}), fitted with `face4d.flame.FlameFitConfig()`'s defaults: shape on the "
        "neutral frame, then expression, jaw and head pose of all frames jointly. Seconds are one sequence's "
        "whole fit (both stages and the full-mesh FLAME output), CPU and wall; the landmark error is the mean "
        "distance of the "
        "fitted FLAME landmarks to the generated ones, over the 68 landmarks and the frames.", "",
        markdown_table(["label", "fit, CPU (s)", "fit, wall (s)", "landmark error, mean (mm)",
                        "worst frame (mm)", "outside the expression space (mm)"], rows).rstrip(), "",
        f"The first fit in a process took {first_s:.2f} s wall (it also pays torch's one-off set-up of its "
        f"optimiser and autograd paths; not in the table). Target (issue 16): at most {TARGET_S:.0f} s per "
        f"40-frame sequence on 2 cores, against the paper's {PAPER_S:.0f} s: **{met}** (worst "
        f"{cpu_seconds.max():.2f} s CPU).", "",
        "With the ICT head as the model, the last column is the floor: the mean distance left by the best "
        "least-squares combination of the head's 53 expression shapes to each frame's landmark displacements "
        "from the neutral frame (the generated sequences jitter in ways no expression shape makes; see "
        "Table 4's speeds). The fit sits on that floor, so the optimiser, its priors and its smoothness cost "
        "next to nothing. With your own FLAME model (`--flame-model`) the error also holds FLAME's difference "
        "from the head the landmarks were generated on.",
    ])
    update_section(args.out, SECTION, text)
    print(f"wrote the {SECTION} section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
