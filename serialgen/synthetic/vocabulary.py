"""What a synthetic image's metadata says in words: framing, view, background kind, action (plain Python).

One vocabulary for three users: the attribute probes learn these labels from render metadata, the
personalizer's synthetic captions are built from them, and evaluation reads a prompt back into the
labels it asks for (prompt accuracy, the offline stand-in for CLIP-T). Keeping the three on one table
means a prompt can only ask for what a probe was trained to see.
"""

from __future__ import annotations

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


def caption(labels: Mapping[str, str | None], subject: str = "a character") -> str:
    """``"a character, bust shot, side view, walking, in a room"`` from the known labels, in a fixed order."""
    words = [PHRASES[name][labels[name]] for name in ("framing", "view", "action", "background")
             if labels.get(name) is not None]
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
