"""The paper's character filter as data: the facts a worker collects per file and the accept/reject decision.

The facts come from Blender (:func:`serialgen.assets.audit.collect_facts`); the decision is plain numpy.
Reasons are ``"<code>: <detail>"`` with the codes below, so tables can group by code.
The duplicate test compares geometry signatures: area-weighted histograms of the surface along
the three axes after normalising to unit height; they survive re-export (vertex splitting,
triangulation, format changes) and small numeric noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNREADABLE = "unreadable"
NO_ARMATURE = "no_armature"
TOO_FEW_BONES = "too_few_canonical_bones"
NOT_SKINNED = "not_skinned"
TEXTURE = "texture_defect"
DUPLICATE = "duplicate"

#: Bones a character needs to be posed at all, whatever ``min_canonical_bones`` says.
REQUIRED = ("Hips", "Spine", "Head", "LeftArm", "RightArm", "LeftForeArm", "RightForeArm",
            "LeftUpLeg", "RightUpLeg", "LeftLeg", "RightLeg")

BINS = (24, 12, 8)  # z, x, y
RANGES = ((0.0, 1.0), (-0.6, 0.6), (-0.3, 0.3))


def geometry_signature(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted z/x/y surface histograms (unit height) + width, depth and area ratios."""
    if len(tris) == 0:
        return np.zeros(sum(BINS) + 3, dtype=np.float32)
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    height = max(float(np.ptp(verts[:, 2])), 1e-9)
    centroid = (a + b + c) / 3
    total = max(area.sum(), 1e-12)
    mid = (centroid * area[:, None]).sum(0) / total
    p = (centroid - [mid[0], mid[1], verts[:, 2].min()]) / height
    hists = [np.histogram(np.clip(p[:, axis], lo, hi - 1e-9), bins=n, range=(lo, hi), weights=area)[0] / total
             for axis, n, (lo, hi) in zip((2, 0, 1), BINS, RANGES)]
    extra = [np.ptp(verts[:, 0]) / height, np.ptp(verts[:, 1]) / height, total / height ** 2]
    return np.concatenate([*hists, extra]).astype(np.float32)


def signature_distance(a, b) -> float:
    """L1 distance of the histograms plus relative differences of the ratios."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = sum(BINS)
    ratios = np.abs(a[n:] - b[n:]) / np.maximum(np.abs(a[n:]) + np.abs(b[n:]), 1e-9)
    return float(np.abs(a[:n] - b[:n]).sum() + ratios.sum())


@dataclass
class Facts:
    """What a worker learns about one character file (JSON/arrow friendly)."""

    format: str
    error: str | None = None
    n_bones: int = 0
    n_canonical_bones: int = 0
    missing_required: tuple[str, ...] = ()
    n_skinned_meshes: int = 0
    texture_defects: tuple[str, ...] = ()
    height_m: float = 0.0
    signature: np.ndarray | None = None
    normalized_glb: bytes | None = None
    thumbnail: bytes | None = None
    notes: dict | None = None


def decide(facts: Facts, accepted: dict[str, np.ndarray], min_canonical_bones: int,
           duplicate_threshold: float) -> tuple[str, str | None, str | None]:
    """(status, reason, duplicate_of) for one file, given the signatures already accepted."""
    if facts.error is not None:
        return "rejected", f"{UNREADABLE}: {facts.error}", None
    if facts.n_bones == 0:
        return "rejected", f"{NO_ARMATURE}: the file has no armature", None
    if facts.n_canonical_bones < min_canonical_bones or facts.missing_required:
        missing = ", ".join(facts.missing_required) or "-"
        return "rejected", (f"{TOO_FEW_BONES}: {facts.n_canonical_bones} of {min_canonical_bones} mapped "
                            f"(missing required: {missing})"), None
    if facts.n_skinned_meshes == 0:
        return "rejected", f"{NOT_SKINNED}: no mesh is deformed by the armature", None
    if facts.texture_defects:
        return "rejected", f"{TEXTURE}: {'; '.join(facts.texture_defects)}", None
    for other_id, signature in accepted.items():
        if signature_distance(facts.signature, signature) < duplicate_threshold:
            return "rejected", f"{DUPLICATE}: same shape as {other_id}", other_id
    return "accepted", None, None
