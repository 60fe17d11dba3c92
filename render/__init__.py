"""Preview rendering of face meshes from numpy arrays; depends on meshops, never on face4d."""
from render.preview import MeshRenderer, grid_layout, image_grid, save_animation, save_image
from render.sequence import face_box, grid_frames, render_grid, render_sequence, render_side_by_side

__all__ = ["MeshRenderer", "face_box", "grid_frames", "grid_layout", "image_grid", "render_grid", "render_sequence",
           "render_side_by_side", "save_animation", "save_image"]
