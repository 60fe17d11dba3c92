"""``face4d render``: a landmark sequence file as animated meshes, a captioned MP4/GIF preview."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES, add_mesh_args, add_precision_arg, pipeline


def add_parser(commands: argparse._SubParsersAction) -> None:
    rend = commands.add_parser("render", help="render a landmark sequence file as animated meshes (MP4/GIF)",
                               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    rend.add_argument("landmarks", type=Path, help="landmark sequences: .npz in the interchange format (every "
                                                   "sequence becomes a tile) or .npy (F, 68, 3), centimetres")
    rend.add_argument("--out", required=True, type=Path, help="the preview: a .mp4 or .gif file")
    rend.add_argument("--reference", type=Path, help="another landmark file shown beside it (one sequence, or "
                                                     "one per sequence of the input), decoded on the same mesh")
    add_mesh_args(rend)
    rend.add_argument("--overlay-landmarks", action="store_true",
                      help="draw the driving landmarks (the sequence's motion on the mesh) as red dots")
    rend.add_argument("--size", type=int, default=256, help="tile size in pixels (default 256)")
    rend.add_argument("--columns", type=int, help="tiles per row (default: a near-square grid)")
    rend.add_argument("--view", choices=("front", "three_quarter"), default="front")
    rend.add_argument("--fps", type=float, help="frames per second (default: the file's)")
    rend.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    rend.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    rend.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_neural_args(rend)
    rend.set_defaults(run=run)


def _add_neural_args(rend: argparse.ArgumentParser) -> None:
    group = rend.add_argument_group("neural rendering (the 'neural' extra): a person's image instead of meshes")
    group.add_argument("--neural", choices=("faces", "video"),
                       help="faces: draw the first sequence on a person's image, frame by frame, with a CCFExp model; "
                            "video: the recurrent model draws each frame from a 64² render of the decoded mesh, the "
                            "person's image and its previous frame (shown beside the render)")
    group.add_argument("--neural-model", type=Path, help="a CCFExp model ('face4d train neural-faces'), or for video "
                                                         "a FacEnhance model ('face4d train neural-video'); default: "
                                                         "the shipped one")
    group.add_argument("--identity-image", type=Path, help="the person: an RGB image at the model's size")
    group.add_argument("--identity-landmarks", type=Path, help="its 68 landmarks in pixels (.npy (68, 2) or .pts)")
    group.add_argument("--portraits", type=Path, help="or take the person from a portrait dataset ...")
    group.add_argument("--identity", type=int, help="... by its identity id (its neutral image and landmarks)")
    group.add_argument("--steps", type=int, help="DDIM steps per frame (default: 25 for faces, the video model's "
                                                 "own for video; an x_(t-stride) video model takes no other)")
    group.add_argument("--seed", type=int, default=0, help="the starting noise, shared by every frame")
    add_precision_arg(group, "--neural faces")


def run(args) -> None:
    from face4d.landmarks import load_landmark_file
    from face4d.outputs import check_out_file, check_preview_fps, check_preview_size, require_render

    if args.neural == "video":
        _render_video(args)
        return
    if args.neural:
        _render_neural(args)
        return
    require_render()
    check_out_file(args.out, (".mp4", ".gif"), args.overwrite)
    check_preview_size(1, 1, args.size)  # before the slow steps, as the rest
    if args.fps is not None:
        check_preview_fps([args.out.suffix], args.fps)
    seqs = load_landmark_file(args.landmarks)
    reference = None if args.reference is None else load_landmark_file(args.reference)
    pipe = pipeline(args)
    target = pipe.target(args.mesh, args.identity_seed, landmark_ids=args.landmark_ids, method=args.method)
    progress = not args.quiet
    result = pipe.decode(seqs, target, progress=progress)
    if reference is not None:
        reference = pipe.decode(reference, target, progress=progress)
    pipe.render(result, args.out, reference=reference, overlay_landmarks=args.overlay_landmarks, size=args.size,
                columns=args.columns, view=args.view, fps=args.fps, overwrite=args.overwrite, progress=progress)
    print(f"wrote {args.out}: {len(result)} sequence(s) on {target.name} ({target.method})"
          + ("" if reference is None else f", beside {args.reference}"))


def _render_neural(args) -> None:
    from face4d.errors import Face4DError
    from face4d.landmarks import load_landmark_file
    from face4d.neural import check_face, neural_model, portrait_identity, read_image, read_points, require_neural
    from face4d.outputs import check_out_file
    from face4d.pipeline import Pipeline

    require_neural()
    model = neural_model(args.neural_model, "ccfexp")
    if (args.portraits is None) == (args.identity_image is None):
        raise Face4DError("--neural faces needs the person: --identity-image with --identity-landmarks, "
                          "or --portraits with --identity")
    if args.portraits is not None:
        if args.identity is None:
            raise Face4DError("--portraits needs --identity N")
        image, points = portrait_identity(args.portraits, args.identity)
    else:
        if args.identity_landmarks is None:
            raise Face4DError("--identity-image needs --identity-landmarks (68 points in pixels)")
        image, points = read_image(args.identity_image), read_points(args.identity_landmarks)
        check_face(image, points, str(args.identity_image))
    seqs = load_landmark_file(args.landmarks)
    check_out_file(args.out, (".mp4", ".gif"), args.overwrite)
    frames = Pipeline(device=args.device).render_neural(seqs, image, points, model, args.out,
                                                        steps=args.steps or 25, seed=args.seed, fps=args.fps,
                                                        overwrite=args.overwrite, progress=not args.quiet,
                                                        precision=args.precision)
    print(f"wrote {args.out}: {len(frames)} neural frame(s) of {args.landmarks}")


def _render_video(args) -> None:
    from face4d.errors import Face4DError
    from face4d.landmarks import load_landmark_file
    from face4d.neural import check_face, neural_model, read_image, require_neural
    from face4d.outputs import check_out_file

    require_neural()
    if args.identity_image is None:
        raise Face4DError("--neural video needs --identity-image (the person, an RGB image at the model's size)")
    if args.portraits is not None or args.identity_landmarks is not None:
        raise Face4DError("--portraits and --identity-landmarks apply to --neural faces; the video model takes "
                          "--identity-image only")
    model = neural_model(args.neural_model, "video")
    image = read_image(args.identity_image)
    check_face(image, None, str(args.identity_image))
    seqs = load_landmark_file(args.landmarks)
    check_out_file(args.out, (".mp4", ".gif"), args.overwrite)
    pipe = pipeline(args)
    target = pipe.target(args.mesh, args.identity_seed, landmark_ids=args.landmark_ids, method=args.method)
    pipe.render_neural_video(seqs, image, model, args.out, target=target, fps=args.fps, steps=args.steps,
                             seed=args.seed, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {args.out}: the neural video of {args.landmarks} ({seqs.lengths[0]} frames), beside its 64² "
          f"mesh renders")
