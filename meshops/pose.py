"""Rigid head motion: an axis-angle rotation about a pivot followed by a translation, per frame."""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def apply_head_pose(points: np.ndarray, head_pose: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Move ``points`` (..., P, 3) by ``head_pose`` (..., 6) = (axis-angle in radians, translation).

    The rotation turns about ``pivot`` (3,) so that a small pose nods the head on its neck instead
    of swinging it around the model's origin.
    """
    points = np.asarray(points, np.float32)
    head_pose = np.asarray(head_pose, np.float64)
    lead = head_pose.shape[:-1]
    rot = Rotation.from_rotvec(head_pose.reshape(-1, 3 + 3)[:, :3]).as_matrix().reshape(*lead, 3, 3)
    centred = points - pivot
    moved = np.einsum("...ij,...pj->...pi", rot, centred) + pivot + head_pose[..., None, 3:]
    return moved.astype(np.float32)
