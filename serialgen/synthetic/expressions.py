"""Which shape keys are facial expressions, and random partial expression weights (no bpy).

Characters carry many shape keys: body and clothing morphs (muscle, breast size, skirt fit) change
the character's shape, so driving them would make the input and the target different characters.
Only keys named like the expression sets of the common avatar formats count: Apple ARKit's 52
blendshapes, VRM 0.x/1.0 presets (and VRoid's ``Fcl_`` face keys), MMD morphs, plus plain emotion
names. Matching ignores case and any ``group.`` prefix that exporters add (``blendShape1.jawOpen``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

ARKIT = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen",
    "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
VRM = (
    # VRM 0.x presets
    "Joy", "Angry", "Sorrow", "Fun", "A", "I", "U", "E", "O", "Blink", "Blink_L", "Blink_R",
    "LookUp", "LookDown", "LookLeft", "LookRight",
    # VRM 1.0 presets
    "happy", "sad", "relaxed", "surprised", "aa", "ih", "ou", "ee", "oh", "blinkLeft", "blinkRight",
)
MMD = (
    "まばたき", "笑い", "ウィンク", "ウィンク右", "ウィンク２", "ｳｨﾝｸ２右", "はぅ", "なごみ", "びっくり", "じと目",
    "なぬ！", "あ", "い", "う", "え", "お", "ワ", "∧", "ω", "ω□", "にやり", "にっこり", "ぺろっ", "てへぺろ",
    "真面目", "困る", "怒り", "にこり", "上", "下", "前", "はんっ！", "えー", "口角上げ", "口角下げ", "口横広げ",
    "瞳小", "ハイライト消", "悲しむ", "照れ",
)
EMOTIONS = ("smile", "frown", "surprise", "anger", "sadness", "fear", "disgust", "wink", "open_mouth")
#: The default allow-list (config ``render.expression_keys``).
DEFAULT_EXPRESSION_KEYS = (*ARKIT, *VRM, *MMD, *EMOTIONS)
#: Name prefixes of face-only key sets: VRoid (``Fcl_MTH_A``, ``Fcl_EYE_Close``), VRChat visemes (``vrc.v_aa``).
DEFAULT_EXPRESSION_PREFIXES = ("Fcl_", "vrc.v_", "v_")


def _bare(name: str) -> str:
    return name.rsplit(".", 1)[-1].casefold() if "." in name and not name.startswith("vrc.") else name.casefold()


def expression_keys(names: Iterable[str], allowed: Sequence[str], prefixes: Sequence[str] = ()) -> list[str]:
    """The ``names`` that are expressions: in ``allowed`` or starting with one of ``prefixes`` (case-insensitive)."""
    allow = {a.casefold() for a in allowed}
    starts = tuple(p.casefold() for p in prefixes)
    return sorted(n for n in set(names)
                  if _bare(n) in allow or n.casefold() in allow or (starts and n.casefold().startswith(starts)))


def sample_expression(rng: np.random.Generator, keys: Sequence[str], share: float,
                      max_keys: int = 3) -> dict[str, float]:
    """Random partial weights (0.2..1) on 1..``max_keys`` of ``keys`` for ``share`` of renders; {} = neutral."""
    if not keys or rng.random() >= share:
        return {}
    n = int(rng.integers(1, min(max_keys, len(keys)) + 1))
    chosen = rng.choice(len(keys), size=n, replace=False)
    return {keys[i]: round(float(rng.uniform(0.2, 1.0)), 3) for i in sorted(chosen)}


def describe(weights: dict[str, float]) -> str:
    """The ``renders.expression`` text: ``neutral`` or ``key:weight,key:weight``."""
    return ",".join(f"{k}:{w:.2f}" for k, w in weights.items()) or "neutral"
