"""Recurrent video model (FacEnhance) evaluation on the held-out clips of a portrait dataset (its test
identities, unseen in training), where the exact 128² frames of every 64² clip exist.

    python scripts/eval_neural_video.py --data /work/data/portraits64 --evaluators models/neural/evaluators \\
        --model shipped=face4d/weights/neural/video --ccfexp face4d/weights/neural/ccfexp --out docs/results.md

Writes the section ``neural_video`` (``--section``) of ``docs/results.md``: for every model, the bicubic
upsampling of the low-res frames, the residual models' detail-transfer guess (no model) and part 1's
CCFExp run frame by frame on the clip's landmarks (at 64², then upsampled):

* PSNR / SSIM against the exact high-res frames;
* ACD (cosine distance of our identity encoder's embeddings of consecutive frames) and ACD-I (of every
  frame to the identity image) (``render.neural.facenhance_metrics``);
* flicker: mean |generated frame-to-frame change - true change|, in 8-bit levels;
* a Fréchet distance between 4-frame windows in our evaluators' feature space (our stand-in for FVD, not
  comparable to published FVDs);
* cost: seconds per frame of a 40-frame 128² video at 25 DDIM steps on ``--threads`` CPU threads (and on
  the ``--device`` when it is an accelerator).

``--splice FILE`` copies the section from FILE (a run elsewhere, e.g. on a GPU machine, with ``--out
FILE``) into ``--out`` instead of evaluating.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from face4d.eval.report import markdown_table, update_section
from meshops.head import HeadModel
from render.camera import Camera
from render.neural import facenhance_metrics as vm
from render.neural import metrics
from render.neural.ccfexp_model import CCFExp
from render.neural.data import read_manifest, to_uint8
from render.neural.evaluators import Evaluators
from render.neural.facenhance_data import bicubic, load_clips, model_range
from render.neural.facenhance_model import FacEnhance, detail_guess

sys.path.insert(0, str(Path(__file__).parent))
from eval_neural_images import named  # noqa: E402  (NAME=DIR, the part-1 script's)

SECTION = "neural_video"
HEADERS = ["method", "PSNR dB", "SSIM", "ACD", "ACD-I", "flicker", "Fréchet video dist. (ours)"]


def identity_landmarks(data: Path, clips: dict, size: int) -> np.ndarray:
    """The exact landmarks (C, 68, 2) of each clip's identity at rest, seen by the clip's low-res camera:
    the identity's neutral head (``neutrals.npz`` identity weights) projected as the data set did."""
    manifest, neutrals = read_manifest(data), np.load(Path(data) / "neutrals.npz")
    head, row = HeadModel.load(), {int(i): r for r, i in enumerate(neutrals["identity"])}
    out = np.zeros((len(clips["identity"]), 68, 2), np.float32)
    for c, (person, camera) in enumerate(zip(clips["identity"], clips["camera"])):
        vertices = head.vertices(neutrals["identity_weights"][row[int(person)]], None)
        cam = Camera(manifest["camera_target"], *(float(v) for v in camera[:5]), (size, size))
        out[c] = cam.project(vertices[head.landmark_ids])
    return out


def facenhance_videos(model: FacEnhance, clips: dict, steps: int, seed: int, batch: int,
                      shared_noise: bool = True) -> np.ndarray:
    out = np.zeros_like(clips["high"])
    for start in range(0, len(out), batch):
        part = slice(start, start + batch)
        lows = clips["low"][part].swapaxes(0, 1)  # frames first: the model takes one frame of every clip at a time
        for n, frames in enumerate(model.generate(lows, clips["identity_high"][part], steps, seed, shared_noise)):
            out[part, n] = frames
    return out


def ccfexp_videos(model: CCFExp, data: Path, clips: dict, steps: int, seed: int) -> np.ndarray:
    """Part 1's model frame by frame: the identity image at its size, each frame's landmarks; upsampled."""
    size, high = model.config.size, clips["high"].shape[-2]
    identity = vm.downsample(clips["identity_high"], size)
    rest = identity_landmarks(data, clips, size)
    scale = size / clips["low"].shape[-2]
    out = np.zeros_like(clips["high"])
    for c in range(len(out)):
        frames = to_uint8(model.generate(identity[c], rest[c], clips["landmarks_low"][c] * scale, steps, seed))
        out[c] = bicubic(frames, high)
    return out


def guesses(clips: dict) -> np.ndarray:
    """The residual models' starting point for every frame (``detail_guess``), without a model."""
    low = torch.as_tensor(clips["low"]).flatten(0, 1)
    identity = torch.as_tensor(clips["identity_high"]).repeat_interleave(clips["low"].shape[1], 0)
    return to_uint8(detail_guess(model_range(low), model_range(identity))).reshape(clips["high"].shape)


def score(name: str, videos: np.ndarray, clips: dict, ev: Evaluators, reference: dict) -> list:
    flat, truth = videos.reshape(-1, *videos.shape[2:]), clips["high"].reshape(-1, *videos.shape[2:])
    emb = vm.identity_embeddings(ev, videos)
    return [name, f"{metrics.psnr(flat, truth):.2f}", f"{metrics.ssim(flat, truth):.3f}", f"{vm.acd(emb):.4f}",
            f"{vm.acd_identity(emb, reference['identity']):.4f}", f"{vm.flicker(videos, clips['high']):.3f}",
            f"{vm.video_frechet(ev, videos, reference['windows']):.3f}"]


def seconds_per_frame(model: FacEnhance, clips: dict, frames: int, device: str, steps: int | None) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per frame of one ``frames``-frame video (one clip's low frames,
    back and forth) at ``steps`` DDIM steps. CPU seconds / threads is what the wall clock gives on idle
    cores; on a loaded machine the wall clock is longer."""
    cycle = np.concatenate([clips["low"][0], clips["low"][0][::-1]])
    lows = [cycle[n % len(cycle)] for n in range(frames)]
    model = model.to(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in model.generate(lows, clips["identity_high"][0], steps=steps):
        pass
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - wall) / frames, (time.process_time() - cpu) / frames


def describe(model: FacEnhance) -> str:
    c = model.config
    parts = [f"x_(t-{c.stride})" if c.prediction == "previous" else f"{c.prediction} (DDIM)"]
    parts.append("residual over the detail-transfer guess" if c.residual else "whole frame")
    if not c.expression_encoder:
        parts.append("no expression encoder")
    if not c.previous_frame:
        parts.append("no previous frame")
    elif not c.previous_noise:
        parts.append("previous frame not noised")
    return ", ".join(parts)


def splice(source: Path, out: Path, section: str) -> None:
    found = re.search(rf"<!-- begin {section} -->\n(.*?)<!-- end {section} -->", source.read_text(), re.S)
    if found is None:
        raise SystemExit(f"{source} has no {section} section")
    update_section(out, section, found.group(1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="portrait dataset with clips (its test split is scored)")
    parser.add_argument("--evaluators", type=Path, help="the evaluators (identity encoder, features)")
    parser.add_argument("--model", type=named, action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument("--ccfexp", type=Path, help="part 1's CCFExp model: the frame-by-frame baseline")
    parser.add_argument("--clips", type=int, default=0, help="test clips scored (default 0: all)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps of CCFExp")
    parser.add_argument("--video-steps", type=lambda v: [int(n) for n in v.split(",")], default=[None],
                        help="DDIM steps of the epsilon and sample video models, comma-separated for a row each "
                             "(default: each model's own, FacEnhanceConfig.sampling_steps)")
    parser.add_argument("--batch", type=int, default=16, help="clips generated together")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of the cost table")
    parser.add_argument("--time-frames", type=int, default=40, help="frames of the timed video (0: no timing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh-noise", action="store_true",
                        help="also score each model with fresh noise every frame (the default shares it)")
    parser.add_argument("--note", default="", help="a sentence under the command: how the models were trained")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--section", default=SECTION, help=f"the section of --out written (default {SECTION})")
    parser.add_argument("--title", default="64² -> 128² video on unseen identities", help="the section's heading")
    parser.add_argument("--splice", type=Path, help="copy the section of this file into --out, and stop")
    args = parser.parse_args(argv)
    if args.splice is not None:
        splice(args.splice, args.out, args.section)
        return
    if args.data is None or args.evaluators is None:
        parser.error("--data and --evaluators are required")
    torch.set_num_threads(args.threads)
    clips = load_clips(args.data, "test")
    if args.clips:
        keep = np.sort(np.random.default_rng(args.seed).choice(len(clips["low"]), min(args.clips, len(clips["low"])),
                                                                replace=False))
        clips = {k: v[keep] for k, v in clips.items()}
    ev = Evaluators.from_pretrained(args.evaluators, args.device)
    reference = {"identity": vm.identity_embeddings(ev, clips["identity_high"]),
                 "windows": vm.window_features(ev, clips["high"])}
    truth_emb = vm.identity_embeddings(ev, clips["high"])
    table = [["ground truth (exact 128² renders)", "-", "-", f"{vm.acd(truth_emb):.4f}",
              f"{vm.acd_identity(truth_emb, reference['identity']):.4f}", "0", "-"],
             score("bicubic upsampling of the 64² frames", bicubic(clips["low"].reshape(-1, *clips["low"].shape[2:]),
                                                                 clips["high"].shape[-2]).reshape(clips["high"].shape),
                   clips, ev, reference),
             score("detail-transfer guess (bicubic + the identity image's detail; no model)", guesses(clips),
                   clips, ev, reference)]
    if args.ccfexp is not None:
        model = CCFExp.from_pretrained(args.ccfexp, args.device)
        table.append(score(f"CCFExp frame by frame ({model.config.size}², bicubic to 128²)",
                           ccfexp_videos(model, args.data, clips, args.steps, args.seed), clips, ev, reference))
    costs = []
    for name, directory in args.model:
        model = FacEnhance.from_pretrained(directory, args.device)
        for steps in [None] if model.config.prediction == "previous" else args.video_steps:
            label = f"{name}: FacEnhance, {describe(model)}, {model.sampling_steps(steps)} steps"
            videos = facenhance_videos(model, clips, steps, args.seed, args.batch)
            table.append(score(label, videos, clips, ev, reference))
            if args.fresh_noise:
                videos = facenhance_videos(model, clips, steps, args.seed, args.batch, shared_noise=False)
                table.append(score(f"{label}, fresh noise every frame", videos, clips, ev, reference))
        # the target's 25 DDIM steps, and the model's own default where it differs
        timed = [None] if model.config.prediction == "previous" else sorted({25, model.sampling_steps(None)})
        for steps in timed if args.time_frames else []:
            wall, cpu = seconds_per_frame(model, clips, args.time_frames, "cpu", steps)
            row = [name, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}", model.sampling_steps(steps),
                   f"{wall:.2f}", f"{cpu:.2f}", f"{wall * args.time_frames / 60:.1f}"]
            if args.device != "cpu":
                row.append(f"{seconds_per_frame(model, clips, args.time_frames, args.device, steps)[0]:.3f}")
            costs.append(row)
    frames = clips["low"].shape[1]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    text = (f"## Neural renderer: {args.title} ({len(clips['low'])} test clips of "
            f"{frames} frames, {len(np.unique(clips['identity']))} test identities)\n\n`{command}`\n\n"
            + (f"{args.note}\n\n" if args.note else "")
            + markdown_table(HEADERS, table)
            + "\nACD / ACD-I: cosine distances in our identity encoder (at 64²); flicker: mean |generated - true "
              "frame-to-frame change| in 8-bit levels; the Fréchet distance is between 4-frame windows (mean "
              "feature and mean change) in our evaluators' feature space, not FVD.\n")
    if costs:
        headers = ["model", "M parameters", "model calls / frame", f"wall s / frame ({args.threads} threads)",
                   "CPU s / frame", f"wall min / {args.time_frames} frames"]
        headers += [f"s / frame, {args.device}"] if args.device != "cpu" else []
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        text += (f"\nCost of a {args.time_frames}-frame 128² video (one video, frame after frame) with "
                 f"{args.threads} torch threads on {os.cpu_count()} CPU cores at a load average of {load:.1f} "
                 f"(target: 3 min for 40 frames on 2 cores):\n\n" + markdown_table(headers, costs))
    update_section(args.out, args.section, text)
    print(text)


if __name__ == "__main__":
    main()
