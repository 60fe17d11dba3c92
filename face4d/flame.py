"""FLAME fitted to generated landmark sequences: shape once, then expression, jaw and head pose per frame.

FLAME (Li et al. 2017) is the head model most face research code reads. Its licence forbids
redistribution, so the user gives their own copy (``FlameModel.load``); face4d fits it to a
sequence's 68 landmarks and writes the parameters (``FlameFit.save``, names as smplx's ``FLAME``
forward takes them) and the fitted meshes, which ``face4d.pipeline`` exports like any other.

The fit (``fit_flame``) runs in torch through smplx's skinning functions (``smplx.lbs``; smplx's
``FLAME`` class itself reads its landmark embedding from pickles, which we refuse by default):

1. **Shape**, once per sequence: the shape coefficients and the head's rotation and translation on
   the sequence's neutral frame, expression and jaw at rest.
2. **Motion**, every frame jointly: expression, jaw rotation, head rotation and translation, with
   the shape fixed, a prior towards rest and a temporal smoothness term on each.

Both are L-BFGS on a reduced model: only the vertices the landmarks sit on, plus FLAME's five
joints carried as extra "vertices" whose shape blend is the joint regressor applied to the shape
basis, which is exactly what ``lbs`` regresses from the full mesh. A 40-frame fit touches a few
hundred vertices instead of 5,023 (timings in ``docs/results.md``, *FLAME fitting*).

**Units**: face4d's landmarks and exported meshes are centimetres; FLAME's parameters and model are
metres (``CM_PER_M``).

**Files** (``docs/exports.md`` has the user-facing version): ``path`` is a model file or a folder
holding one. The model is ``FLAME_NEUTRAL`` (smplx's name) or ``generic_model`` (FLAME 2020's):
``.npz`` with FLAME's arrays, or the original ``.pkl`` only with ``trust_pickle``. The 68-point
landmark embedding is, in this order: embedding keys inside the model file, a
``landmark_embedding.npz`` beside it (``lmk_face_idx`` (68,) + ``lmk_b_coords`` (68, 3), or
``vertex_ids`` (68,)), or FLAME's own ``flame_static_embedding`` (51 inner points) with
``flame_dynamic_embedding`` (the 17 jaw-line points, looked up by head yaw), as ``.npz``, or as
their original ``.pkl`` / ``.npy`` pickles with ``trust_pickle``.
"""
from __future__ import annotations

import json
import os
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from face4d.data.coma import LandmarkEmbedding
from face4d.errors import Face4DError
from meshops.atomic import atomic_file
from meshops.head import NUM_LANDMARKS

CM_PER_M = 100.0
NUM_JOINTS = 5  # global, neck, jaw, left eye, right eye
NECK_KIN_CHAIN = (1, 0)
SHAPE_SPACE = 300
"""FLAME's ``shapedirs`` hold 300 shape columns, then the expression columns (100 in FLAME 2020);
an ``.npz`` may say otherwise with a ``num_shape`` entry (small test models do)."""
MODEL_NAMES = ("FLAME_NEUTRAL", "generic_model")
EMBEDDING_NAME = "landmark_embedding"
STATIC_NAME, DYNAMIC_NAME = "flame_static_embedding", "flame_dynamic_embedding"
ROTATION_UNIT, TRANSLATION_UNIT = 0.01, 0.001  # what the fit optimises: centiradians, millimetres
CONTOUR = 17  # iBUG points 0-16, the jaw line; FLAME's static embedding holds 17-67
PICKLE_WHY = ("a pickle can run arbitrary code when it is loaded; re-save it as .npz (see docs/exports.md), "
              "or pass --trust-pickle if you trust where it came from")
MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


# ------------------------------------------------------------------------------------------ files

def _read_arrays(path: Path, trust_pickle: bool) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``, or of a pickled dict (``.pkl``, FLAME's ``.npy``) with ``trust_pickle``."""
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".pkl", ".npy"):
        raise Face4DError(f"{path}: unsupported FLAME file type {suffix or '(none)'!r}; use .npz")
    if suffix != ".npz" and not trust_pickle:
        raise Face4DError(f"{path}: refusing to load a pickle: {PICKLE_WHY}")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        if suffix == ".npy":
            loaded = np.load(path, allow_pickle=True, encoding="latin1")
            loaded = loaded[()] if loaded.dtype == object and loaded.shape == () else loaded
        else:
            with open(path, "rb") as f:
                loaded = pickle.load(f, encoding="latin1")
    except Exception as exc:
        raise Face4DError(f"{path}: cannot read it ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, dict):
        raise Face4DError(f"{path}: expected a dictionary of arrays, got {type(loaded).__name__}")
    return {str(key): _dense(value) for key, value in loaded.items()}


def _dense(value) -> np.ndarray:
    """FLAME's pickles hold a scipy sparse ``J_regressor`` and, with chumpy installed, chumpy arrays."""
    if hasattr(value, "toarray"):
        value = value.toarray()
    return np.asarray(value)


def _find(folder: Path, stem: str, trust_pickle: bool, pickled: tuple[str, ...] = (".pkl",)) -> Path | None:
    """``folder/stem.npz``, else the pickled original (named even without ``trust_pickle``, so that
    the refusal says why)."""
    for suffix in (".npz", *pickled):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    return None


# ------------------------------------------------------------------------------ landmark embedding

@dataclass
class FlameLandmarks:
    """Where the 68 iBUG landmarks sit on FLAME's surface: triangles and barycentric coordinates.

    ``face_idx`` / ``b_coords`` hold the fixed points (all 68, or FLAME's 51 inner ones, iBUG
    17-67, when ``dynamic_face_idx`` is given); ``dynamic_face_idx`` (Y, 17) / ``dynamic_b_coords``
    (Y, 17, 3) are FLAME's jaw-line look-up table, one row per degree of head yaw (smplx's
    ``find_dynamic_lmk_idx_and_bcoords`` picks the row), because the visible jaw line moves over
    the surface as the head turns.
    """

    face_idx: np.ndarray
    b_coords: np.ndarray
    dynamic_face_idx: np.ndarray | None = None
    dynamic_b_coords: np.ndarray | None = None

    def __post_init__(self) -> None:
        count = NUM_LANDMARKS if self.dynamic_face_idx is None else NUM_LANDMARKS - CONTOUR
        self.face_idx = np.asarray(self.face_idx).reshape(-1).astype(np.int64)
        self.b_coords = np.asarray(self.b_coords, np.float64).reshape(-1, 3)
        if len(self.face_idx) != count or len(self.b_coords) != count:
            raise Face4DError(f"the landmark embedding needs {count} points, got {len(self.face_idx)} triangle "
                              f"indices and {len(self.b_coords)} barycentric coordinates"
                              + ("" if self.dynamic_face_idx is not None else
                                 " (FLAME's 51-point static embedding also needs flame_dynamic_embedding)"))
        if self.dynamic_face_idx is not None:
            self.dynamic_face_idx = np.asarray(self.dynamic_face_idx).astype(np.int64)
            self.dynamic_b_coords = np.asarray(self.dynamic_b_coords, np.float64)
            rows = len(self.dynamic_face_idx)
            if self.dynamic_face_idx.shape != (rows, CONTOUR) or self.dynamic_b_coords.shape != (rows, CONTOUR, 3):
                raise Face4DError(f"the dynamic embedding needs lmk_face_idx (Y, {CONTOUR}) and lmk_b_coords "
                                  f"(Y, {CONTOUR}, 3), got {self.dynamic_face_idx.shape} and "
                                  f"{self.dynamic_b_coords.shape}")

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], faces: np.ndarray) -> "FlameLandmarks | None":
        """The embedding held by one dictionary of arrays, or None when it holds none. Keys: a 68-point
        ``lmk_face_idx`` + ``lmk_b_coords`` or ``vertex_ids`` (``LandmarkEmbedding``'s), DECA's
        ``full_lmk_faces_idx`` + ``full_lmk_bary_coords``, or static ``lmk_face_idx`` (51) with
        ``dynamic_lmk_faces_idx`` + ``dynamic_lmk_bary_coords``."""
        if "dynamic_lmk_faces_idx" in arrays:
            static = ("static_lmk_faces_idx", "static_lmk_bary_coords")
            if not all(key in arrays for key in static):
                static = ("lmk_face_idx", "lmk_b_coords")
            return cls(arrays[static[0]], arrays[static[1]], arrays["dynamic_lmk_faces_idx"],
                       arrays.get("dynamic_lmk_bary_coords"))
        if "full_lmk_faces_idx" in arrays:
            return cls(arrays["full_lmk_faces_idx"], arrays["full_lmk_bary_coords"])
        if "vertex_ids" in arrays or "lmk_face_idx" in arrays:
            embedding = LandmarkEmbedding(vertex_ids=arrays.get("vertex_ids"), face_idx=arrays.get("lmk_face_idx"),
                                          b_coords=arrays.get("lmk_b_coords"))
            if embedding.vertex_ids is None:
                return cls(embedding.face_idx, embedding.b_coords)
            return cls(*_vertices_as_barycentric(embedding.vertex_ids, faces))
        return None

    def check(self, num_faces: int) -> None:
        used = self.face_idx if self.dynamic_face_idx is None else np.concatenate(
            [self.face_idx, self.dynamic_face_idx.ravel()])
        if used.min() < 0 or used.max() >= num_faces:
            raise Face4DError(f"the landmark embedding uses triangle {used.max()} but the model has {num_faces}")

    def all_faces(self) -> np.ndarray:
        """Every triangle any landmark may sit on."""
        if self.dynamic_face_idx is None:
            return self.face_idx
        return np.concatenate([self.face_idx, self.dynamic_face_idx.ravel()])


def _vertices_as_barycentric(vertex_ids: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A vertex landmark as a point of a triangle holding it: weight 1 on that corner."""
    face_idx, b_coords = np.empty(len(vertex_ids), np.int64), np.zeros((len(vertex_ids), 3))
    for i, vid in enumerate(vertex_ids):
        rows, corners = np.nonzero(faces == vid)
        if not len(rows):
            raise Face4DError(f"landmark vertex {vid} is in no triangle of the FLAME model")
        face_idx[i], b_coords[i, corners[0]] = rows[0], 1.0
    return face_idx, b_coords


# ---------------------------------------------------------------------------------------- model

@dataclass
class FlameModel:
    """A FLAME model's arrays (metres), as smplx's ``lbs`` takes them, and its landmark embedding."""

    v_template: np.ndarray      # (V, 3)
    shapedirs: np.ndarray       # (V, 3, shape + expression)
    num_shape: int
    posedirs: np.ndarray        # (P, V * 3), smplx's layout
    J_regressor: np.ndarray     # (5, V)
    weights: np.ndarray         # (V, 5)
    parents: np.ndarray         # (5,), -1 for the root
    faces: np.ndarray           # (T, 3)
    landmarks: FlameLandmarks
    source: str = "FLAME"

    @property
    def num_vertices(self) -> int:
        return len(self.v_template)

    @property
    def num_expression(self) -> int:
        return self.shapedirs.shape[-1] - self.num_shape

    @classmethod
    def load(cls, path: str | os.PathLike, trust_pickle: bool = False) -> "FlameModel":
        """A model file, or a folder holding one, with its landmark embedding (module docstring).
        Every problem is a one-line ``Face4DError``; pickles load only with ``trust_pickle``."""
        path = Path(path).expanduser()
        if path.is_dir():
            found = [p for p in (_find(path, name, trust_pickle) for name in MODEL_NAMES) if p is not None]
            if not found:
                raise Face4DError(f"{path}: no FLAME model in this folder (expected "
                                  f"{' or '.join(n + '.npz' for n in MODEL_NAMES)}, or the .pkl with --trust-pickle)")
            path = found[0]
        elif not path.is_file():
            raise Face4DError(f"{path}: no such FLAME model file or folder")
        arrays = _read_arrays(path, trust_pickle)
        missing = [key for key in MODEL_KEYS if key not in arrays]
        if missing:
            raise Face4DError(f"{path}: not a FLAME model: missing {', '.join(missing)}")
        try:
            model = cls._from_arrays(arrays, path)
            embedding = FlameLandmarks.from_arrays(arrays, model.faces) or _embedding_beside(path, model.faces,
                                                                                             trust_pickle)
            embedding.check(len(model.faces))
        except Face4DError as exc:
            raise Face4DError(f"{path}: {exc}") from None
        except (ValueError, TypeError, IndexError) as exc:  # arrays of the wrong shape or type
            raise Face4DError(f"{path}: not a usable FLAME model ({exc})") from None
        model.landmarks = embedding
        return model

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """One ``.npz`` in FLAME's layout holding the model and its landmark embedding (folders
        made as needed): how a trusted pickle is converted once
        (``FlameModel.load(..., trust_pickle=True).save(...)``)."""
        path = Path(path)
        emb = self.landmarks
        embedding = ({"lmk_face_idx": emb.face_idx, "lmk_b_coords": emb.b_coords} if emb.dynamic_face_idx is None
                     else {"static_lmk_faces_idx": emb.face_idx, "static_lmk_bary_coords": emb.b_coords,
                           "dynamic_lmk_faces_idx": emb.dynamic_face_idx,
                           "dynamic_lmk_bary_coords": emb.dynamic_b_coords})
        kintree = np.stack([np.where(self.parents < 0, 2**32 - 1, self.parents), np.arange(NUM_JOINTS)])
        posedirs = self.posedirs.T.reshape(self.num_vertices, 3, -1)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, v_template=self.v_template, shapedirs=self.shapedirs, num_shape=np.int64(self.num_shape),
                         posedirs=posedirs, J_regressor=self.J_regressor, weights=self.weights,
                         kintree_table=kintree, f=self.faces, **embedding)
        return path

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], path: Path) -> "FlameModel":
        v_template = np.asarray(arrays["v_template"], np.float64)
        count = len(v_template)
        if v_template.shape != (count, 3) or count == 0 or not np.isfinite(v_template).all():
            raise Face4DError(f"v_template must be finite (V, 3), got {v_template.shape}")
        shapedirs = np.asarray(arrays["shapedirs"], np.float64)
        if shapedirs.ndim == 2:
            shapedirs = shapedirs[:, :, None]
        num_shape = int(arrays["num_shape"]) if "num_shape" in arrays else SHAPE_SPACE
        if shapedirs.shape[:2] != (count, 3) or not 0 < num_shape < shapedirs.shape[2]:
            raise Face4DError(f"shapedirs must be (V, 3, shape + expression) with more than {num_shape} columns "
                              f"(num_shape), got {shapedirs.shape}")
        posedirs = np.asarray(arrays["posedirs"], np.float64)
        posedirs = posedirs.reshape(-1, posedirs.shape[-1]).T  # FLAME's (V, 3, P) -> smplx's (P, V * 3)
        weights = np.asarray(arrays["weights"], np.float64)
        regressor = np.asarray(arrays["J_regressor"], np.float64)
        kintree = np.asarray(arrays["kintree_table"]).astype(np.int64)
        faces = np.asarray(arrays["f"]).astype(np.int64)
        expected = {"posedirs": (posedirs.shape, ((NUM_JOINTS - 1) * 9, count * 3)),
                    "weights": (weights.shape, (count, NUM_JOINTS)),
                    "J_regressor": (regressor.shape, (NUM_JOINTS, count)),
                    "kintree_table": (kintree.shape, (2, NUM_JOINTS))}
        for name, (got, want) in expected.items():
            if got != want:
                raise Face4DError(f"{name} has shape {got}, expected {want} for FLAME's {NUM_JOINTS} joints")
        if faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= count:
            raise Face4DError(f"f must be (T, 3) vertex indices below {count}")
        parents = kintree[0].copy()
        parents[0] = -1
        return cls(v_template, shapedirs, num_shape, posedirs, regressor, weights, parents, faces,
                   FlameLandmarks(np.zeros(NUM_LANDMARKS), np.zeros((NUM_LANDMARKS, 3))), str(path))


def _embedding_beside(model_path: Path, faces: np.ndarray, trust_pickle: bool) -> FlameLandmarks:
    folder = model_path.parent
    full = _find(folder, EMBEDDING_NAME, trust_pickle, (".npy",))
    if full is not None:
        embedding = FlameLandmarks.from_arrays(_read_arrays(full, trust_pickle), faces)
        if embedding is None:
            raise Face4DError(f"{full}: holds no landmark embedding (lmk_face_idx + lmk_b_coords, or vertex_ids)")
        return embedding
    static, dynamic = _find(folder, STATIC_NAME, trust_pickle), _find(folder, DYNAMIC_NAME, trust_pickle, (".npy",))
    if static is None or dynamic is None:
        raise Face4DError(f"no landmark embedding: put {EMBEDDING_NAME}.npz, or {STATIC_NAME} and {DYNAMIC_NAME}, "
                          f"next to the model in {folder}")
    static_arrays, dynamic_arrays = _read_arrays(static, trust_pickle), _read_arrays(dynamic, trust_pickle)
    try:
        return FlameLandmarks(static_arrays["lmk_face_idx"], static_arrays["lmk_b_coords"],
                              dynamic_arrays["lmk_face_idx"], dynamic_arrays["lmk_b_coords"])
    except KeyError as exc:
        raise Face4DError(f"{static.name} / {dynamic.name}: missing key {exc}") from None


def require_smplx() -> None:
    import importlib.util

    if importlib.util.find_spec("smplx") is None:
        raise Face4DError("FLAME fitting needs smplx: pip install 'face4d[flame]'")


# ------------------------------------------------------------------------------------- the fit

@dataclass
class FlameFitConfig:
    """How ``fit_flame`` fits. Priors and smoothness are weights against the landmark term, which
    is the mean squared landmark error in mm²; the coefficients are in FLAME's units (standard
    deviations of its PCA spaces, radians, millimetres of translation)."""

    num_shape: int = 100
    num_expression: int = 50
    shape_prior: float = 0.01
    expression_prior: float = 0.01
    jaw_prior: float = 1.0
    smoothness: float = 0.1
    shape_iterations: int = 60
    motion_iterations: int = 150


@dataclass
class FlameFit:
    """One sequence's FLAME parameters (metres, radians; smplx ``FLAME`` forward names), the fitted
    meshes in centimetres and the fit's landmark error per frame (mm)."""

    betas: np.ndarray            # (S,)
    expression: np.ndarray       # (F, E)
    global_orient: np.ndarray    # (F, 3) axis-angle about the root joint
    jaw_pose: np.ndarray         # (F, 3)
    transl: np.ndarray           # (F, 3) metres
    meshes: np.ndarray           # (F, V, 3) float32 centimetres
    rest: np.ndarray             # (V, 3) float32 centimetres: the fitted person, no expression or pose
    faces: np.ndarray            # (T, 3)
    landmark_error_mm: np.ndarray  # (F,) mean Euclidean distance over the 68 landmarks
    seconds: float
    config: FlameFitConfig = field(default_factory=FlameFitConfig)

    def params(self) -> dict[str, np.ndarray]:
        """The parameter arrays of ``flame_params.npz`` (neck and eyes at rest, as fitted)."""
        zeros = np.zeros_like(self.jaw_pose)
        return {"betas": self.betas, "expression": self.expression, "global_orient": self.global_orient,
                "neck_pose": zeros, "jaw_pose": self.jaw_pose, "leye_pose": zeros, "reye_pose": zeros,
                "transl": self.transl}

    def save(self, path: str | os.PathLike, fps: float, overwrite: bool = False) -> Path:
        """``flame_params.npz``: ``params()`` plus the fps, the per-frame landmark error and the fit
        config (JSON), written atomically."""
        path = Path(path)
        extra = {"fps": np.float64(fps), "landmark_error_mm": self.landmark_error_mm,
                 "units": np.str_("metres, radians (axis-angle); face4d's meshes are these x 100 (centimetres)"),
                 "config": np.str_(json.dumps(asdict(self.config)))}
        with atomic_file(path, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **self.params(), **extra)
        return path


class ReducedFlame:
    """The model restricted to the landmark triangles' vertices plus the five joints (module
    docstring), as torch tensors for smplx's ``lbs``. ``columns``: the fitted ``shapedirs`` columns."""

    def __init__(self, model: FlameModel, columns: np.ndarray):
        import torch

        tensor = lambda a, dtype=torch.float64: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        emb = model.landmarks
        count = model.num_vertices
        keep = np.unique(model.faces[emb.all_faces()])
        new_index = np.full(count, -1, np.int64)
        new_index[keep] = np.arange(len(keep))
        shapedirs = model.shapedirs[:, :, columns]
        joint_dirs = np.einsum("jv,vkc->jkc", model.J_regressor, shapedirs)
        posedirs = model.posedirs.reshape(len(model.posedirs), count, 3)[:, keep]
        self.num_kept = len(keep)
        self.v_template = tensor(np.concatenate([model.v_template[keep], model.J_regressor @ model.v_template]))
        self.shapedirs = tensor(np.concatenate([shapedirs[keep], joint_dirs]))
        self.posedirs = tensor(np.concatenate([posedirs, np.zeros((len(posedirs), NUM_JOINTS, 3))], 1)
                               .reshape(len(posedirs), -1))
        self.J_regressor = tensor(np.concatenate([np.zeros((NUM_JOINTS, len(keep))), np.eye(NUM_JOINTS)], 1))
        self.weights = tensor(np.concatenate([model.weights[keep], np.zeros((NUM_JOINTS, NUM_JOINTS))]))
        self.parents = tensor(model.parents, torch.long)
        self.faces = tensor(np.where(new_index[model.faces] < 0, 0, new_index[model.faces]), torch.long)
        self.face_idx = tensor(emb.face_idx, torch.long)
        self.b_coords = tensor(emb.b_coords)
        self.dynamic = emb.dynamic_face_idx is not None
        if self.dynamic:
            self.dynamic_face_idx = tensor(emb.dynamic_face_idx, torch.long)
            self.dynamic_b_coords = tensor(emb.dynamic_b_coords)
        self.neck_chain = tensor(NECK_KIN_CHAIN, torch.long)

    def forward(self, coefficients, global_orient, jaw_pose, transl):
        """Vertices (B, kept, 3) and the 68 landmarks (B, 68, 3) in metres, iBUG order."""
        import torch
        from smplx.lbs import find_dynamic_lmk_idx_and_bcoords, lbs, vertices2landmarks

        batch = len(global_orient)
        zeros = torch.zeros_like(global_orient)
        pose = torch.cat([global_orient, zeros, jaw_pose, zeros, zeros], 1)
        coefficients = coefficients.expand(batch, -1)
        vertices, _ = lbs(coefficients, pose, self.v_template, self.shapedirs, self.posedirs, self.J_regressor,
                          self.parents, self.weights)
        vertices = vertices[:, :self.num_kept] + transl[:, None]
        marks = vertices2landmarks(vertices, self.faces, self.face_idx.repeat(batch, 1),
                                   self.b_coords.repeat(batch, 1, 1))
        if self.dynamic:
            idx, bary = find_dynamic_lmk_idx_and_bcoords(vertices, pose, self.dynamic_face_idx,
                                                         self.dynamic_b_coords, self.neck_chain)
            marks = torch.cat([vertices2landmarks(vertices, self.faces, idx, bary), marks], 1)
        return vertices, marks


def fit_flame(model: FlameModel, landmarks: np.ndarray, neutral: int = 0,
              config: FlameFitConfig | None = None) -> FlameFit:
    """Fit ``model`` to one landmark sequence (F, 68, 3) in centimetres (module docstring): shape on
    frame ``neutral``, then expression, jaw and head pose on all frames jointly."""
    import torch
    from smplx.lbs import lbs

    require_smplx()
    config = config or FlameFitConfig()
    targets = np.asarray(landmarks, np.float64)
    if targets.ndim != 3 or targets.shape[1:] != (NUM_LANDMARKS, 3) or not np.isfinite(targets).all():
        raise Face4DError(f"FLAME fitting needs finite landmarks (F, {NUM_LANDMARKS}, 3), got {targets.shape}")
    frames = len(targets)
    if not 0 <= neutral < frames:
        raise Face4DError(f"neutral frame {neutral} is out of range for {frames} frames")
    num_shape, num_expression = min(config.num_shape, model.num_shape), min(config.num_expression,
                                                                             model.num_expression)
    columns = np.r_[np.arange(num_shape), model.num_shape + np.arange(num_expression)]
    start = time.perf_counter()
    with torch.enable_grad():
        reduced = ReducedFlame(model, columns)
        target = torch.as_tensor(targets / CM_PER_M)
        orient0, transl0 = _rigid_start(model, reduced, targets[neutral] / CM_PER_M)

        # 1. shape and head pose on the neutral frame. Rotations are optimised in centiradians and
        # translations in millimetres, so that a unit step of every variable moves the landmarks by
        # about a millimetre and L-BFGS starts well scaled.
        betas = torch.zeros(num_shape, dtype=torch.float64, requires_grad=True)
        orient = torch.tensor(orient0[None] / ROTATION_UNIT, requires_grad=True)
        transl = torch.tensor(transl0[None] / TRANSLATION_UNIT, requires_grad=True)
        rest = torch.zeros(1, num_expression, dtype=torch.float64)

        def shape_loss():
            _, marks = reduced.forward(torch.cat([betas[None], rest], 1), orient * ROTATION_UNIT,
                                       torch.zeros_like(orient), transl * TRANSLATION_UNIT)
            return _landmark_term(marks, target[neutral:neutral + 1]) + config.shape_prior * betas.square().sum()

        _minimise([betas, orient, transl], shape_loss, config.shape_iterations)

        # 2. expression, jaw and head pose on every frame, shape fixed
        shape = betas.detach()[None].expand(frames, -1)
        expression = torch.zeros(frames, num_expression, dtype=torch.float64, requires_grad=True)
        jaw = torch.zeros(frames, 3, dtype=torch.float64, requires_grad=True)
        orients = orient.detach().repeat(frames, 1).requires_grad_()
        transls = transl.detach().repeat(frames, 1).requires_grad_()

        def motion_loss():
            _, marks = reduced.forward(torch.cat([shape, expression], 1), orients * ROTATION_UNIT,
                                       jaw * ROTATION_UNIT, transls * TRANSLATION_UNIT)
            prior = (config.expression_prior * expression.square().sum(1)
                     + config.jaw_prior * (jaw * ROTATION_UNIT).square().sum(1))
            smooth = sum(_roughness(p) for p in (expression, jaw, orients, transls))
            return _landmark_term(marks, target) + prior.mean() + config.smoothness * smooth

        _minimise([expression, jaw, orients, transls], motion_loss, config.motion_iterations)
        expression, jaw = expression.detach(), jaw.detach() * ROTATION_UNIT
        orients, transls = orients.detach() * ROTATION_UNIT, transls.detach() * TRANSLATION_UNIT

        with torch.no_grad():
            _, marks = reduced.forward(torch.cat([shape, expression], 1), orients, jaw, transls)
            error = (marks - target).norm(dim=-1).mean(-1) * 1000.0
            full = _full_tensors(model, columns)
            coefficients = torch.cat([shape, expression], 1)
            pose = torch.cat([orients, torch.zeros_like(orients), jaw, torch.zeros(frames, 6, dtype=torch.float64)],
                             1)
            vertices, _ = lbs(coefficients, pose, *full)
            vertices = vertices + transls[:, None]
            rest_vertices, _ = lbs(torch.cat([betas.detach(), torch.zeros(num_expression, dtype=torch.float64)])[None],
                                   torch.zeros(1, 3 * NUM_JOINTS, dtype=torch.float64), *full)
    return FlameFit(betas.detach().numpy().copy(), expression.numpy().copy(), orients.numpy().copy(),
                    jaw.numpy().copy(), transls.numpy().copy(),
                    (vertices.numpy() * CM_PER_M).astype(np.float32),
                    (rest_vertices[0].numpy() * CM_PER_M).astype(np.float32), model.faces, error.numpy(),
                    time.perf_counter() - start, config)


def _full_tensors(model: FlameModel, columns: np.ndarray):
    """``lbs``'s model arguments for the whole mesh, with the fitted shape and expression columns."""
    import torch

    as_tensor = lambda a, dtype=torch.float64: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
    return (as_tensor(model.v_template), as_tensor(model.shapedirs[:, :, columns]), as_tensor(model.posedirs),
            as_tensor(model.J_regressor), as_tensor(model.parents, torch.long), as_tensor(model.weights))


def _rigid_start(model: FlameModel, reduced: ReducedFlame, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Head rotation (axis-angle about the root joint) and translation that put the template's
    landmarks best onto ``target`` (68, 3) metres: the fit's starting point."""
    import torch
    from scipy.spatial.transform import Rotation

    with torch.no_grad():
        zeros = torch.zeros(1, 3, dtype=torch.float64)
        _, marks = reduced.forward(torch.zeros(1, reduced.shapedirs.shape[-1], dtype=torch.float64), zeros, zeros,
                                   zeros)
    source = marks[0].numpy()
    rotation, _ = Rotation.align_vectors(target - target.mean(0), source - source.mean(0))
    root = model.J_regressor[0] @ model.v_template
    matrix = rotation.as_matrix()
    # lbs rotates about the root joint: x -> R (x - root) + root + transl
    transl = target.mean(0) - matrix @ (source.mean(0) - root) - root
    return rotation.as_rotvec(), transl


def _landmark_term(marks, target):
    """Mean squared landmark distance in mm²."""
    return ((marks - target) * 1000.0).square().sum(-1).mean()


def _roughness(values):
    """Mean squared frame-to-frame change."""
    if len(values) < 2:
        return values.new_zeros(())
    return (values[1:] - values[:-1]).square().sum(-1).mean()


def _minimise(params, loss_fn, iterations: int) -> None:
    import torch

    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, max_eval=2 * iterations, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-9)

    def closure():
        optimiser.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    optimiser.step(closure)
