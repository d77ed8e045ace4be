"""The node hierarchy of a glTF/GLB file and its rest transforms, read from the file's JSON (no bpy).

Web animation libraries and Mixamo-to-glTF converters write skeletons as plain nodes (no skin, no
mesh) named like ``mixamorig:Hips``; Blender imports those as empties whose animated transforms are
the skeleton. The rest pose is the nodes' own TRS in the file: once imported, the empties already
show the animation's first frame, so it is read here.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serialgen.synthetic.rotations import quat_to_mat

#: glTF is Y up, Blender Z up: Blender's importer maps (x, y, z) to (x, -z, y).
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
GLB_MAGIC, JSON_CHUNK = 0x46546C67, 0x4E4F534A


@dataclass(frozen=True)
class Node:
    name: str
    parent: int | None
    rest: np.ndarray      # 4x4 world matrix at rest, Blender axes


def read_json(path: str | Path) -> dict:
    """The glTF JSON of a ``.gltf`` or ``.glb`` file."""
    data = Path(path).read_bytes()
    if data[:4] != struct.pack("<I", GLB_MAGIC):
        return json.loads(data)
    length, kind = struct.unpack("<II", data[12:20])
    if kind != JSON_CHUNK:
        raise ValueError("GLB without a JSON chunk")
    return json.loads(data[20:20 + length])


def local_matrix(node: dict) -> np.ndarray:
    """A node's local 4x4 transform (``matrix`` or translation/rotation/scale), glTF axes."""
    if "matrix" in node:
        return np.array(node["matrix"], np.float64).reshape(4, 4).T   # column-major in the file
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    m = np.eye(4)
    m[:3, :3] = quat_to_mat(np.array([w, x, y, z], np.float64)) * np.asarray(node.get("scale", (1.0, 1.0, 1.0)))
    m[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return m


def rest_nodes(gltf: dict) -> list[Node]:
    """Every node, with its parent index and rest world matrix in Blender axes, in file order."""
    nodes = gltf.get("nodes", [])
    parent: dict[int, int] = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}
    world: dict[int, np.ndarray] = {}

    def world_of(i: int) -> np.ndarray:
        if i not in world:
            local = local_matrix(nodes[i])
            world[i] = local if i not in parent else world_of(parent[i]) @ local
        return world[i]

    axes = np.eye(4)
    axes[:3, :3] = Y_UP_TO_Z_UP
    return [Node(n.get("name", f"node{i}"), parent.get(i), axes @ world_of(i) @ axes.T) for i, n in enumerate(nodes)]

