"""Mesh operations with no diffusion code: the morphable head, mesh I/O, safe file writing, and the
spiral orderings, decimation hierarchy and torch layers of spiral-convolution mesh autoencoders."""
from importlib import import_module

from meshops.atomic import atomic_dir, atomic_file
from meshops.head import HeadModel
from meshops.hierarchy import MeshHierarchy, barycentric_matrix, build_hierarchy, cached_hierarchy, decimate
from meshops.io import MeshFileError, load_mesh, save_mesh
from meshops.pose import apply_head_pose
from meshops.spiral import cached_spiral_indices, spiral_indices

# The torch layers load on first use, so that `import meshops` does not import torch.
_TORCH_EXPORTS = {"SparseOperator": "meshops.spiralconv", "SpiralConv": "meshops.spiralconv",
                  "sparse_to_torch": "meshops.spiralconv", "spiral_matrix": "meshops.spiralconv"}


def __getattr__(name: str):
    if name in _TORCH_EXPORTS:
        return getattr(import_module(_TORCH_EXPORTS[name]), name)
    raise AttributeError(f"module 'meshops' has no attribute {name!r}")


__all__ = ["HeadModel", "MeshFileError", "MeshHierarchy", "SparseOperator", "SpiralConv", "apply_head_pose",
           "atomic_dir", "atomic_file", "barycentric_matrix", "build_hierarchy", "cached_hierarchy",
           "cached_spiral_indices", "decimate", "load_mesh", "save_mesh", "sparse_to_torch", "spiral_indices",
           "spiral_matrix"]
