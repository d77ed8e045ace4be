"""The train/test split, by character (as in the paper): a pure function of the character id.

A hash threshold rather than a ranked cut: adding characters never moves an existing one between
splits, so a model trained earlier never sees a character that is now held out.
"""

from __future__ import annotations

import hashlib

TRAIN, TEST = "train", "test"
#: The two halves of the held-out characters: recipes are chosen on one, results are scored on the other.
VALIDATION, SCORED = "validation", "scored"


def split_of(character_id: str, test_fraction: float) -> str:
    """``"test"`` for about ``test_fraction`` of all characters, the same answer on every run and machine."""
    bucket = int.from_bytes(hashlib.sha256(f"split:{character_id}".encode()).digest()[:8], "big") / 2**64
    return TEST if bucket < test_fraction else TRAIN


def held_out_role(character_id: str) -> str:
    """``"validation"`` for about half of the held-out characters (recipe choices: steps, crops, schedules), and
    ``"scored"`` for the others (the reported figures): a choice made on the scored characters would flatter them."""
    bucket = int.from_bytes(hashlib.sha256(f"role:{character_id}".encode()).digest()[:8], "big") / 2**64
    return VALIDATION if bucket < 0.5 else SCORED
