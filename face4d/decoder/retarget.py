"""Retargeting: a landmark sequence -> a mesh sequence on any neutral mesh (the API behind ``face4d retarget``).

The sequence's motion is its landmark displacements from its neutral frame,
``dL_f = L_f - L_n``; the neutral mesh ``M`` supplies the face they move: ``M_f = M + dM_f`` with
``dM_f`` from the learned decoder (meshes in the head model's topology) or from the RBF
interpolation of ``dL_f`` around the mesh's own landmark vertices ``M[landmark_ids]`` (any mesh).
The sequence's person need not be the mesh's: only the displacements cross over, which is what
retargeting is. Both must be in the head model's units (centimetres) and frame (the head upright,
facing +z, as the ICT head); the landmark sequence must carry no rigid head motion, or it would be
read as expression.
"""
from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from face4d.checkpoint import CONFIG_FILE, load_weights, read_builder
from face4d.data.interchange import LandmarkSequences
from face4d.decoder.model import DECODER_KINDS
from face4d.decoder.rbf import rbf_displacements
from face4d.decoder.target import DEFAULT_METHOD, METHODS, resolve_target
from face4d.decoder.topology import DecoderTopology
from face4d.errors import Face4DError
from face4d.landmarks import check_landmark_frames, check_landmark_ids, check_units, load_landmark_file
from meshops.blendshapes import fit_head
from meshops.head import HeadModel

DECODE_BOUNDS = (-1.0, 1.0)
"""Weight range of the blendshape path: the data generator's, which the landmark models learned
(``cheeks_in`` pulls ``cheekPuff`` negative); the rig exports bound theirs to a rig's [0, 1]."""
EXPORTS = ("ply", "obj")


def default_decoder_dir() -> Path:
    """Where the shipped decoder for the ICT topology lives: ``face4d/weights/default/decoder``."""
    return Path(str(resources.files("face4d") / "weights" / "default" / "decoder"))


def load_decoder(directory: str | os.PathLike | None = None, topology: DecoderTopology | None = None,
                 device: str | torch.device = "cpu") -> torch.nn.Module:
    """The decoder of a model directory (``face4d train decoder --out``), in eval mode; the shipped
    one by default. ``topology`` defaults to the ICT head's; a checkpoint trained on another is refused."""
    if directory is None:
        directory = default_decoder_dir()
        if not (directory / CONFIG_FILE).is_file():
            raise Face4DError(f"no default decoder is installed ({directory}); train one with 'face4d train "
                              f"decoder' and pass its directory (--model), or use --method rbf")
    directory = Path(directory)
    config, config_cls, model_cls = read_builder(directory, DECODER_KINDS)
    topology = DecoderTopology.from_head() if topology is None else topology
    try:
        model_config = config_cls.from_dict(config["model_config"])
    except (Face4DError, TypeError) as exc:
        raise Face4DError(f"{directory / CONFIG_FILE}: invalid decoder config ({exc})") from None
    topology.check_fingerprint(model_config.topology, str(directory))
    return load_weights(model_cls(model_config, topology), directory, device)


@torch.no_grad()
def decode_displacements(model: torch.nn.Module, neutral_vertices: np.ndarray, delta_landmarks: np.ndarray,
                         chunk: int = 64) -> np.ndarray:
    """``dM`` (F, V, 3) of one neutral mesh (V, 3) for landmark displacements (F, 68, 3): the mesh
    is encoded once, the frames decoded ``chunk`` at a time."""
    device = next(iter(model.parameters())).device
    neutral = torch.as_tensor(np.asarray(neutral_vertices, np.float32), device=device)[None]
    delta = torch.as_tensor(np.asarray(delta_landmarks, np.float32), device=device)
    context = model.encode(neutral)
    parts = [model.decode(context, delta[None, start:start + chunk])[0].cpu().numpy()
             for start in range(0, len(delta), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, *neutral.shape[1:]), np.float32)


def blendshape_displacements(head: HeadModel, delta_landmarks: np.ndarray, smoothness: float = 0.0) -> np.ndarray:
    """``dM`` (F, V, 3) of the blendshape path: the head's expression weights solved from the landmark
    displacements ``dL`` (F, 68, 3) (``meshops.blendshapes``, within ``DECODE_BOUNDS``, no pose: like the
    decoder, it reads the sequence as expression only), applied to the full basis. A frame with
    ``dL = 0`` solves to zero weights, so the neutral frame gives the mesh back exactly."""
    delta = np.asarray(delta_landmarks, np.float32)
    fit = fit_head(head, head.landmark_neutral + delta, head.landmark_neutral, smoothness, solve_pose=False,
                   bounds=DECODE_BOUNDS)
    return head.vertices(expression_weights=fit.weights) - head.neutral


# ------------------------------------------------------------------------------------ inputs

def sequence_frames(landmarks: LandmarkSequences | np.ndarray, neutral_frame: int | None = None,
                    sequence_index: int = 0, source: str = "landmarks") -> tuple[np.ndarray, int]:
    """The landmark frames (F, 68, 3) of one sequence and the index of its neutral frame.

    ``neutral_frame`` None picks the sequence's own: the last valid frame of an ``E2N`` sequence,
    else the first. Negative indices count from the end.
    """
    if isinstance(landmarks, LandmarkSequences):
        if not 0 <= sequence_index < len(landmarks):
            raise Face4DError(f"{source}: sequence index {sequence_index} is out of range (it holds "
                              f"{len(landmarks)} sequence(s))")
        default = int(landmarks.neutral_frames()[sequence_index])
        frames = check_landmark_frames(landmarks.sequence(sequence_index), source)
    else:
        default = 0
        frames = check_landmark_frames(landmarks, source)
    f = len(frames)
    index = default if neutral_frame is None else int(neutral_frame)
    if not -f <= index < f:
        raise Face4DError(f"{source}: neutral frame {index} is out of range for a sequence of {f} frames")
    return frames, index % f


# ------------------------------------------------------------------------------------ retarget

def retarget(landmarks: LandmarkSequences | np.ndarray, neutral_mesh_vertices: np.ndarray,
             decoder: torch.nn.Module | str | os.PathLike | None = None, neutral_frame: int | None = None,
             method: str | None = None, landmark_ids: np.ndarray | None = None, faces: np.ndarray | None = None,
             sequence_index: int = 0, smoothness: float = 0.0) -> np.ndarray:
    """Animate ``neutral_mesh_vertices`` (V, 3) with a landmark sequence: meshes (F, V, 3), float32.

    ``landmarks``: a ``LandmarkSequences`` (its sequence ``sequence_index``) or an array (F, 68, 3),
    in the head model's units. ``dL_f = L_f - L_{neutral_frame}``; ``neutral_frame`` defaults to the
    sequence's own neutral frame (the first, or the last of an ``E2N`` sequence; 0 for an array).
    The sequence's identity need not match the mesh's: the displacements are retargeted.

    ``method`` None is ``learned`` when a ``decoder`` is given, else ``blendshape``.
    ``method="blendshape"``: the head model's expression weights solved from the landmarks,
    applied to a mesh of the head's topology (``blendshape_displacements``; ``smoothness`` weighs a
    temporal-smoothness term of that solve). ``method="learned"``: ``decoder`` (a loaded decoder, a
    model directory, or None for the shipped one) on a mesh of its topology; ``faces``, when given,
    are checked too (with either method). ``method="rbf"``: the
    non-learned interpolation (``face4d.decoder.rbf``), for any mesh given its ``landmark_ids``
    (default: the ICT head's, for a mesh with its vertex count). Frame ``neutral_frame`` gives
    back the neutral mesh exactly, with every method.
    """
    method = method or ("learned" if decoder is not None else DEFAULT_METHOD)
    if method not in METHODS:
        raise Face4DError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    frames, neutral_index = sequence_frames(landmarks, neutral_frame, sequence_index)
    delta = frames - frames[neutral_index]
    if method == "blendshape":
        head = HeadModel.load()
        vertices = DecoderTopology.from_head(head).check_mesh(neutral_mesh_vertices, faces, "neutral mesh")
        check_units(frames[neutral_index], vertices[head.landmark_ids])
        return vertices + blendshape_displacements(head, delta, smoothness)
    if method == "learned":
        model = decoder if isinstance(decoder, torch.nn.Module) else load_decoder(decoder)
        topology: DecoderTopology = model.topology
        vertices = topology.check_mesh(neutral_mesh_vertices, faces, "neutral mesh")
        check_units(frames[neutral_index], vertices[topology.landmark_ids])
        return vertices + decode_displacements(model, vertices, delta)
    vertices = np.asarray(neutral_mesh_vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
        raise Face4DError(f"neutral mesh: vertices must be a finite (V, 3) array, got shape {vertices.shape}")
    if landmark_ids is None:
        head = HeadModel.load()
        if len(vertices) != head.num_vertices:
            raise Face4DError(f"neutral mesh: has {len(vertices)} vertices, not the head model's {head.num_vertices}; "
                              f"give the vertex ids of its 68 landmarks (--landmark-ids ids.npy)")
        landmark_ids = head.landmark_ids
    ids = check_landmark_ids(landmark_ids, len(vertices))
    check_units(frames[neutral_index], vertices[ids])
    return np.asarray(vertices, np.float32) + rbf_displacements(vertices, ids, delta)


def retarget_files(landmarks_path: str | os.PathLike, mesh_path: str | os.PathLike, out_dir: str | os.PathLike,
                   export: str = "ply", neutral_frame: int | None = None, model: str | os.PathLike | None = None,
                   method: str | None = None, landmark_ids_path: str | os.PathLike | None = None,
                   sequence_index: int = 0, overwrite: bool = False, device: str = "cpu") -> tuple[Path, int, str]:
    """``retarget`` from files into ``out_dir``: resolve the target mesh (``face4d.decoder.target``),
    decode the sequence onto it, and write ``frame_0000.<export>``, ... (0-based, one per frame of the
    sequence) and ``neutral.obj`` (the input mesh) with ``meshops.export.export_frames``, atomically;
    a non-empty ``out_dir`` is refused unless ``overwrite``. ``method`` None: ``learned`` with a
    ``model``, ``rbf`` with landmark ids, else ``blendshape``. Returns the directory, the number of
    frames and the method."""
    from meshops.atomic import check_dir_target
    from meshops.export import export_frames

    method = method or ("learned" if model is not None else "rbf" if landmark_ids_path is not None
                        else DEFAULT_METHOD)
    if export not in EXPORTS:
        raise Face4DError(f"unknown export format {export!r}; expected one of {', '.join(EXPORTS)}")
    if method != "rbf" and landmark_ids_path is not None:
        raise Face4DError("--landmark-ids only applies to --method rbf (the learned decoder knows its topology)")
    if method != "learned" and model is not None:
        raise Face4DError("--model only applies to --method learned")
    out_dir = check_dir_target(out_dir, overwrite)
    seqs = load_landmark_file(landmarks_path)
    decoder = functools.cache(lambda: load_decoder(model, device=device))
    target = resolve_target(mesh_path, landmark_ids=landmark_ids_path, method=method, head=HeadModel.load(),
                            decoder=decoder)
    meshes = retarget(seqs, target.vertices, decoder() if method == "learned" else None, neutral_frame,
                      method=method, landmark_ids=target.landmark_ids if method == "rbf" else None,
                      faces=target.faces, sequence_index=sequence_index)
    export_frames(out_dir, meshes, target.faces, export, neutral=target.vertices, overwrite=overwrite, progress=False)
    return out_dir, len(meshes), method
