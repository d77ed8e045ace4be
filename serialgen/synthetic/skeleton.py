"""The canonical humanoid skeleton every character and motion is mapped onto (pure data, no bpy).

Bone names follow Mixamo (``mixamorig:Hips`` ...), the most common rig of public characters.
Rest positions are for a 1.0 m tall reference figure standing on z=0, facing -Y, in metres
(Blender convention: +X is the character's left). Generators scale them by height and proportions.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "mixamorig:"
#: Object name of the armature of a normalised or generated character.
ARMATURE_NAME = "Armature"


@dataclass(frozen=True)
class Bone:
    name: str                       # without the Mixamo prefix
    parent: str | None
    head: tuple[float, float, float]
    tail: tuple[float, float, float]

    @property
    def full_name(self) -> str:
        return PREFIX + self.name


def _sym(name: str, parent: str | None, head: tuple[float, float, float], tail: tuple[float, float, float]) -> list[Bone]:
    """A left bone (+X) and its mirrored right twin."""
    mirror = lambda p: (-p[0], p[1], p[2])  # noqa: E731
    rparent = parent.replace("Left", "Right") if parent else None
    return [Bone("Left" + name, parent, head, tail), Bone("Right" + name, rparent, mirror(head), mirror(tail))]


BONES: tuple[Bone, ...] = (
    Bone("Hips", None, (0, 0, 0.53), (0, 0, 0.58)),
    Bone("Spine", "Hips", (0, 0, 0.58), (0, 0, 0.65)),
    Bone("Spine1", "Spine", (0, 0, 0.65), (0, 0, 0.72)),
    Bone("Spine2", "Spine1", (0, 0, 0.72), (0, 0, 0.81)),
    Bone("Neck", "Spine2", (0, 0, 0.81), (0, 0, 0.86)),
    Bone("Head", "Neck", (0, 0, 0.86), (0, 0, 0.94)),
    Bone("HeadTop_End", "Head", (0, 0, 0.94), (0, 0, 1.0)),
    *_sym("Eye", "Head", (0.02, -0.055, 0.915), (0.02, -0.075, 0.915)),
    *_sym("Shoulder", "Spine2", (0.02, 0, 0.79), (0.09, 0, 0.79)),
    *_sym("Arm", "LeftShoulder", (0.09, 0, 0.79), (0.23, 0, 0.72)),
    *_sym("ForeArm", "LeftArm", (0.23, 0, 0.72), (0.35, 0, 0.64)),
    *_sym("Hand", "LeftForeArm", (0.35, 0, 0.64), (0.40, 0, 0.61)),
    *_sym("UpLeg", "Hips", (0.05, 0, 0.52), (0.055, 0, 0.28)),
    *_sym("Leg", "LeftUpLeg", (0.055, 0, 0.28), (0.06, 0, 0.045)),
    *_sym("Foot", "LeftLeg", (0.06, 0, 0.045), (0.06, -0.06, 0.01)),
    *_sym("ToeBase", "LeftFoot", (0.06, -0.06, 0.01), (0.06, -0.09, 0.01)),
)

BONE_NAMES: tuple[str, ...] = tuple(b.name for b in BONES)
BY_NAME: dict[str, Bone] = {b.name: b for b in BONES}

#: The child that continues each bone's limb (its rest direction points at that child's head).
CHAIN_CHILD: dict[str, str] = {
    "Hips": "Spine", "Spine": "Spine1", "Spine1": "Spine2", "Spine2": "Neck", "Neck": "Head", "Head": "HeadTop_End",
    **{side + a: side + b for side in ("Left", "Right") for a, b in (
        ("Shoulder", "Arm"), ("Arm", "ForeArm"), ("ForeArm", "Hand"),
        ("UpLeg", "Leg"), ("Leg", "Foot"), ("Foot", "ToeBase"))},
}

#: Bones a motion drives (end and eye bones only follow their parents).
POSED_BONES: tuple[str, ...] = tuple(n for n in BONE_NAMES if n not in ("HeadTop_End", "LeftEye", "RightEye"))

#: COCO-18 / OpenPose body keypoints as (bone, where): where is "head" or "tail" of the bone,
#: or a point in the Head bone's rest frame (offsets as fractions of head height) for face points.
KEYPOINT_SOURCES: tuple[tuple[str, str | tuple[float, float, float]], ...] = (
    ("Head", (0.0, -0.75, 0.45)),       # nose: in front of the face, below the eyes
    ("Neck", "head"),                   # neck
    ("RightArm", "head"),               # r_shoulder
    ("RightForeArm", "head"),           # r_elbow
    ("RightHand", "head"),              # r_wrist
    ("LeftArm", "head"),                # l_shoulder
    ("LeftForeArm", "head"),            # l_elbow
    ("LeftHand", "head"),               # l_wrist
    ("RightUpLeg", "head"),             # r_hip
    ("RightLeg", "head"),               # r_knee
    ("RightFoot", "head"),              # r_ankle
    ("LeftUpLeg", "head"),              # l_hip
    ("LeftLeg", "head"),                # l_knee
    ("LeftFoot", "head"),               # l_ankle
    ("RightEye", "head"),               # r_eye
    ("LeftEye", "head"),                # l_eye
    ("Head", (-0.55, -0.1, 0.7)),       # r_ear
    ("Head", (0.55, -0.1, 0.7)),        # l_ear
)

#: OpenPose limb pairs (0-based COCO-18 indices) and their colours (RGB), as DWPose/ControlNet draw them.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

#: Names of other common rigs (lower case, side and separators removed) -> canonical name without side.
#: Covers Mixamo, CMU/BVH, Unreal (``thigh_l``, ``spine_01``), VRM/VRoid (``J_Bip_L_UpperArm``),
#: Rigify/metarig (``upper_arm.L``) and generic names (``LeftThigh``, ``L_Knee``).
ALIASES: dict[str, str] = {
    "hips": "Hips", "hip": "Hips", "pelvis": "Hips", "spine": "Spine", "spine01": "Spine", "abdomen": "Spine",
    "spine1": "Spine1", "spine02": "Spine1", "chest": "Spine1", "spine2": "Spine2", "spine03": "Spine2",
    "upperchest": "Spine2", "neck": "Neck", "neck01": "Neck", "neck1": "Neck", "head": "Head",
    "headtopend": "HeadTop_End", "headend": "HeadTop_End", "headtop": "HeadTop_End",
    "eye": "Eye", "shoulder": "Shoulder", "clavicle": "Shoulder", "collar": "Shoulder",
    "arm": "Arm", "upperarm": "Arm", "shldr": "Arm", "shldrbend": "Arm", "forearmbend": "ForeArm",
    "thighbend": "UpLeg", "forearm": "ForeArm", "lowerarm": "ForeArm", "elbow": "ForeArm",
    "hand": "Hand", "wrist": "Hand", "upleg": "UpLeg", "thigh": "UpLeg", "upperleg": "UpLeg",
    "leg": "Leg", "lowerleg": "Leg", "calf": "Leg", "shin": "Leg", "knee": "Leg",
    "foot": "Foot", "ankle": "Foot", "toebase": "ToeBase", "toe": "ToeBase", "toes": "ToeBase", "ball": "ToeBase",
}
SIDED = {"Eye", "Shoulder", "Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot", "ToeBase"}


def canonical_name(name: str) -> str | None:
    """The canonical bone (without prefix) a rig's bone name stands for, or None."""
    import re

    base = re.split(r"[:|]", name)[-1]                    # namespaces: mixamorig:, Armature|
    if base in BY_NAME:
        return base
    tokens = [t.lower() for t in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", base)]
    side = None
    for i, tok in enumerate(tokens):
        if tok in ("l", "left", "r", "right"):
            side = "Left" if tok[0] == "l" else "Right"
            tokens = tokens[:i] + tokens[i + 1:]
            break
    tokens = [t for t in tokens if t not in ("j", "bip", "c", "def", "org", "bone", "jnt", "b", "mixamorig")]
    key = "".join(tokens)
    key = {"01": "", "001": ""}.get(key, key)
    canon = "UpLeg" if side and key == "hip" else ALIASES.get(key)
    if canon is None:
        return None
    if canon in SIDED:
        return side + canon if side else None
    return canon if side is None else None


def map_bones(names: list[str]) -> dict[str, str]:
    """Canonical name -> the rig's bone name, for bones in hierarchy order (the first match wins)."""
    out: dict[str, str] = {}
    for name in names:
        canon = canonical_name(name)
        if canon is not None and canon not in out:
            out[canon] = name
    return out
