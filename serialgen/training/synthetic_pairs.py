"""The paper's three personalizer training modes in the synthetic world, where identity is known.

Every character has one *source* image: one of its composited pairs (a figure in some pose, framing and
background, like a user's photo), chosen by a hash of its key. Targets are the character's other images.

- ``unpaired``: reference = the target itself (the paper's unpaired one-stage training);
- ``paired_one_stage``: reference = the source image, as it is;
- ``two_stage``: reference = the standardizer's output for the source image (the method).

The two paired modes see the same targets and the same source image, so the only difference between
them is standardization: the comparison the paper's Table 2 makes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from serialgen.training.captioned import CaptionedImage

MODES = ("two_stage", "paired_one_stage", "unpaired")
#: Which of a character's images may be its source (composited over a background, like a photo).
SOURCE_KIND = "pair"


def _rank(key: str) -> str:
    return hashlib.sha256(f"source:{key}".encode()).hexdigest()


def source_images(images: Sequence[CaptionedImage]) -> dict[str, int]:
    """character_id -> the index of its source image (characters without a composited pair have none)."""
    best: dict[str, tuple[str, int]] = {}
    for i, image in enumerate(images):
        if image.source == SOURCE_KIND:
            rank = _rank(image.key)
            if image.character_id not in best or rank < best[image.character_id][0]:
                best[image.character_id] = (rank, i)
    return {character: i for character, (_, i) in best.items()}


def same_character_references(images: Sequence[CaptionedImage]) -> list[int]:
    """For each image, the index of another image of its character (the next one in a hash order of the
    character's images, cyclic; an image alone with its character is its own): the base model's image path
    learns who is drawn, not where, whatever the reference's framing, pose or background."""
    by_character: dict[str, list[int]] = {}
    for i, image in enumerate(images):
        by_character.setdefault(image.character_id, []).append(i)
    out = [0] * len(images)
    for members in by_character.values():
        members.sort(key=lambda i: _rank(images[i].key))
        for k, i in enumerate(members):
            out[i] = members[(k + 1) % len(members)]
    return out


def training_pairs(images: Sequence[CaptionedImage], mode: str) -> tuple[list[int], list[int]]:
    """(target indices, reference indices) of ``mode``: for ``two_stage`` the reference index is the source
    image whose standardized version the adapter is given. Each character's source image is never a target
    of the paired modes; characters without a source image give no pairs in them."""
    if mode not in MODES:
        raise ValueError(f"unknown personalizer mode {mode!r}; choose one of: {', '.join(MODES)}")
    if mode == "unpaired":
        return list(range(len(images))), list(range(len(images)))
    sources = source_images(images)
    targets = [i for i, image in enumerate(images)
               if image.character_id in sources and sources[image.character_id] != i]
    return targets, [sources[images[i].character_id] for i in targets]
