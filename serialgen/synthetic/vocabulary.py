"""What a synthetic image's metadata says in words: framing, view, background kind, action (plain Python),
and what the character looks like (hair, top and bottom garments and their colours).

One vocabulary for three users: the attribute probes learn these labels from render metadata, the
personalizer's synthetic captions are built from them, and evaluation reads a prompt back into the
labels it asks for (prompt accuracy, the offline stand-in for CLIP-T). Keeping the three on one table
means a prompt can only ask for what a probe was trained to see.

Appearance words only go into the base model's captions (part of them): a text-to-image base must have
learned to draw named colours and garments for an adapter to steer them, as SDXL has. Prompts and the
adapter's training captions never name them, so a personalized output can only take its appearance from
the reference.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping, Sequence

#: attribute -> label -> the phrase a caption uses for it (labels in class-index order).
PHRASES: dict[str, dict[str, str]] = {
    "framing": {"full": "full body", "bust": "bust shot", "head": "head shot", "cutoff": "cropped by the frame"},
    "view": {"front": "front view", "side": "side view", "back": "back view"},
    "background": {"plain": "on a plain white background", "indoor": "in a room", "outdoor": "outdoors",
                   "texture": "in front of a patterned wall"},
    "action": {"standing": "standing", "walking": "walking", "running": "running", "jumping": "jumping",
               "waving": "waving", "sitting": "sitting"},
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {name: tuple(labels) for name, labels in PHRASES.items()}
#: Procedural motion kinds (serialgen.synthetic.procedural_motion.KINDS) -> action label: few enough
#: classes that one still frame can tell them apart.
ACTION_OF_MOTION = {"walk": "walking", "turn": "walking", "run": "running", "jump": "jumping", "dance": "jumping",
                    "wave": "waving", "reach": "waving", "sit": "sitting"}
#: Procedural background kinds in index order (serialgen.compositing.backgrounds.procedural_background).
BACKGROUND_KINDS = ("indoor", "outdoor", "texture")
#: Basic colour terms clothing colours are named with (:func:`colour_name`).
COLOUR_NAMES = ("black", "white", "grey", "red", "orange", "brown", "yellow", "green", "blue", "purple", "pink")
#: Hair colours in linear RGB (serialgen.synthetic.character_spec.HAIR_COLORS) and their names.
HAIR_COLOUR_NAMES: dict[str, tuple[float, float, float]] = {
    "black": (0.05, 0.04, 0.03), "dark brown": (0.22, 0.13, 0.07), "brown": (0.45, 0.28, 0.12),
    "blond": (0.85, 0.70, 0.40), "auburn": (0.60, 0.22, 0.08), "grey": (0.65, 0.65, 0.65), "blue": (0.20, 0.30, 0.75),
    "pink": (0.85, 0.40, 0.60)}
#: Garment and hair-style names (the procedural spec's own words) in captions.
GARMENT_WORDS = {"tshirt": "tee", "longsleeve": "sweater", "jacket": "jacket", "dress": "dress",
                 "trousers": "trousers", "shorts": "shorts", "skirt": "skirt"}
HAIR_STYLE_WORDS = {"short": "short", "long": "long", "bun": "bun", "ponytail": "ponytail", "buzz": "buzzcut",
                    "bob": "bob"}
PROCEDURAL_PREFIX = "procedural://"


def framing_label(framing: str | None, cut_side: str | None = None) -> str | None:
    """The render's framing (``full | bust | head | cutoff-...``), or ``cutoff`` when compositing cut it."""
    if framing is None:
        return None
    if framing.startswith("cutoff") or (cut_side is not None and framing == "full"):
        return "cutoff"
    return framing if framing in PHRASES["framing"] else None


def view_label(camera: Sequence[float] | None) -> str | None:
    """front / side / back from a render's camera (3x4 camera-to-world, row major, then lens and sensor).

    Characters stand at the origin facing -Y, so the camera's azimuth is measured from -Y: within 45
    degrees of it is a front view, within 45 degrees of +Y a back view, anything else a side view.
    """
    if camera is None:
        return None
    x, y = float(camera[3]), float(camera[7])
    if math.hypot(x, y) < 1e-6:
        return None
    azimuth = abs(math.degrees(math.atan2(x, -y)))
    return "front" if azimuth <= 45 else "back" if azimuth >= 135 else "side"


#: COCO-18 indices of the shoulders and hips (serialgen.storage.schemas.KEYPOINT_NAMES order).
R_SHOULDER, L_SHOULDER, R_HIP, L_HIP, NECK = 2, 5, 8, 11, 1


def torso_facing(keypoints: Sequence[Sequence[float]]) -> float:
    """How squarely the torso faces the camera, from projected COCO-18 keypoints: the image-x offsets of the
    left from the right shoulder and hip, summed, over the neck-to-mid-hip length. Positive when the front faces
    the camera (the character's left is image-right), negative for the back, near 0 in profile."""
    x = lambda i: float(keypoints[i][0])  # noqa: E731
    mid_x, mid_y = (x(L_HIP) + x(R_HIP)) / 2, (float(keypoints[L_HIP][1]) + float(keypoints[R_HIP][1])) / 2
    length = math.hypot(x(NECK) - mid_x, float(keypoints[NECK][1]) - mid_y)
    return ((x(L_SHOULDER) - x(R_SHOULDER)) + (x(L_HIP) - x(R_HIP))) / max(length, 1e-6)


def view_from_keypoints(keypoints: Sequence[Sequence[float]], front: float) -> str:
    """front / side / back by which side of the torso faces the camera: :func:`torso_facing` over ``front``
    (the same character's facing in its front standard view) is the cosine of the torso's yaw to the camera;
    within 45 degrees of facing it is a front view, of turning away a back view, anything else a side view.
    Unlike :func:`view_label` it follows the body, not the rest pose: a turning or dancing figure is labelled
    by what the image shows."""
    cosine = torso_facing(keypoints) / front
    threshold = math.cos(math.pi / 4)
    return "front" if cosine > threshold else "back" if cosine < -threshold else "side"


def background_label(source_uri: str | None) -> str | None:
    """The background's kind: ``plain`` without one (renders, standards), the procedural kind from its
    URI (``procedural://<seed>/<index>``), None for a user image (kind unknown)."""
    if source_uri is None:
        return "plain"
    if not source_uri.startswith(PROCEDURAL_PREFIX):
        return None
    index = int(source_uri.rsplit("/", 1)[-1])
    return BACKGROUND_KINDS[index % len(BACKGROUND_KINDS)]


def action_label(motion_name: str | None) -> str | None:
    """The action group of a motion clip named ``<kind>-<seed>`` (procedural) or after its kind."""
    if motion_name is None:
        return None
    kind = motion_name.split("-", 1)[0].lower()
    return ACTION_OF_MOTION.get(kind)


def _nearest(colour: Sequence[float], names: Mapping[str, Sequence[float]]) -> str:
    return min(names, key=lambda name: sum((a - b) ** 2 for a, b in zip(colour, names[name])))


def colour_name(linear_rgb: Sequence[float]) -> str:
    """The basic colour term of a linear-RGB material colour, from its sRGB hue, lightness and saturation
    (as it renders): neutrals by lightness, then hue sectors, dark oranges brown, light reds pink."""
    srgb = [c * 12.92 if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055 for c in linear_rgb]
    hue, lightness, saturation = colorsys.rgb_to_hls(*srgb)
    hue *= 360
    if lightness < 0.12:
        return "black"
    if saturation < 0.2 or lightness > 0.92:
        return "white" if lightness > 0.85 else "grey"
    if hue < 15 or hue >= 345:
        return "pink" if lightness > 0.7 else "red"
    if hue < 45:
        return "brown" if lightness < 0.4 else "orange"
    if hue < 70:
        return "brown" if lightness < 0.3 else "yellow"
    if hue < 165:
        return "green"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "purple" if lightness < 0.4 else "pink"


def appearance(spec: Mapping) -> dict[str, str]:
    """A procedural character spec (``CharacterSpec.to_json()``) in words: hair colour and style, top and
    bottom garments and their colours (a dress is the top; its bottom garment is hidden under it)."""
    words = {"hair_colour": _nearest(spec["hair_color"], HAIR_COLOUR_NAMES), "hair_style": spec["hair_style"],
             "top": spec["top"], "top_colour": colour_name(spec["top_color"])}
    if spec["top"] != "dress":
        words.update(bottom=spec["bottom"], bottom_colour=colour_name(spec["bottom_color"]))
    return words


def describe(words: Mapping[str, str]) -> str:
    """``"blond short hair, grey tee, green shorts"`` from :func:`appearance`'s words."""
    parts = [f"{words['hair_colour']} {HAIR_STYLE_WORDS[words['hair_style']]} hair",
             f"{words['top_colour']} {GARMENT_WORDS[words['top']]}"]
    if "bottom" in words:
        parts.append(f"{words['bottom_colour']} {GARMENT_WORDS[words['bottom']]}")
    return ", ".join(parts)


def caption(labels: Mapping[str, str | None], subject: str = "a character",
            looks: Mapping[str, str] | None = None) -> str:
    """``"a character, bust shot, side view, walking, in a room"`` from the known labels, in a fixed order;
    with ``looks`` (:func:`appearance`) the subject is described: ``"a character with blond short hair, ..."``."""
    words = [PHRASES[name][labels[name]] for name in ("framing", "view", "action", "background")
             if labels.get(name) is not None]
    if looks:
        subject = f"{subject} with {describe(looks)}"
    return ", ".join([subject, *words])


def prompt_labels(prompt: str) -> dict[str, str]:
    """The labels a prompt asks for: every attribute whose phrase appears in it (the longest phrase wins)."""
    text = prompt.lower()
    found: dict[str, str] = {}
    for name, phrases in PHRASES.items():
        hits = [(len(phrase), label) for label, phrase in phrases.items() if phrase in text]
        if hits:
            found[name] = max(hits)[1]
    return found

#: What the appearance probe reads off a figure: the character's appearance (:func:`appearance`'s keys and
#: labels; ``bottom`` unknown under a dress). The prompt attributes are read by the attribute probe.
APPEARANCE: dict[str, tuple[str, ...]] = {
    "hair_colour": tuple(HAIR_COLOUR_NAMES), "hair_style": tuple(HAIR_STYLE_WORDS),
    "top": ("tshirt", "longsleeve", "jacket", "dress"), "top_colour": COLOUR_NAMES,
    "bottom": ("trousers", "shorts", "skirt"), "bottom_colour": COLOUR_NAMES}
#: Every label the probes learn.
PROBED: dict[str, tuple[str, ...]] = {**ATTRIBUTES, **APPEARANCE}

#: Every word an appearance description can use (the tiny tokenizers hold each as one token).
APPEARANCE_WORDS: tuple[str, ...] = tuple(sorted(
    set(COLOUR_NAMES) | {w for name in HAIR_COLOUR_NAMES for w in name.split()}
    | {w for words in (GARMENT_WORDS, HAIR_STYLE_WORDS) for phrase in words.values() for w in phrase.split()}
    | {"hair"}))
