"""The video figure of docs/neural.md: one generated label sequence as the mesh preview, CCFExp frame by
frame and the recurrent FacEnhance video, side by side (an MP4 and a GIF excerpt).

    python scripts/render_neural_video_figure.py --video face4d/weights/neural/video \\
        --ccfexp face4d/weights/neural/ccfexp --label surprise --out docs --overwrite

The person is a painted portrait identity (``face4d.data.portraits``) of the mesh the sequence is
decoded on: its neutral rendered at 128² is the identity image of both models, at 64² with its exact
landmarks CCFExp's; CCFExp draws each frame from the frame's projected landmarks, FacEnhance from the
frame's 64² render and its own previous frame. Writes ``OUT/neural_video.mp4`` and ``OUT/neural_video.gif``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from face4d.data.portraits import PortraitRenderer, draw_appearance
from face4d.pipeline import Pipeline, side_by_side
from render.neural.ccfexp_model import CCFExp
from render.neural.data import to_uint8
from render.neural.facenhance_data import bicubic
from render.preview import save_animation


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", required=True, type=Path, help="FacEnhance model ('face4d train neural-video')")
    parser.add_argument("--ccfexp", required=True, type=Path, help="CCFExp model ('face4d train neural-faces')")
    parser.add_argument("--label", default="surprise")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--person", type=int, default=3, help="seed of the painted look")
    parser.add_argument("--gif-frames", type=int, default=20, help="frames of the GIF excerpt (every other frame)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    pipe = Pipeline()
    result = pipe.generate(label=args.label, frames=args.frames, seed=args.seed, progress=True)
    meshes = result.meshes[0]
    renderer = PortraitRenderer(pipe.head)
    look = draw_appearance(np.random.default_rng(args.person))
    identity = renderer.render(result.target.vertices, look, renderer.camera(128))[0]
    ccfexp = CCFExp.from_pretrained(args.ccfexp)
    camera = renderer.camera(ccfexp.config.size)
    small, small_landmarks, _ = renderer.render(result.target.vertices, look, camera)
    targets = np.stack([camera.project(m[pipe.head.landmark_ids]) for m in meshes]).astype(np.float32)
    frame_by_frame = bicubic(to_uint8(ccfexp.generate(small, small_landmarks, targets, seed=args.seed,
                                                      progress=True)), 128)
    preview = pipe.render_frames(result, size=128)
    left = (side_by_side(tile, frame) for tile, frame in zip(preview, frame_by_frame))
    video = pipe.neural_video(meshes, len(meshes), identity, args.video, args.out / "neural_video.mp4",
                              fps=result.fps, seed=args.seed, beside=left, overwrite=args.overwrite, progress=True)
    excerpt = iio.imread(video)[::2][:args.gif_frames]
    save_animation(args.out / "neural_video.gif", excerpt, fps=result.fps / 2, overwrite=args.overwrite)
    print(f"wrote {video} and {args.out / 'neural_video.gif'}: mesh preview | CCFExp frame by frame | FacEnhance")


if __name__ == "__main__":
    main()
