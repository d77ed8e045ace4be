"""Seeded procedural character specs and their rest layout (plain numpy).

A spec is everything that makes one generated character: proportions, skin, hair, clothes and their
colours; the same seed gives the same spec. Proportions change bone *lengths* only, never directions
or rolls, so every generated rig shares the canonical rest orientations and a pose row applies to all
of them alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from serialgen.synthetic import skeleton

HAIR_STYLES = ("short", "long", "bun", "ponytail", "buzz", "bob")
TOPS = ("tshirt", "longsleeve", "jacket", "dress")
BOTTOMS = ("trousers", "shorts", "skirt")
PATTERNS = ("plain", "stripes", "checks", "dots")

SKIN_TONES = ((0.96, 0.80, 0.69), (0.92, 0.72, 0.58), (0.86, 0.64, 0.49), (0.76, 0.55, 0.40),
              (0.63, 0.44, 0.30), (0.50, 0.34, 0.23), (0.38, 0.25, 0.17), (0.28, 0.18, 0.12))
HAIR_COLORS = ((0.05, 0.04, 0.03), (0.22, 0.13, 0.07), (0.45, 0.28, 0.12), (0.85, 0.70, 0.40),
               (0.60, 0.22, 0.08), (0.65, 0.65, 0.65), (0.20, 0.30, 0.75), (0.85, 0.40, 0.60))
EYE_COLORS = ((0.25, 0.15, 0.08), (0.15, 0.35, 0.65), (0.25, 0.50, 0.25), (0.10, 0.08, 0.06))
#: Per-bone length factor group; the spec draws one factor per group.
GROUPS = {"Hips": "torso", "Spine": "torso", "Spine1": "torso", "Spine2": "torso", "Neck": "neck",
          "Head": "head", "HeadTop_End": "head", "Eye": "head", "Shoulder": "shoulders", "Arm": "arms",
          "ForeArm": "arms", "Hand": "hands", "UpLeg": "legs", "Leg": "legs", "Foot": "feet", "ToeBase": "feet"}


@dataclass(frozen=True)
class CharacterSpec:
    """Everything that makes one generated character; JSON-able (stored as ``attributes``)."""

    seed: int
    height: float
    build: float                        # girth multiplier
    femininity: float                   # 0..1: waist/hip/shoulder shaping
    factors: dict[str, float]           # bone-length factors per group
    skin: tuple[float, float, float]
    hair_style: str
    hair_color: tuple[float, float, float]
    eye_color: tuple[float, float, float]
    top: str
    top_color: tuple[float, float, float]
    top_pattern: str
    pattern_color: tuple[float, float, float]
    jacket_color: tuple[float, float, float]
    bottom: str
    bottom_color: tuple[float, float, float]
    shoe_color: tuple[float, float, float]

    def to_json(self) -> dict:
        return asdict(self)


def _colour(rng: np.random.Generator, lo: float = 0.05, hi: float = 0.95) -> tuple[float, float, float]:
    """A random saturated-or-neutral clothing colour (linear RGB)."""
    hue, sat, val = rng.random(), rng.choice([0.0, 0.3, 0.6, 0.85]), rng.uniform(lo, hi)
    k = np.array([5.0, 3.0, 1.0])
    rgb = val - val * sat * np.clip(np.minimum((k + hue * 6) % 6, 4 - (k + hue * 6) % 6), 0, 1)
    return tuple(round(float(c), 3) for c in rgb)


def sample_spec(seed: int) -> CharacterSpec:
    """Draw a character description from ``seed`` (same seed, same character)."""
    rng = np.random.default_rng(seed)
    femininity = float(rng.random())
    top = str(rng.choice(TOPS, p=[0.35, 0.25, 0.2, 0.2] if femininity > 0.5 else [0.4, 0.3, 0.28, 0.02]))
    factors = {g: round(float(rng.uniform(lo, hi)), 3) for g, (lo, hi) in {
        "torso": (0.92, 1.08), "neck": (0.8, 1.2), "head": (0.92, 1.12), "shoulders": (0.85, 1.2),
        "arms": (0.92, 1.08), "hands": (0.9, 1.1), "legs": (0.9, 1.1), "feet": (0.9, 1.1), "hips": (0.85, 1.2)}.items()}
    return CharacterSpec(
        seed=seed,
        height=round(float(rng.uniform(1.5, 1.95)), 3),
        build=round(float(rng.uniform(0.85, 1.3)), 3),
        femininity=round(femininity, 3),
        factors=factors,
        skin=SKIN_TONES[rng.integers(len(SKIN_TONES))],
        hair_style=str(rng.choice(HAIR_STYLES)),
        hair_color=HAIR_COLORS[rng.choice(len(HAIR_COLORS), p=[0.22, 0.22, 0.16, 0.14, 0.1, 0.08, 0.04, 0.04])],
        eye_color=EYE_COLORS[rng.integers(len(EYE_COLORS))],
        top=top,
        top_color=_colour(rng),
        top_pattern=str(rng.choice(PATTERNS)),
        pattern_color=_colour(rng),
        jacket_color=_colour(rng, 0.05, 0.5),
        bottom="skirt" if top == "dress" else str(rng.choice(BOTTOMS, p=[0.55, 0.25, 0.2])),
        bottom_color=_colour(rng, 0.05, 0.6),
        shoe_color=_colour(rng, 0.02, 0.5),
    )


def rest_layout(spec: CharacterSpec) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Bone (head, tail) in metres for ``spec``: canonical directions, scaled lengths, feet on the ground."""
    f = spec.factors
    factor = {b.name: f[GROUPS[b.name.removeprefix("Left").removeprefix("Right")]] for b in skeleton.BONES}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for bone in skeleton.BONES:
        head0, tail0 = np.array(bone.head, float), np.array(bone.tail, float)
        if bone.parent is None:
            head = head0
        else:
            parent = skeleton.BY_NAME[bone.parent]
            offset = (head0 - np.array(parent.head)) * factor[parent.name]
            if bone.name.endswith("UpLeg"):
                offset[0] *= f["hips"]
            head = out[parent.name][0] + offset
        out[bone.name] = (head, head + (tail0 - head0) * factor[bone.name])
    ground = min(out["LeftToeBase"][0][2], out["LeftFoot"][1][2]) - 0.01
    top = out["HeadTop_End"][1][2] - ground
    scale = spec.height / top
    return {n: ((h - [0, 0, ground]) * scale, (t - [0, 0, ground]) * scale) for n, (h, t) in out.items()}


def fabric_pixels(spec: CharacterSpec, size: int = 32) -> np.ndarray:
    """The top's fabric as (size, size, 4) RGBA pixels: the pattern in two colours."""
    y, x = np.mgrid[0:size, 0:size]
    mask = {"plain": np.zeros((size, size), bool), "stripes": (y // 4) % 2 == 0,
            "checks": ((x // 8) + (y // 8)) % 2 == 0,
            "dots": ((x % 8 - 3.5) ** 2 + (y % 8 - 3.5) ** 2) < 5}[spec.top_pattern]
    rgb = np.where(mask[..., None], spec.pattern_color, spec.top_color)
    return np.concatenate([rgb, np.ones((size, size, 1))], axis=-1).astype(np.float32)
