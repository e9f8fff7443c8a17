"""A pinhole model of a MuJoCo camera: world points to pixels and back.

MuJoCo stores a camera's pose as ``cam_xpos`` (3,) and ``cam_xmat`` (3, 3), whose
columns are the camera's x (image right), y (image up) and z axes in world
coordinates; the camera looks along -z. ``fovy`` is the vertical field of view.
Pixel coordinates here are continuous (u, v) = (column, row) with (0, 0) at the top
left corner of the image, so pixel (i, j) covers [j, j + 1) x [i, i + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PinholeCamera:
    """A fixed camera rendering (height, width) images.

    Attributes:
        position: (3,) camera centre in world coordinates.
        rotation: (3, 3) columns = camera x, y, z axes in world coordinates.
        fovy: vertical field of view in degrees.
        height, width: image size in pixels.
    """

    position: np.ndarray
    rotation: np.ndarray
    fovy: float
    height: int
    width: int

    @classmethod
    def from_mujoco(cls, model, data, camera_id: int, height: int, width: int):
        return cls(np.array(data.cam_xpos[camera_id], dtype=float),
                   np.array(data.cam_xmat[camera_id], dtype=float).reshape(3, 3),
                   float(model.cam_fovy[camera_id]), int(height), int(width))

    @property
    def focal(self) -> float:
        """Focal length in pixels."""
        return 0.5 * self.height / np.tan(np.deg2rad(self.fovy) / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> pixel coordinates (..., 2) as (u, v)."""
        cam = (np.asarray(points, dtype=float) - self.position) @ self.rotation  # (..., 3)
        depth = -cam[..., 2]
        if np.any(depth <= 0):
            raise ValueError("a point lies behind the camera")
        u = self.width / 2 + self.focal * cam[..., 0] / depth
        v = self.height / 2 - self.focal * cam[..., 1] / depth
        return np.stack([u, v], axis=-1)

    def unproject(self, uv: np.ndarray, z: float) -> np.ndarray:
        """Pixel coordinates (..., 2) -> world points (..., 3) on the plane height ``z``."""
        uv = np.asarray(uv, dtype=float)
        ray_cam = np.stack([(uv[..., 0] - self.width / 2) / self.focal,
                            -(uv[..., 1] - self.height / 2) / self.focal,
                            -np.ones(uv.shape[:-1])], axis=-1)
        ray = ray_cam @ self.rotation.T  # (..., 3) in world coordinates
        t = (z - self.position[2]) / ray[..., 2]
        return self.position + t[..., None] * ray
