"""How well the probes measure, on characters they never saw: identity retrieval beside raw pixels,
attribute accuracy beside the majority class.

Retrieval: each held-out image is a query; the gallery holds one image per held-out character; the
query's rank is where its own character lands by distance (1 = nearest): by the probe comparing whole
images, by the probe at the narrower framing of each pair (``framed_``: what the evaluators use,
:mod:`serialgen.probes.framed`), and by raw pixels. Two galleries: the standard
views (what ID-Sim compares outputs with), and one full-body render per character (across framings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from serialgen.probes.data import ProbeImages
from serialgen.probes.framed import AS_IS
from serialgen.probes.model import Probes
from serialgen.synthetic.vocabulary import APPEARANCE, ATTRIBUTES

FRAMINGS = ATTRIBUTES["framing"]


def ranks(distance: torch.Tensor, query_characters: Sequence[str], gallery_characters: Sequence[str]) -> np.ndarray:
    """1-based rank of each query's own character in its distance row (lower distance = closer)."""
    gallery = list(gallery_characters)
    own = torch.tensor([gallery.index(c) for c in query_characters])
    own_distance = distance[torch.arange(len(own)), own]
    return ((distance < own_distance[:, None]).sum(1) + 1).numpy()


def _pixel_distance(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    return torch.cdist(queries.flatten(1).float() / 255, gallery.flatten(1).float() / 255)


def _summary(rank: np.ndarray) -> dict[str, Any]:
    return {"top1": round(float(np.mean(rank <= 1)), 4), "top5": round(float(np.mean(rank <= 5)), 4), "n": len(rank)}


def retrieval(probes: Probes, queries: ProbeImages, gallery: ProbeImages) -> dict[str, Any]:
    """Top-1/top-5 of the probe and of raw pixels, overall and per framing of the query."""
    keep = [i for i, c in enumerate(queries.character_ids) if c in set(gallery.character_ids)]
    queries = queries.subset(keep)
    if not len(queries):
        return {}
    query_framed = probes.embed_framed_prepared(queries.attributes, queries.identity)
    gallery_framed = probes.embed_framed_prepared(gallery.attributes, gallery.identity)
    whole = 1 - query_framed.embeddings[AS_IS] @ gallery_framed.embeddings[AS_IS].T
    by_probe = ranks(whole, queries.character_ids, gallery.character_ids)
    by_framed = ranks(1 - query_framed.similarity(gallery_framed), queries.character_ids, gallery.character_ids)
    by_pixels = ranks(_pixel_distance(queries.identity, gallery.identity), queries.character_ids,
                      gallery.character_ids)
    framing = np.array(queries.label_names("framing"), dtype=object)
    out: dict[str, Any] = {"gallery_characters": len(gallery)}
    for name, select in [("all", np.ones(len(queries), bool))] + [(f, framing == f) for f in FRAMINGS]:
        if select.any():
            out[name] = {**_summary(by_probe[select]),
                         **{f"framed_{k}": v for k, v in _summary(by_framed[select]).items() if k != "n"},
                         **{f"pixels_{k}": v for k, v in _summary(by_pixels[select]).items() if k != "n"}}
    return out


def _one_per_character(images: ProbeImages, select: np.ndarray) -> ProbeImages:
    first: dict[str, int] = {}
    for i in np.flatnonzero(select):
        first.setdefault(images.character_ids[i], int(i))
    return images.subset(sorted(first.values()))


def identity_validation(probes: Probes, held_out: ProbeImages) -> dict[str, Any]:
    """Retrieval against the standard views and across framings, plus same- vs different-character ID-Sim."""
    sources = np.array(held_out.sources)
    framing = np.array(held_out.label_names("framing"), dtype=object)
    standards = _one_per_character(held_out, sources == "standard")
    queries = held_out.subset(np.flatnonzero(sources != "standard"))
    full = _one_per_character(held_out, (sources == "render") & (framing == "full"))
    chosen = set(full.character_ids)
    others = [i for i in np.flatnonzero((sources != "standard") & (framing != "full"))
              if held_out.character_ids[i] in chosen]
    return {"vs_standard": retrieval(probes, queries, standards),
            "across_framings": retrieval(probes, held_out.subset(others), full),
            "id_sim": _same_vs_different(probes, queries, standards)}


def _same_vs_different(probes: Probes, queries: ProbeImages, standards: ProbeImages) -> dict[str, float]:
    if not len(queries) or not len(standards):
        return {}
    sim = probes.embed_prepared(queries.identity) @ probes.embed_prepared(standards.identity).T
    same = torch.tensor([[q == s for s in standards.character_ids] for q in queries.character_ids])
    return {"same_character": round(float(sim[same].mean()), 4), "other_characters": round(float(sim[~same].mean()), 4)}


def attribute_validation(probes: Probes, train: ProbeImages, held_out: ProbeImages) -> dict[str, Any]:
    """Per prompt attribute and per appearance attribute: held-out accuracy, and the accuracy of always
    answering the training majority class."""
    out = _accuracies(probes.classify_prepared(held_out.attributes, held_out.identity), ATTRIBUTES, train, held_out)
    return {**out, **_accuracies(probes.describe_prepared(held_out.identity), APPEARANCE, train, held_out)}


def _accuracies(probs: dict[str, torch.Tensor], vocabulary: dict[str, tuple[str, ...]], train: ProbeImages,
                held_out: ProbeImages) -> dict[str, Any]:
    out = {}
    for name in vocabulary:
        known = held_out.labels[name] >= 0
        train_known = train.labels[name][train.labels[name] >= 0]
        if not known.any() or not len(train_known):
            continue
        truth = held_out.labels[name][known]
        predicted = probs[name].argmax(1).numpy()[known]
        majority = np.bincount(train_known, minlength=len(vocabulary[name])).argmax()
        out[name] = {"accuracy": round(float(np.mean(predicted == truth)), 4),
                     "majority": round(float(np.mean(truth == majority)), 4), "n": int(known.sum())}
    return out
