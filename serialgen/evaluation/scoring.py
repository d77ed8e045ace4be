"""Score `generations` rows against the test set's references into `evaluations` rows (no Prefect).

Per generation: CLIP-I, CLIP-T and Face Sim (stage ``personalized``). Per method and character: the
standardized reference's CLIP-I and Face Sim against the original (stage ``standardized``, the paper's
Table 7) and AP-CLIP-I. Then the means per method over all, per domain and per prompt category.
The per-item rows are kept, so any other aggregate can be recomputed from the table.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from serialgen.evaluation.clip import ClipModel
from serialgen.evaluation.face import FaceEmbedder
from serialgen.evaluation.metrics import (MaskFn, PoseFn, ap_clip_i, clip_embeddings, clip_i, clip_t,
                                          face_embeddings, face_sim)
from serialgen.evaluation.testset import TestCharacter
from serialgen.storage.images import decode_image

ALL = "all"


@dataclass
class Evaluator:
    """The models behind the scores: CLIP, ArcFace, and the preprocessors' mask/pose functions (background removal, faces)."""

    clip: ClipModel
    face: FaceEmbedder
    mask_fn: MaskFn
    pose_fn: PoseFn

    @property
    def details(self) -> dict[str, str]:
        return {"clip": self.clip.label, "face": self.face.label}


@dataclass(frozen=True)
class Group:
    """One evaluated model: a personalizer mode at a version, fed by one standardizer version."""

    method: str
    model_version: str | None
    standardizer_version: str | None


def evaluation_row(test_set: str, group: Group, stage: str, metric: str, value: float | None, n: int,
                   details: Mapping[str, Any], generation_id: str | None = None, pair_id: str | None = None,
                   character_id: str | None = None, domain: str = ALL, prompt_category: str = ALL) -> dict[str, Any]:
    """An `evaluations` row; its id hashes what names the score, so a rerun replaces it."""
    naming = [test_set, group.method, group.model_version, group.standardizer_version, stage, metric,
              generation_id, pair_id, character_id, domain, prompt_category]
    value = None if value is None or not np.isfinite(value) else float(value)
    return {"evaluation_id": hashlib.sha256(json.dumps(naming).encode()).hexdigest()[:24], "test_set": test_set,
            "method": group.method, "model_version": group.model_version,
            "standardizer_version": group.standardizer_version, "stage": stage, "metric": metric, "value": value,
            "n": int(n), "generation_id": generation_id, "pair_id": pair_id, "character_id": character_id,
            "domain": domain, "prompt_category": prompt_category, "details": json.dumps(dict(details))}


def score_generations(evaluator: Evaluator, generations: Sequence[Mapping[str, Any]],
                      references: Mapping[str, TestCharacter], test_set: str) -> list[dict[str, Any]]:
    """Every `evaluations` row of these generations (all methods in them), per item and aggregated.

    ``references`` maps character_id to the test-set character (original reference image and domain).
    """
    groups: dict[Group, list[Mapping[str, Any]]] = defaultdict(list)
    for row in generations:
        groups[Group(row["method"], row["personalizer_version"], row["standardizer_version"])].append(row)
    characters = sorted({row["character_id"] for row in generations})
    missing = [c for c in characters if c not in references]
    if missing:
        raise KeyError(f"generations of characters not in the test set: {', '.join(missing)}")
    originals = [references[c].image for c in characters]
    ref_clip = dict(zip(characters, clip_embeddings(evaluator.clip, originals, evaluator.mask_fn)))
    ref_face = dict(zip(characters, face_embeddings(evaluator.face, evaluator.pose_fn, originals)))
    rows: list[dict[str, Any]] = []
    for group, items in sorted(groups.items(), key=lambda kv: str(kv[0])):
        items = sorted(items, key=lambda r: r["generation_id"])
        rows += _score_group(evaluator, group, items, references, ref_clip, ref_face, test_set)
    return rows


def _score_group(evaluator: Evaluator, group: Group, items: list[Mapping[str, Any]],
                 references: Mapping[str, TestCharacter], ref_clip: Mapping[str, torch.Tensor],
                 ref_face: Mapping[str, np.ndarray], test_set: str) -> list[dict[str, Any]]:
    details = evaluator.details
    images = [decode_image(item["image"], mode="RGB") for item in items]
    chars = [item["character_id"] for item in items]
    prompts = [item["prompt"] for item in items]
    masked = clip_embeddings(evaluator.clip, images, evaluator.mask_fn)
    text = evaluator.clip.embed_texts(sorted(set(prompts)))
    text_of = dict(zip(sorted(set(prompts)), text))
    scores = {
        "clip_i": clip_i(masked, torch.stack([ref_clip[c] for c in chars])),
        "clip_t": clip_t(clip_embeddings(evaluator.clip, images), torch.stack([text_of[p] for p in prompts])),
        "face_sim": face_sim(face_embeddings(evaluator.face, evaluator.pose_fn, images),
                             np.stack([ref_face[c] for c in chars])).values,
    }
    rows = []
    for i, item in enumerate(items):
        where = dict(generation_id=item["generation_id"], character_id=chars[i],
                     domain=references[chars[i]].domain, prompt_category=item["prompt_category"])
        for metric, values in scores.items():
            found = {"face": bool(np.isfinite(values[i]))} if metric == "face_sim" else {}
            rows.append(evaluation_row(test_set, group, "personalized", metric, values[i], 1,
                                       {**details, **found}, **where))
    rows += aggregate_items(rows, test_set, group, "personalized", details)
    rows += _ap_clip_i_rows(masked, chars, prompts, references, test_set, group, details)
    rows += _standardized_rows(evaluator, items, references, ref_clip, ref_face, test_set, group)
    return rows


def aggregate_items(item_rows: Iterable[Mapping[str, Any]], test_set: str, group: Group, stage: str,
                    details: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Means of the per-item rows over all, per domain and per prompt category (Face Sim: over detected faces,
    with the detection rate in ``details``)."""
    buckets: dict[tuple[str, str, str], list[float | None]] = defaultdict(list)
    for row in item_rows:
        for domain, category in {(ALL, ALL), (row["domain"], ALL), (ALL, row["prompt_category"])}:
            buckets[(row["metric"], domain, category)].append(row["value"])
    out = []
    for (metric, domain, category), values in sorted(buckets.items()):
        found = [v for v in values if v is not None]
        extra = {"items": len(values), "detection_rate": len(found) / len(values)} if metric == "face_sim" else {}
        mean = float(np.mean(found)) if found else None
        out.append(evaluation_row(test_set, group, stage, metric, mean, len(found), {**details, **extra},
                                  domain=domain, prompt_category=category))
    return out


def _ap_clip_i_rows(masked: torch.Tensor, chars: list[str], prompts: list[str],
                    references: Mapping[str, TestCharacter], test_set: str, group: Group,
                    details: Mapping[str, Any]) -> list[dict[str, Any]]:
    per_domain: dict[str, list[float]] = defaultdict(list)
    rows = []
    for character in sorted(set(chars)):
        index = [i for i, c in enumerate(chars) if c == character]
        value, pairs = ap_clip_i(masked[index], [prompts[i] for i in index])
        domain = references[character].domain
        rows.append(evaluation_row(test_set, group, "personalized", "ap_clip_i", value, pairs, details,
                                   character_id=character, domain=domain))
        if np.isfinite(value):
            per_domain[domain].append(value)
            per_domain[ALL].append(value)
    for domain, values in sorted(per_domain.items()):
        rows.append(evaluation_row(test_set, group, "personalized", "ap_clip_i", float(np.mean(values)),
                                   len(values), {**details, "over": "characters"}, domain=domain))
    return rows


def _standardized_rows(evaluator: Evaluator, items: list[Mapping[str, Any]],
                       references: Mapping[str, TestCharacter], ref_clip: Mapping[str, torch.Tensor],
                       ref_face: Mapping[str, np.ndarray], test_set: str, group: Group) -> list[dict[str, Any]]:
    """Identity kept by standardization alone: the standardized reference each character's outputs were
    made from, against the original (one score per character; Table 7's first row)."""
    first = {}
    for item in items:
        if item.get("standardized_reference") is not None:
            first.setdefault(item["character_id"], item["standardized_reference"])
    if not first:
        return []
    chars = sorted(first)
    images = [decode_image(first[c], mode="RGB") for c in chars]
    scores = {
        "clip_i": clip_i(clip_embeddings(evaluator.clip, images, evaluator.mask_fn),
                         torch.stack([ref_clip[c] for c in chars])),
        "face_sim": face_sim(face_embeddings(evaluator.face, evaluator.pose_fn, images),
                             np.stack([ref_face[c] for c in chars])).values,
    }
    rows = [evaluation_row(test_set, group, "standardized", metric, values[i], 1, evaluator.details,
                           character_id=c, domain=references[c].domain)
            for metric, values in scores.items() for i, c in enumerate(chars)]
    return rows + aggregate_items(rows, test_set, group, "standardized", evaluator.details)
