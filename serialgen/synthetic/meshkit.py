"""Low-poly mesh building blocks with hand-assigned skin weights (lofts, ellipsoids, caps).

Automatic weights fail on overlapping primitives, so every part carries its own bone weights;
parts are accumulated in a :class:`MeshBuilder` (plain numpy), which :func:`serialgen.assets.procedural.mesh_object`
makes one bpy mesh with UVs, materials and vertex groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

Vec = np.ndarray
Weights = dict[str, float]


def _frame(direction: Vec) -> tuple[Vec, Vec]:
    """Two unit vectors perpendicular to ``direction`` (u ~ sideways, w ~ depth or up)."""
    d = direction / np.linalg.norm(direction)
    ref = np.array([0.0, 0.0, 1.0]) if abs(d[1]) > 0.8 else np.array([0.0, 1.0, 0.0])
    u = np.cross(ref, d)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


@dataclass
class Ring:
    """One cross-section of a loft: an ellipse around ``center`` perpendicular to ``direction``."""

    center: Vec
    direction: Vec
    ru: float
    rw: float
    weights: Weights
    material: int = 0


@dataclass
class MeshBuilder:
    """Accumulates vertices, quads/triangles, per-loop UVs, per-face materials and vertex weights."""

    verts: list[Vec] = field(default_factory=list)
    faces: list[tuple[int, ...]] = field(default_factory=list)
    uvs: list[tuple[float, float]] = field(default_factory=list)
    materials: list[int] = field(default_factory=list)
    weights: list[Weights] = field(default_factory=list)
    shape_offsets: dict[str, dict[int, Vec]] = field(default_factory=dict)

    def add_vertex(self, co: Vec, weights: Weights) -> int:
        self.verts.append(np.asarray(co, dtype=float))
        self.weights.append(weights)
        return len(self.verts) - 1

    def add_face(self, idx: tuple[int, ...], uv: tuple[tuple[float, float], ...], material: int) -> None:
        self.faces.append(idx)
        self.uvs.extend(uv)
        self.materials.append(material)

    def loft(self, rings: list[Ring], segments: int = 12, cap_start: bool = True, cap_end: bool = True,
             skip: tuple[float, float] | None = None, uv_scale: tuple[float, float] = (1.0, 1.0)) -> list[list[int]]:
        """A tube through ``rings``; ``skip`` = (angle, half-width) leaves an opening (e.g. an open jacket)."""
        grid: list[list[int]] = []
        for ring in rings:
            u, w = _frame(ring.direction)
            row = []
            for j in range(segments):
                a = 2 * math.pi * j / segments
                co = ring.center + ring.ru * math.cos(a) * u + ring.rw * math.sin(a) * w
                row.append(self.add_vertex(co, ring.weights))
            grid.append(row)
        su, sv = uv_scale
        for i in range(len(rings) - 1):
            for j in range(segments):
                a = 2 * math.pi * (j + 0.5) / segments
                if skip is not None and abs(math.remainder(a - skip[0], 2 * math.pi)) < skip[1]:
                    continue
                j2 = (j + 1) % segments
                u0, u1 = su * j / segments, su * (j + 1) / segments
                v0, v1 = sv * i / len(rings), sv * (i + 1) / len(rings)
                uv = ((u0, v0), (u1, v0), (u1, v1), (u0, v1))
                self.add_face((grid[i][j], grid[i][j2], grid[i + 1][j2], grid[i + 1][j]), uv, rings[i].material)
        if cap_start:
            self._cap(rings[0], grid[0], flip=True)
        if cap_end:
            self._cap(rings[-1], grid[-1], flip=False)
        return grid

    def _cap(self, ring: Ring, row: list[int], flip: bool) -> None:
        center = self.add_vertex(ring.center, ring.weights)
        n = len(row)
        for j in range(n):
            a, b = row[j], row[(j + 1) % n]
            tri = (center, b, a) if flip else (center, a, b)
            self.add_face(tri, ((0.5, 0.5), (0.5, 0.5), (0.5, 0.5)), ring.material)

    def ellipsoid(self, center: Vec, radii: tuple[float, float, float], weights: Weights, material: int,
                  rings: int = 8, segments: int = 12, theta_max=None) -> list[int]:
        """An ellipsoid around ``center`` (axis-aligned); ``theta_max(phi)`` cuts it open below (hair caps)."""
        center = np.asarray(center, dtype=float)
        rx, ry, rz = radii
        top = self.add_vertex(center + [0, 0, rz], weights)
        grid = []
        for i in range(1, rings + 1):
            row = []
            for j in range(segments):
                phi = 2 * math.pi * j / segments
                limit = theta_max(phi) if theta_max else math.pi * (1 - 1e-3)
                theta = limit * i / (rings + (0 if theta_max else 1))
                co = center + [rx * math.sin(theta) * math.cos(phi), ry * math.sin(theta) * math.sin(phi),
                               rz * math.cos(theta)]
                row.append(self.add_vertex(co, weights))
            grid.append(row)
        uv0 = ((0.5, 0.5),) * 3
        for j in range(segments):
            self.add_face((top, grid[0][j], grid[0][(j + 1) % segments]), uv0, material)
        for i in range(rings - 1):
            for j in range(segments):
                j2 = (j + 1) % segments
                uv = ((j / segments, i / rings), ((j + 1) / segments, i / rings),
                      ((j + 1) / segments, (i + 1) / rings), (j / segments, (i + 1) / rings))
                self.add_face((grid[i][j], grid[i + 1][j], grid[i + 1][j2], grid[i][j2]), uv, material)
        if not theta_max:
            bottom = self.add_vertex(center - [0, 0, rz], weights)
            for j in range(segments):
                self.add_face((bottom, grid[-1][(j + 1) % segments], grid[-1][j]), uv0, material)
        return [top, *[v for row in grid for v in row]]

    def add_shape_offset(self, key: str, vertex: int, offset: Vec) -> None:
        self.shape_offsets.setdefault(key, {})[vertex] = np.asarray(offset, dtype=float)
