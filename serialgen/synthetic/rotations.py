"""Rotation helpers in plain numpy (3x3 matrices, (w, x, y, z) quaternions, rotation vectors)."""

from __future__ import annotations

import numpy as np


def bone_frame(direction) -> np.ndarray:
    """Blender's rest frame of a bone pointing along ``direction`` with roll 0 (``vec_roll_to_mat3``)."""
    x, y, z = np.asarray(direction, float) / np.linalg.norm(direction)
    theta, theta_alt = 1.0 + y, x * x + z * z
    if theta <= 6.1e-3 and theta_alt <= (2.5e-4) ** 2:   # pointing along -Y
        return np.diag([-1.0, -1.0, 1.0])
    if theta <= 6.1e-3:
        theta = theta_alt * 0.5 + theta_alt * theta_alt * 0.125
    return np.array([[1 - x * x / theta, x, -x * z / theta],
                     [-x, y, -z],
                     [-x * z / theta, z, 1 - z * z / theta]])


def orthonormal(m) -> np.ndarray:
    """The rotation nearest to ``m`` (drops scale and shear)."""
    u, _, vt = np.linalg.svd(np.asarray(m, float))
    r = u @ vt
    return r if np.linalg.det(r) > 0 else u @ np.diag([1.0, 1.0, -1.0]) @ vt


def _skew(v) -> np.ndarray:
    return np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])


def rotvec_to_mat(v) -> np.ndarray:
    v = np.asarray(v, float)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = _skew(v / angle)
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def swing(a, b) -> np.ndarray:
    """The smallest rotation taking direction ``a`` onto direction ``b``."""
    a, b = np.asarray(a, float) / np.linalg.norm(a), np.asarray(b, float) / np.linalg.norm(b)
    axis, cos = np.cross(a, b), float(np.dot(a, b))
    if cos < -0.999999:
        perp = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        return rotvec_to_mat(np.pi * perp / np.linalg.norm(perp))
    k = _skew(axis)
    return np.eye(3) + k + k @ k / (1 + cos)


def quat_to_mat(q) -> np.ndarray:
    """Rotation matrix of a (w, x, y, z) quaternion, or of each in a stack: (..., 4) -> (..., 3, 3)."""
    q = np.asarray(q, float)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    m = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    return np.moveaxis(m, (0, 1), (-2, -1))


def mat_to_quat(m) -> np.ndarray:
    """(w, x, y, z) with w >= 0 of a rotation matrix, or of each in a stack: (..., 3, 3) -> (..., 4)."""
    m = np.asarray(m, float)
    flat = m.reshape(-1, 3, 3)
    q = np.empty((len(flat), 4))
    t = np.trace(flat, axis1=1, axis2=2)
    big = t > 0
    f = flat[big]
    s = 2 * np.sqrt(t[big] + 1)
    q[big] = np.stack([s / 4, (f[:, 2, 1] - f[:, 1, 2]) / s, (f[:, 0, 2] - f[:, 2, 0]) / s,
                       (f[:, 1, 0] - f[:, 0, 1]) / s], axis=1)
    # Otherwise (turns of 120 degrees or more) start from the largest diagonal element.
    f, rows = flat[~big], np.flatnonzero(~big)
    i = np.argmax(np.diagonal(f, axis1=1, axis2=2), axis=1)
    j, k, n = (i + 1) % 3, (i + 2) % 3, np.arange(len(f))
    s = 2 * np.sqrt(1 + f[n, i, i] - f[n, j, j] - f[n, k, k])
    q[rows, 0] = (f[n, k, j] - f[n, j, k]) / s
    q[rows, 1 + i] = s / 4
    q[rows, 1 + j] = (f[n, j, i] + f[n, i, j]) / s
    q[rows, 1 + k] = (f[n, k, i] + f[n, i, k]) / s
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q *= np.where(q[:, :1] >= 0, 1.0, -1.0)
    return q.reshape(m.shape[:-2] + (4,))
