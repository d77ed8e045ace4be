"""Score `generations` rows against the test set's references into `evaluations` rows (no Prefect).

Per generation: the evaluator's identity, prompt and face metrics (stage ``personalized``; CLIP-I, CLIP-T,
Face Sim with CLIP/ArcFace, ID-Sim, ID top-1, prompt accuracy with the probes). Per method and character:
the standardized reference's identity metrics against the original (stage ``standardized``, the paper's
Table 7) and the across-prompt average (AP-CLIP-I / AP-ID-Sim). Then the means per method over all, per
domain and per prompt category. The per-item rows are kept, so any other aggregate can be recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serialgen.evaluation.evaluators import Evaluator, References
from serialgen.evaluation.metrics import ap_similarity
from serialgen.evaluation.testset import TestCharacter
from serialgen.storage.images import decode_image

ALL = "all"


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

    ``references`` maps character_id to the test-set character (original reference image and domain);
    all of them are the candidates of identity retrieval (ID top-1).
    """
    groups: dict[Group, list[Mapping[str, Any]]] = defaultdict(list)
    for row in generations:
        groups[Group(row["method"], row["personalizer_version"], row["standardizer_version"])].append(row)
    missing = sorted({row["character_id"] for row in generations} - set(references))
    if missing:
        raise KeyError(f"generations of characters not in the test set: {', '.join(missing)}")
    ids = sorted(references)
    refs = evaluator.reference_features(ids, [references[c].image for c in ids])
    rows: list[dict[str, Any]] = []
    for group, items in sorted(groups.items(), key=lambda kv: str(kv[0])):
        items = sorted(items, key=lambda r: r["generation_id"])
        rows += _score_group(evaluator, group, items, references, refs, test_set)
    return rows


def _score_group(evaluator: Evaluator, group: Group, items: list[Mapping[str, Any]],
                 references: Mapping[str, TestCharacter], refs: References, test_set: str) -> list[dict[str, Any]]:
    details = evaluator.details
    images = [decode_image(item["image"], mode="RGB") for item in items]
    chars = [item["character_id"] for item in items]
    prompts = [item["prompt"] for item in items]
    identity, scores = evaluator.measure(images, chars, prompts, refs)
    rows = []
    for i, item in enumerate(items):
        where = dict(generation_id=item["generation_id"], character_id=chars[i],
                     domain=references[chars[i]].domain, prompt_category=item["prompt_category"])
        for metric, values in scores.items():
            found = {"face": bool(np.isfinite(values[i]))} if metric == "face_sim" else {}
            rows.append(evaluation_row(test_set, group, "personalized", metric, values[i], 1,
                                       {**details, **found}, **where))
    rows += aggregate_items(rows, test_set, group, "personalized", details)
    rows += _across_prompt_rows(evaluator, identity, chars, prompts, references, test_set, group)
    rows += _standardized_rows(evaluator, items, references, refs, test_set, group)
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


def _across_prompt_rows(evaluator: Evaluator, identity: Any, chars: list[str], prompts: list[str],
                        references: Mapping[str, TestCharacter], test_set: str, group: Group) -> list[dict[str, Any]]:
    """AP-CLIP-I / AP-ID-Sim per character, then its mean over characters per domain."""
    details = evaluator.details
    per_domain: dict[str, list[float]] = defaultdict(list)
    rows = []
    for character in sorted(set(chars)):
        index = [i for i, c in enumerate(chars) if c == character]
        own = identity[index]
        value, pairs = ap_similarity(evaluator.pairwise(own, own), [prompts[i] for i in index])
        value *= evaluator.ap_scale
        domain = references[character].domain
        rows.append(evaluation_row(test_set, group, "personalized", evaluator.ap_metric, value, pairs, details,
                                   character_id=character, domain=domain))
        if np.isfinite(value):
            per_domain[domain].append(value)
            per_domain[ALL].append(value)
    for domain, values in sorted(per_domain.items()):
        rows.append(evaluation_row(test_set, group, "personalized", evaluator.ap_metric, float(np.mean(values)),
                                   len(values), {**details, "over": "characters"}, domain=domain))
    return rows


def _standardized_rows(evaluator: Evaluator, items: list[Mapping[str, Any]],
                       references: Mapping[str, TestCharacter], refs: References, test_set: str,
                       group: Group) -> list[dict[str, Any]]:
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
    _, scores = evaluator.measure(images, chars, None, refs)
    rows = [evaluation_row(test_set, group, "standardized", metric, values[i], 1, evaluator.details,
                           character_id=c, domain=references[c].domain)
            for metric, values in scores.items() for i, c in enumerate(chars)]
    return rows + aggregate_items(rows, test_set, group, "standardized", evaluator.details)
