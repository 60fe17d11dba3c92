"""Preview rendering of face meshes from numpy arrays; depends on meshops, never on face4d."""
from render.preview import MeshRenderer, image_grid, save_animation, save_image

__all__ = ["MeshRenderer", "image_grid", "save_animation", "save_image"]
