"""face4d's side of the neural renderer (``render.neural``): the ``neural`` extra's check, its errors as
``Face4DError``, images from disk, and generated 3D landmark sequences as image landmarks.

``render.neural`` takes arrays and never imports face4d; this module is where face4d's inputs (files,
landmark sequences in centimetres, portrait datasets) become those arrays.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from face4d.errors import Face4DError

NEURAL_MODULES = {"diffusers": "diffusers", "accelerate": "accelerate", "skimage": "scikit-image"}


def require_neural() -> None:
    """One line naming the extra when its packages are missing."""
    missing = [package for module, package in NEURAL_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise Face4DError(f"the neural renderer needs {', '.join(missing)}: pip install 'face4d[neural]'")


@contextmanager
def neural_errors() -> Iterator[None]:
    """Check the extra, and turn ``render.neural``'s input errors into face4d's one-line error."""
    require_neural()
    from render.neural.data import NeuralInputError

    try:
        yield
    except NeuralInputError as exc:
        raise Face4DError(str(exc)) from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An RGB image file as (H, W, 3) uint8; other modes (grey, RGBA, 16-bit) are refused, not converted,
    because the models were trained on 8-bit RGB renders."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise Face4DError(f"{path}: no such image file")
    try:
        image = np.asarray(iio.imread(path))
    except Exception as exc:  # imageio raises many types for a file that is not an image
        raise Face4DError(f"{path}: not a readable image ({type(exc).__name__})") from None
    if image.ndim != 3 or image.shape[2] != 3:
        raise Face4DError(f"{path}: the image must be RGB (H, W, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise Face4DError(f"{path}: the image must be 8-bit, got {image.dtype}")
    return image


def read_points(path: str | os.PathLike) -> np.ndarray:
    """68 image landmarks (pixels) from a .npy (68, 2) or an iBUG .pts file."""
    path = Path(path)
    if not path.is_file():
        raise Face4DError(f"{path}: no such landmark file")
    if path.suffix.lower() == ".pts":
        text = path.read_text().split("{", 1)[-1].split("}", 1)[0]
        points = np.array([[float(v) for v in line.split()] for line in text.strip().splitlines()], np.float32)
    else:
        points = np.load(path, allow_pickle=False).astype(np.float32)
    if points.shape != (68, 2):
        raise Face4DError(f"{path}: identity landmarks must have shape (68, 2), got {points.shape}")
    return points


MIN_EYE_DISTANCE = 0.1
"""Smallest distance between the eye centres, as a share of the image's width, that counts as a face:
the models were trained on portraits where it is about a third."""

MIN_FACE_CONTRAST = 2.0
"""Smallest standard deviation of the face box's pixels (of 255) that counts as a face: a blank or
flat-coloured region has none to edit."""


def check_face(image: np.ndarray, points: np.ndarray | None, source: str) -> None:
    """Refuse, in one line, an image whose landmarks do not place a face in it: points not finite or
    outside the image, eyes too close together for a portrait, or a flat region where the face should
    be (without ``points``: a flat image). Not a face detector: it catches the wrong file, the wrong
    landmarks and an empty image."""
    height, width = image.shape[:2]
    if points is None:
        if image.astype(np.float32).std() < MIN_FACE_CONTRAST:
            raise Face4DError(f"{source}: no face in the image: it is one flat colour")
        return
    if not np.isfinite(points).all():
        raise Face4DError(f"{source}: the landmarks are not finite numbers")
    inside = (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)
    if not inside.all():
        raise Face4DError(f"{source}: {int((~inside).sum())} of 68 landmarks fall outside the {width}x{height} "
                          "image: no face there (landmarks in pixels of this image?)")
    eyes = np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0))
    if eyes < MIN_EYE_DISTANCE * width:
        raise Face4DError(f"{source}: no face in the image: the eyes are {eyes:.1f} px apart in a {width} px wide "
                          f"image (a portrait needs {MIN_EYE_DISTANCE * width:.0f} or more)")
    x0, y0 = np.floor(points.min(0)).astype(int)
    x1, y1 = np.ceil(points.max(0)).astype(int)
    box = image[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    if box.std() < MIN_FACE_CONTRAST:
        raise Face4DError(f"{source}: no face in the image: the region the landmarks outline is flat "
                          f"(pixel spread {box.std():.1f} of 255)")


def portrait_identity(directory: str | os.PathLike, identity: int) -> tuple[np.ndarray, np.ndarray]:
    """The neutral image and its landmarks of one identity of a portrait dataset."""
    with neural_errors():
        from render.neural.data import load_neutrals, read_manifest

        read_manifest(directory)
        neutrals = load_neutrals(directory)
    if neutrals is None:
        raise Face4DError(f"{directory} has no neutrals.npz")
    rows = np.flatnonzero(neutrals["identity"] == identity)
    if not len(rows):
        raise Face4DError(f"{directory} has no identity {identity} "
                          f"(identities {int(neutrals['identity'].min())}..{int(neutrals['identity'].max())})")
    return neutrals["rgb"][rows[0]], neutrals["landmarks"][rows[0]]


def fit_camera(points: np.ndarray, image_points: np.ndarray, size: int, view_angle: float | None = None):
    """The pinhole camera (``render.camera.Camera``) that puts 3D ``points`` (68, 3), cm, Y up, facing
    +z, on ``image_points`` (68, 2), pixels of a ``size``-pixel square image: its pose (yaw, pitch,
    roll), where it looks and how far away it is, by least squares on the reprojection error.

    The field of view is fixed (``view_angle``, default the previews' and the portrait data's), since a
    face is too flat to tell a long lens from a short one; everything else is fitted, so a turned or
    tilted head in the image is matched as such, in perspective, as the portrait renders were made."""
    from scipy.optimize import least_squares

    from render.camera import Camera, focal_from_view_angle
    from render.preview import VIEW_ANGLE

    points, image_points = np.asarray(points, np.float64), np.asarray(image_points, np.float64)
    focal = focal_from_view_angle(VIEW_ANGLE if view_angle is None else view_angle, size)
    centre = points.mean(0)
    spread3, spread2 = np.linalg.norm(points[:, :2] - centre[:2], axis=1).mean(), \
        np.linalg.norm(image_points - image_points.mean(0), axis=1).mean()
    distance = focal * spread3 / max(spread2, 1e-6)  # the distance at which the face has the image's size
    shift = (image_points.mean(0) - size / 2) * distance / focal * np.array([-1.0, 1.0])  # target offset

    def camera(v: np.ndarray) -> Camera:
        return Camera((v[3], v[4], centre[2]), v[0], float(np.clip(v[1], -80, 80)), v[2], max(v[5], 1e-3), focal,
                      (size, size))

    def residuals(v: np.ndarray) -> np.ndarray:
        return (camera(v).project(points) - image_points).ravel()

    start = np.array([0.0, 0.0, 0.0, centre[0] + shift[0], centre[1] + shift[1], distance])
    return camera(least_squares(residuals, start, x_scale="jac").x)


def project_sequence(landmarks: np.ndarray, identity_landmarks: np.ndarray, size: int,
                     neutral_frame: int = 0) -> np.ndarray:
    """Image landmarks (F, 68, 2) of a 3D landmark sequence (F, 68, 3), cm, Y up, facing +z.

    The camera is ``fit_camera``'s for the sequence's neutral frame and the identity image's landmarks
    (pixels of a ``size``-pixel square image), so the face keeps the image's head pose, in
    perspective; every frame goes through that one camera, so the image moves as the sequence moves
    from its neutral frame."""
    frames = np.asarray(landmarks, np.float64)
    if frames.ndim != 3 or frames.shape[1:] != (68, 3):
        raise Face4DError(f"landmark frames must have shape (F, 68, 3), got {frames.shape}")
    target = np.asarray(identity_landmarks, np.float64)
    camera = fit_camera(frames[neutral_frame], target, int(size))
    return camera.project(frames).astype(np.float32)


NEURAL_WEIGHTS = Path(__file__).resolve().parent / "weights" / "neural"
"""Shipped neural models, one folder per model (``config.json`` + ``model.safetensors``)."""
TRAIN_COMMANDS = {"ccfexp": "neural-faces", "edit": "neural-edit", "region": "neural-region", "video": "neural-video"}
"""The command that trains each shipped model, named in the error when none ships."""


def neural_model(given: str | os.PathLike | None, name: str, option: str = "--neural-model") -> Path:
    """``given``, or the shipped default ``face4d/weights/neural/<name>`` when there is one; else one
    line saying what to pass and how to train one."""
    if given is not None:
        return Path(given)
    shipped = NEURAL_WEIGHTS / name
    if not ((shipped / "config.json").is_file() and (shipped / "model.safetensors").is_file()):
        raise Face4DError(f"no default {name!r} model ships with this install (face4d/weights/neural/{name}): "
                          f"give {option} DIR (train one with 'face4d train {TRAIN_COMMANDS[name]}')")
    return shipped


def load_video_model(model: str | os.PathLike, identity_image: np.ndarray, device: str = "cpu",
                     steps: int | None = None):
    """A ``FacEnhance`` model, checked against the identity image and the step count before any slow work."""
    with neural_errors():
        from render.neural.data import check_image
        from render.neural.facenhance_model import FacEnhance

        net = FacEnhance.from_pretrained(model, device)
        check_image(identity_image, net.config.size, "identity image")
        net.sampling_steps(steps)
    return net


def appearance_from_image(rgb: np.ndarray):
    """The look of the low-res renders (``face4d.data.portraits.Appearance``) matched to a person's image:
    the skin tone of its centre and the colour of its border as the background, with a frontal light;
    the features (lips, brows, eyes) follow from the skin as in the portrait data. The video model was
    trained on low-res frames of the same person as its identity image, so the colours should agree."""
    from face4d.data.portraits import BROW, LASH, LIPS, SKIN, draw_appearance
    from render.raster import Light

    image = np.asarray(rgb, np.float32) / 255
    h, w = image.shape[:2]
    skin = np.median(image[int(0.45 * h):int(0.6 * h), int(0.3 * w):int(0.7 * w)].reshape(-1, 3), axis=0)
    border = np.concatenate([image[:2].reshape(-1, 3), image[-2:].reshape(-1, 3), image[:, :2].reshape(-1, 3),
                             image[:, -2:].reshape(-1, 3)]).mean(0)
    look = draw_appearance(np.random.default_rng(0))  # eyes, hair: a fixed draw
    look.palette[SKIN] = skin  # and what draw_appearance derives from the skin
    look.palette[LIPS] = np.clip(skin * np.array([0.80, 0.45, 0.48]) + np.array([0.10, 0.0, 0.02]), 0, 1)
    look.palette[BROW] = np.minimum(look.palette[BROW], skin * 0.45)
    look.palette[LASH] = np.minimum(look.palette[BROW], skin * 0.3)
    look.light = Light(direction=(0.0, 0.3, 1.0), ambient=0.4, diffuse=0.65, specular=0.05)
    look.background = np.stack([border, border]).astype(np.float32)
    return look


def low_res_frames(meshes: Iterable[np.ndarray], head, identity_image: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """``size``² portrait renders (uint8 (size, size, 3)) of mesh frames (V, 3) on the head model's topology,
    frontal, coloured after ``identity_image``: the video model's low-res input, one frame at a time."""
    from face4d.data.portraits import PortraitRenderer

    renderer = PortraitRenderer(head)
    look, camera = appearance_from_image(identity_image), renderer.camera(size)
    for vertices in meshes:
        yield renderer.render(vertices, look, camera)[0]
