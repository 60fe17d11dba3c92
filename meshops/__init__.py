"""Mesh operations with no diffusion code: the morphable head, mesh I/O and safe file writing."""
from meshops.atomic import atomic_dir, atomic_file
from meshops.head import HeadModel
from meshops.io import MeshFileError, load_mesh, save_mesh
from meshops.pose import apply_head_pose

__all__ = ["HeadModel", "MeshFileError", "apply_head_pose", "atomic_dir", "atomic_file", "load_mesh", "save_mesh"]
