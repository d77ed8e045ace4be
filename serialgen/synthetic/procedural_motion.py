"""Seeded procedural motion clips (walk, run, wave, jump, sit, turn, reach, dance) on the canonical skeleton.

Pure numpy. A clip function gives, per phase in [0, 1), joint angles in degrees for the *left*
side convention: rotations about the world axes of the rest pose (x: the lateral axis, so
negative x swings a limb forward; y: the forward axis, negative y raises the left arm / spreads
the left leg; z: vertical twist) plus ``elbow`` flexion for forearms. Right-side bones are given
in the same convention and mirrored. Angles are clamped to :data:`LIMITS` before they become
canonical local quaternions, so every generated pose is within joint limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from serialgen.synthetic import skeleton
from serialgen.synthetic.kinematics import canonical_rest
from serialgen.synthetic.rotations import mat_to_quat, rotvec_to_mat

Angles = dict[str, dict[str, float]]

#: Degrees (lo, hi) per channel, left-side convention; bones not listed stay at rest.
LIMITS: dict[str, dict[str, tuple[float, float]]] = {
    "Hips": {"x": (-60, 60), "y": (-30, 30), "z": (-180, 180)},
    "Spine": {"x": (-20, 40), "y": (-20, 20), "z": (-30, 30)},
    "Spine1": {"x": (-20, 30), "y": (-15, 15), "z": (-25, 25)},
    "Spine2": {"x": (-15, 25), "y": (-15, 15), "z": (-20, 20)},
    "Neck": {"x": (-30, 40), "y": (-25, 25), "z": (-45, 45)},
    "Head": {"x": (-30, 30), "y": (-25, 25), "z": (-45, 45)},
    "Shoulder": {"x": (-15, 15), "y": (-25, 15), "z": (-15, 15)},
    "Arm": {"x": (-150, 60), "y": (-130, 65), "z": (-60, 60)},
    "ForeArm": {"elbow": (0, 150), "z": (-30, 30)},
    "Hand": {"x": (-60, 60), "y": (-40, 40), "z": (-30, 30)},
    "UpLeg": {"x": (-120, 35), "y": (-45, 20), "z": (-40, 40)},
    "Leg": {"x": (0, 150)},
    "Foot": {"x": (-45, 35), "y": (-20, 20)},
    "ToeBase": {"x": (-45, 10)},
}
KINDS = ("walk", "run", "wave", "jump", "sit", "turn", "reach", "dance")


@dataclass
class Clip:
    """A motion clip on the canonical skeleton: rotations (frames, POSED_BONES, 4) as (w, x, y, z)."""

    name: str
    fps: float
    rotations: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.rotations)


def _s(p: float, k: float = 1.0) -> float:
    return float(np.sin(2 * np.pi * k * p))


def _both(fn: Callable[[float], Angles], p: float, offset: float) -> Angles:
    """Left bones from ``fn(p)``, right bones from ``fn(p + offset)`` (0.5 = alternating gait)."""
    left, right = fn(p), fn((p + offset) % 1.0)
    out = {k: v for k, v in left.items() if not k.startswith("Right")}
    out.update({"Right" + k[4:]: v for k, v in right.items() if k.startswith("Left")})
    return out


def walk(a: float) -> Callable[[float], Angles]:
    def side(p):
        s, c = _s(p), _s(p + 0.25)
        return {"LeftUpLeg": {"x": -25 * a * s}, "LeftLeg": {"x": 8 + 45 * a * max(0.0, c)},
                "LeftFoot": {"x": 10 * a * s}, "LeftArm": {"x": 22 * a * s, "y": 55},
                "LeftForeArm": {"elbow": 15 + 12 * a * (1 - s)}, "Spine": {"z": 5 * a * s}, "Hips": {"z": -4 * a * s}}
    return lambda p: _both(side, p, 0.5)


def run(a: float) -> Callable[[float], Angles]:
    def side(p):
        s, c = _s(p), _s(p + 0.25)
        return {"LeftUpLeg": {"x": -45 * a * s - 10}, "LeftLeg": {"x": 25 + 80 * a * max(0.0, c)},
                "LeftFoot": {"x": 15 * a * s}, "LeftArm": {"x": 45 * a * s, "y": 50},
                "LeftForeArm": {"elbow": 90}, "Spine": {"x": 10, "z": 8 * a * s}, "Hips": {"z": -6 * a * s}}
    return lambda p: _both(side, p, 0.5)


def wave(a: float) -> Callable[[float], Angles]:
    return lambda p: {"RightArm": {"y": -115 * a, "x": -10}, "RightForeArm": {"elbow": 45 + 30 * _s(p, 2)},
                      "RightHand": {"y": 20 * _s(p, 2)}, "LeftArm": {"y": 55}, "LeftForeArm": {"elbow": 10},
                      "Head": {"y": -6 * a, "x": -5}, "Spine1": {"y": 4 * a}}


def jump(a: float) -> Callable[[float], Angles]:
    def pose(p):
        crouch = float(np.interp(p, [0, 0.25, 0.45, 0.6, 0.8, 0.9, 1.0], [0, 1, 0, 0.3, 0.2, 0.8, 0]))
        lift = float(np.interp(p, [0, 0.3, 0.5, 0.75, 1.0], [0, 0, 1, 0.5, 0]))
        return {"Hips": {"x": 30 * crouch * a}, "LeftUpLeg": {"x": -95 * crouch * a},
                "LeftLeg": {"x": 110 * crouch * a},
                "LeftFoot": {"x": -35 * crouch}, "Spine": {"x": 15 * crouch}, "Head": {"x": -20 * crouch},
                "LeftArm": {"x": 45 * crouch - 40 * lift, "y": 55 - 150 * lift * a}, "LeftForeArm": {"elbow": 20}}
    return lambda p: _both(pose, p, 0.0)


def sit(a: float) -> Callable[[float], Angles]:
    def pose(p):
        u = float(np.clip(p * 1.6, 0, 1))
        u = u * u * (3 - 2 * u)
        return {"Hips": {"x": 5 * u}, "LeftUpLeg": {"x": -90 * u * a, "y": -6 * u}, "LeftLeg": {"x": 90 * u * a},
                "LeftFoot": {"x": 5 * u}, "LeftArm": {"x": -35 * u, "y": 60}, "LeftForeArm": {"elbow": 55 * u},
                "Spine": {"x": 8 * u}, "Head": {"x": 8 * u}}
    return lambda p: _both(pose, p, 0.0)


def turn(a: float) -> Callable[[float], Angles]:
    def side(p):
        return {"Hips": {"z": 180 * a * (2 * p - 1)}, "LeftUpLeg": {"x": -20 * max(0.0, _s(p, 4))},
                "LeftLeg": {"x": 35 * max(0.0, _s(p, 4))}, "LeftArm": {"y": 55, "x": 8 * _s(p, 4)},
                "Head": {"z": 15 * _s(p)}}
    return lambda p: _both(side, p, 0.125)


def reach(a: float) -> Callable[[float], Angles]:
    def pose(p):
        u = _s(p / 2) * a  # out and back
        return {"LeftArm": {"x": -85 * u, "y": -15 * u}, "LeftForeArm": {"elbow": 25 * (1 - u)},
                "LeftHand": {"x": -15 * u}, "RightArm": {"y": 55, "x": 10 * u}, "RightForeArm": {"elbow": 15},
                "Spine": {"x": 18 * u, "z": -10 * u}, "Spine1": {"x": 12 * u}, "Head": {"x": 10 * u, "z": 10 * u},
                "LeftUpLeg": {"x": -10 * u}, "LeftLeg": {"x": 15 * u}}
    return pose


def dance(a: float) -> Callable[[float], Angles]:
    def side(p):
        bounce = (1 + _s(p, 2)) / 2
        return {"Hips": {"y": 10 * a * _s(p)}, "Spine": {"y": -8 * a * _s(p)}, "Head": {"y": 10 * _s(p)},
                "LeftArm": {"y": -40 - 50 * a * _s(p), "x": -20}, "LeftForeArm": {"elbow": 60 + 30 * _s(p, 2)},
                "LeftUpLeg": {"x": -15 * bounce}, "LeftLeg": {"x": 30 * bounce}, "LeftFoot": {"x": -10 * bounce}}
    return lambda p: _both(side, p, 0.5)


MOTIONS: dict[str, Callable[[float], Callable[[float], Angles]]] = {
    "walk": walk, "run": run, "wave": wave, "jump": jump, "sit": sit, "turn": turn, "reach": reach, "dance": dance}


def _clamp(bone: str, channels: dict[str, float]) -> dict[str, float]:
    limits = LIMITS.get(bone.removeprefix("Left").removeprefix("Right"), {})
    return {ch: float(np.clip(v, *limits[ch])) for ch, v in channels.items() if ch in limits}


def angles_to_rotations(angles: Angles) -> np.ndarray:
    """Clamped joint angles -> canonical local quaternions (POSED_BONES, 4)."""
    rest = canonical_rest()
    out = np.tile([1.0, 0.0, 0.0, 0.0], (len(skeleton.POSED_BONES), 1))
    for i, bone in enumerate(skeleton.POSED_BONES):
        channels = _clamp(bone, angles.get(bone, {}))
        if not channels:
            continue
        rc = rest[bone]
        rotvec = np.radians([channels.get("x", 0.0), channels.get("y", 0.0), channels.get("z", 0.0)])
        if "elbow" in channels:
            left = rc if bone.startswith("Left") else rest["Left" + bone[5:]]
            axis = np.cross(left[:, 1], [0.0, -1.0, 0.0])
            rotvec = rotvec + np.radians(channels["elbow"]) * axis / np.linalg.norm(axis)
        if bone.startswith("Right"):
            rotvec = rotvec * [1.0, -1.0, -1.0]   # mirror through the YZ plane
        out[i] = mat_to_quat(rc.T @ rotvec_to_mat(rotvec) @ rc)
    return out.astype(np.float32)


def make_clip(kind: str, seed: int, n_frames: int = 40, fps: float = 30.0) -> Clip:
    """Clip ``kind`` with seeded amplitude and speed."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    amplitude = float(rng.uniform(0.8, 1.2))
    frames = int(round(n_frames * rng.uniform(0.85, 1.15)))
    fn = MOTIONS[kind](amplitude)
    rotations = np.stack([angles_to_rotations(fn(f / frames)) for f in range(frames)])
    return Clip(f"{kind}-{seed}", fps, rotations)


def procedural_clips(seed: int, variants: int = 1) -> list[Clip]:
    """Every kind, ``variants`` seeded variations each."""
    return [make_clip(kind, seed + v) for v in range(variants) for kind in KINDS]
