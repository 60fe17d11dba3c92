"""``face4d generate``: a condition -> landmark sequences and, with a target or an output option,
animated meshes, exports and a preview (``face4d.pipeline.Pipeline``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import (EXAMPLES, add_mesh_args, add_output_args, add_sampling_args, pipeline,
                                    sampling_config)
from face4d.errors import Face4DError

DESCRIPTION = """Generate landmark sequences for a condition: a --label, a --text, --keyframes to fill, or a
person's --neutral-mesh / --neutral-landmarks. By default it writes the landmark sequences, one
interchange .npz per sequence. With a target mesh option (--mesh, --identity-seed, --landmark-ids)
or an output option (--export, --preview, --flame-model) it also animates a mesh with them and writes
one folder per sample (sample_000/ ...: neutral.obj, the exports, landmarks.npz, with --flame-model
also flame/) and OUT/preview.<fmt>."""


MESH_OPTIONS = ("mesh", "identity_seed", "landmark_ids", "method", "decoder", "export", "preview", "start",
                "flame_model")
"""Any of these turns on meshes (a target, exports, a preview) instead of landmark files only."""
TIMELINE_OPTIONS = ("hold", "fps", "duration", "loop")


def add_parser(commands: argparse._SubParsersAction) -> None:
    gen = commands.add_parser("generate", help="generate landmark sequences and, optionally, animated meshes, "
                                               "exports and a preview", description=DESCRIPTION,
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--out", required=True, type=Path,
                     help="output directory: one .npz per sequence, or with meshes one folder per sample")
    condition = gen.add_mutually_exclusive_group()
    condition.add_argument("--label", help="expression label to steer towards (see 'face4d dataset info')")
    condition.add_argument("--text", help="a description to steer towards, e.g. 'disgust high smile' "
                                          "(needs the text extra: pip install 'face4d[text]')")
    condition.add_argument("--timeline", help="a shot of timed keys, e.g. \"0s:neutral, 1.2s:high_smile@0.8, "
                                              "2.5s:surprise, 4s:neutral\", or a .json file (docs/timeline.md)")
    shot = gen.add_argument_group("timeline options (with --timeline; they override the JSON file's)")
    shot.add_argument("--hold", type=float, metavar="SECONDS", help="how long each key is held after it lands, at "
                      "least (default 0.3)")
    shot.add_argument("--fps", type=float, help="output frame rate, e.g. 24, 25, 30, 60 (default 30); the motion "
                                                "is resampled exactly, keys land on their frames")
    shot.add_argument("--duration", type=float, metavar="SECONDS", help="length of the shot (default: a second after "
                                                                        "the last key)")
    shot.add_argument("--loop", action="store_true", default=None,
                      help="the last frame joins the first seamlessly")
    gen.add_argument("--type", dest="sequence_type", choices=("N2E", "E2N"),
                     help="also enforce the order: neutral->expression or back (type S classifier); with a "
                          "neutral face, where it goes: first frame (N2E, the default) or last (E2N)")
    gen.add_argument("--frames", type=int, default=40, help="frames per sequence (default 40)")
    gen.add_argument("--num", type=int, default=1, help="number of sequences (default 1)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--intensity", type=float, default=1.0, metavar="S",
                     help="how far the expression goes from the neutral face, 0 to 1.5 (default 1)")
    neutral = gen.add_argument_group("geometry-adaptive generation (a given person's neutral face)")
    source = neutral.add_mutually_exclusive_group()
    source.add_argument("--neutral-mesh", type=Path,
                        help="neutral face mesh (.obj/.ply) in the head model's topology, in centimetres; "
                             "also the target mesh unless --mesh or --identity-seed is given")
    source.add_argument("--neutral-landmarks", type=Path,
                        help="neutral landmarks: .npz in the interchange format (its neutral frame), "
                             ".npy or .txt of shape (68, 3), in centimetres")
    neutral.add_argument("--passes", type=int, help="harmonising sampling passes (default 5, as the paper; "
                                                    "1 for keyframes)")
    keys = gen.add_argument_group("keyframes (expression filling)")
    keys.add_argument("--keyframes", type=Path, help="a sequence in the interchange format (.npz) whose --known "
                                                     "frames are kept and the others generated")
    keys.add_argument("--known", help="known frames: 0-based indices and inclusive ranges, e.g. 0-9,30-39")
    keys.add_argument("--sequence-index", type=int, default=0, help="which sequence of a --keyframes batch file")
    add_mesh_args(gen)
    flame = gen.add_argument_group("FLAME (your own model, fitted to every generated sequence; see docs/exports.md)")
    flame.add_argument("--flame-model", type=Path, help="a FLAME model folder (FLAME_NEUTRAL.npz or "
                       "generic_model.npz with its landmark embedding) or model file; each sample folder gets "
                       "flame/: the exports on FLAME's topology and flame_params.npz")
    flame.add_argument("--trust-pickle", action="store_true", help="also load FLAME's original .pkl/.npy files: "
                       "a pickle can run arbitrary code when loaded, so only for files from a source you trust "
                       "(or re-save them as .npz)")
    add_output_args(gen)
    neural = gen.add_argument_group("neural video (the 'neural' extra): the first sample drawn as a person, "
                                    "OUT/neural.<fmt> beside its mesh preview (needs --preview)")
    neural.add_argument("--neural", nargs="?", const="video", choices=("video",),
                        help="video: the recurrent model ('face4d train neural-video') draws each frame from a 64² "
                             "render of the mesh, the person's image and its previous frame")
    neural.add_argument("--neural-model", type=Path, help="a FacEnhance model directory (default: the shipped one)")
    neural.add_argument("--identity-image", type=Path, help="the person: an RGB image at the model's size (128²)")
    neural.add_argument("--neural-steps", type=int, help="DDIM steps per frame of an epsilon or sample model (default: the "
                                                           "model's own)")
    add_sampling_args(gen)
    gen.set_defaults(run=run)


def run(args) -> None:
    from face4d.outputs import check_export_formats, check_preview_formats

    meshes = any(getattr(args, name) is not None for name in MESH_OPTIONS)
    if not meshes and (args.overlay_landmarks or args.size is not None):
        raise Face4DError("--overlay-landmarks and --size apply to the preview (--preview mp4)")
    if args.trust_pickle and args.flame_model is None:
        raise Face4DError("--trust-pickle applies to the files of --flame-model")
    timeline = None
    if args.timeline is not None:
        from face4d.timeline import timeline_arg

        timeline = timeline_arg(args.timeline, fps=args.fps, duration=args.duration, hold=args.hold, loop=args.loop)
    elif any(getattr(args, name) is not None for name in TIMELINE_OPTIONS):
        raise Face4DError("--hold, --fps, --duration and --loop apply to a --timeline")
    neural = _neural_options(args, meshes)
    pipe = pipeline(args)
    condition = dict(label=args.label, text=args.text, keyframes=args.keyframes, known=args.known,
                     neutral_mesh=args.neutral_mesh, neutral_landmarks=args.neutral_landmarks, frames=args.frames,
                     num=args.num, seed=args.seed, sequence_type=args.sequence_type, passes=args.passes,
                     sequence_index=args.sequence_index, sampling=sampling_config(args), progress=not args.quiet,
                     intensity=args.intensity, timeline=timeline)
    if not meshes:  # landmarks only: one interchange file per sequence, streamed in batches
        frames = pipe.sample_to(args.out, overwrite=args.overwrite, **condition)
        print(f"wrote {args.num} sequence(s) of {frames} frames to {args.out}")
        return
    formats, preview = check_export_formats(args.export), check_preview_formats(args.preview)
    target, frames = pipe.generate_to(args.out, formats, preview, overwrite=args.overwrite, mesh=args.mesh,
                                      identity_seed=args.identity_seed, landmark_ids=args.landmark_ids,
                                      method=args.method, start=args.start or "auto",
                                      overlay_landmarks=args.overlay_landmarks, size=args.size or 256,
                                      flame_model=args.flame_model, trust_pickle=args.trust_pickle, neural=neural,
                                      **condition)
    extra = "".join(f" + preview.{fmt}" for fmt in preview)
    if neural is not None:
        extra += f" + neural.{preview[0]} (the first sample's mesh preview beside its neural video)"
    if args.flame_model is not None:
        extra += " + flame/ (the fits' landmark errors are in samples.json)"
    print(f"wrote {args.num} sample(s) of {frames} frames on {target.name} ({target.method}) to "
          f"{args.out}: {', '.join(formats)}{extra}")


def _neural_options(args, meshes: bool) -> dict | None:
    """``Pipeline.generate_to``'s ``neural`` options, the model and the image checked before sampling."""
    if args.neural is None:
        if any(getattr(args, name) is not None for name in ("neural_model", "identity_image", "neural_steps")):
            raise Face4DError("--neural-model, --identity-image and --neural-steps apply with --neural")
        return None
    from face4d.neural import load_video_model, neural_model, read_image, require_neural

    require_neural()
    if not meshes or args.preview is None:
        raise Face4DError("--neural draws the video beside the mesh preview: add --preview mp4 (or gif)")
    if args.identity_image is None:
        raise Face4DError("--neural needs --identity-image (the person, an RGB image at the model's size)")
    image = read_image(args.identity_image)
    model = load_video_model(neural_model(args.neural_model, "video"), image, args.device, args.neural_steps)
    return {"identity_image": image, "model": model, "steps": args.neural_steps, "seed": args.seed}
