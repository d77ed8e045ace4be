"""The lake's synthetic images with what their metadata says: every render, composited pair and standard
view, with its character, its foreground and its labels (framing, view, background kind, action).

One reader for the two users of synthetic labels: the probes learn the labels, and the personalizer's
base model and training pairs are captioned from them (:func:`serialgen.synthetic.vocabulary.caption`).
A render's view is which side of the torso faces the camera, from its keypoints against the character's
standard view (:func:`~serialgen.synthetic.vocabulary.view_from_keypoints`; the camera's azimuth when a
character has no standard view). Renders come on white (background ``plain``); pairs over their procedural backgrounds with the
estimator-like mask the standardizer is given, and framed ``cutoff`` when compositing pushed a joint the render
showed out of the frame (a crop that only trims a hand or hair is not one); standards in the A-pose, front view
(action ``standing``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from serialgen.evaluation.metrics import remove_background
from serialgen.storage import Lake
from serialgen.storage.images import decode_image, decode_mask
from serialgen.synthetic.vocabulary import (
    action_label,
    appearance,
    background_label,
    framing_label,
    torso_facing,
    view_from_keypoints,
    view_label,
)

SOURCES = ("render", "pair", "standard")
STANDARD_LABELS = {"framing": "full", "view": "front", "background": "plain", "action": "standing"}


@dataclass
class LabelledImage:
    character_id: str
    source: str                          # render | pair | standard
    key: str                             # unique within the lake: source and the row's key
    rgb: np.ndarray                      # HxWx3 uint8 (renders composited on white)
    foreground: np.ndarray               # HxW uint8, 255 = figure (pairs: the estimator-like mask)
    labels: dict[str, str | None]        # attribute -> label, None unknown
    looks: dict[str, str] | None = None  # the character's appearance in words (procedural characters only)


def labelled_images(lake: Lake, sources: tuple[str, ...] = SOURCES) -> Iterator[LabelledImage]:
    """The lake's renders, pairs and standards (those in ``sources``), in that order, with their labels and,
    for procedural characters, their appearance (:func:`serialgen.synthetic.vocabulary.appearance`)."""
    motion_of_pose = _motion_names(lake)
    looks = appearances(lake)
    fronts = {r["character_id"]: torso_facing(r["keypoints"])
              for r in lake.read("standards", columns=["character_id", "keypoints"]).to_pylist() if r["keypoints"]}
    # (character, pose, view) -> the render's labels and which joints its frame shows
    renders: dict[tuple[str, str, int], tuple[dict[str, str | None], np.ndarray]] = {}
    for row in lake.read("renders", columns=["character_id", "pose_id", "view_id", "rgba", "framing",
                                             "camera", "keypoints"]).to_pylist():
        front = fronts.get(row["character_id"])
        view = (view_from_keypoints(row["keypoints"], front) if row["keypoints"] and front and front > 0
                else view_label(row["camera"]))
        labels = {"framing": framing_label(row["framing"]), "view": view,
                  "background": "plain", "action": action_label(motion_of_pose.get(row["pose_id"]))}
        renders[(row["character_id"], row["pose_id"], row["view_id"])] = (labels, _visible(row["keypoints"]))
        if "render" in sources:
            rgba = decode_image(row["rgba"], "RGBA")
            yield LabelledImage(row["character_id"], "render",
                                f"render/{row['character_id']}/{row['pose_id']}/{row['view_id']}",
                                remove_background(rgba, lambda im: im[..., 3]), rgba[..., 3], labels,
                                looks.get(row["character_id"]))
    if "pair" in sources:
        kinds = {r["background_id"]: background_label(r["source_uri"])
                 for r in lake.read("backgrounds", columns=["background_id", "source_uri"]).to_pylist()}
        for row in lake.read("pairs", columns=["pair_id", "character_id", "pose_id", "view_id", "background_id",
                                               "input_image", "background_mask", "augmentation",
                                               "true_reference_keypoints"]).to_pylist():
            render, seen = renders.get((row["character_id"], row["pose_id"], row["view_id"]), ({}, np.zeros(18, bool)))
            lost = bool((seen & ~_visible(row["true_reference_keypoints"])).any())
            cut = json.loads(row["augmentation"] or "{}").get("cut_side") if lost else None
            labels = {**render, "framing": framing_label(render.get("framing"), cut),
                      "background": kinds.get(row["background_id"])}
            yield LabelledImage(row["character_id"], "pair", f"pair/{row['pair_id']}",
                                decode_image(row["input_image"], "RGB"), 255 - decode_mask(row["background_mask"]),
                                labels, looks.get(row["character_id"]))
    if "standard" in sources:
        for row in lake.read("standards", columns=["character_id", "image", "mask"]).to_pylist():
            yield LabelledImage(row["character_id"], "standard", f"standard/{row['character_id']}",
                                decode_image(row["image"], "RGB"), decode_mask(row["mask"]), dict(STANDARD_LABELS),
                                looks.get(row["character_id"]))


def _visible(keypoints: list | None) -> np.ndarray:
    """Which of the 18 joints are in the frame (visibility > 0); none without keypoints."""
    return np.asarray(keypoints, np.float32)[:, 2] > 0 if keypoints else np.zeros(18, bool)


def appearances(lake: Lake) -> dict[str, dict[str, str]]:
    """character_id -> appearance words, for characters whose attributes hold a procedural spec."""
    out = {}
    for row in lake.read("characters", columns=["character_id", "attributes"]).to_pylist():
        spec = json.loads(row["attributes"] or "{}").get("procedural")
        if spec:
            out[row["character_id"]] = appearance(spec)
    return out


def _motion_names(lake: Lake) -> dict[str, str]:
    names = {r["motion_id"]: r["name"] for r in lake.read("motions", columns=["motion_id", "name"]).to_pylist()}
    return {r["pose_id"]: names.get(r["motion_id"]) for r in lake.read("poses", columns=["pose_id", "motion_id"]).to_pylist()}
