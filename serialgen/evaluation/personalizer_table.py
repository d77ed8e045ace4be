"""The paper's Table 2 in the synthetic world: each personalizer mode (and controls) scored on held-out
characters with the probes, where the character behind every reference is known.

Per output: ID-Sim (identity-probe cosine to the character's rendered standard view, the output's figure
cut out by the mask model inference has; a close-up output against the view cut to its framing,
:mod:`serialgen.probes.framed`), ID top-1 (its own character nearest among the scored ones),
prompt accuracy (share of the prompt's attributes the attribute probes read in it) and replication (SSIM
between the output and the reference image the adapter was given: copying it scores high). Per character
and seed: AP-ID-Sim, the mean identity cosine over all pairs of its outputs across prompts. Intervals are
95 % over characters (seeds averaged within a character).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch

from serialgen.evaluation.evaluators import prompt_accuracy
from serialgen.evaluation.standardizer_table import figure_on_white, interval
from serialgen.probes import Probes
from serialgen.probes.validation import ranks
from serialgen.training.metrics import ssim

#: Prompts asked of every scored character: framing, view, action and background other than a standard view's.
PROMPTS = ("a character, full body, side view, walking, outdoors",
           "a character, full body, back view, running, in front of a patterned wall",
           "a character, bust shot, front view, waving, in a room",
           "a character, full body, front view, jumping, on a plain white background")
#: metric -> (column header, digits); the order of the table's columns.
COLUMNS = {"id_sim": ("ID-Sim ↑", 3), "ap_id_sim": ("AP-ID-Sim ↑", 3), "id_top1": ("ID top-1 ↑", 3),
           "prompt_acc": ("prompt accuracy ↑", 3), "replication": ("replication (SSIM to reference) ↓", 3)}


@dataclass
class Outputs:
    """One row's generations: item i is character ``characters[i]`` asked ``prompts[i]`` with ``seeds[i]``."""

    method: str
    characters: list[str]
    prompts: list[str]
    seeds: list[int]
    images: list[np.ndarray]                 # uint8 HxWx3 outputs
    references: list[np.ndarray]             # uint8 HxWx3, what the adapter was given (model size)
    scores: dict[str, np.ndarray] = field(default_factory=dict)   # per item; ap_id_sim per (character, seed)
    ap_groups: list[str] = field(default_factory=list)            # character of each ap_id_sim value


def score(outputs: Outputs, probes: Probes, mask_fn: Callable[[np.ndarray], np.ndarray],
          standards: Mapping[str, np.ndarray]) -> Outputs:
    """Fill ``outputs.scores`` against ``standards`` (character -> its standard view on white: the gallery)."""
    gallery_ids = sorted(standards)
    gallery = probes.embed_framed([standards[c] for c in gallery_ids],
                                  [figure_on_white(standards[c]) for c in gallery_ids])
    foregrounds = [mask_fn(image) for image in outputs.images]
    embeds = probes.embed_framed(outputs.images, foregrounds)
    own = torch.tensor([gallery_ids.index(c) for c in outputs.characters])
    similarity = embeds.similarity(gallery)  # a bust output meets the standard views cut to busts
    seen = probes.classify(outputs.images, foregrounds)
    to_tensor = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    outputs.scores = {
        "id_sim": similarity[torch.arange(len(own)), own].double().numpy(),
        "id_top1": (ranks(1 - similarity, outputs.characters, gallery_ids) <= 1).astype(np.float64),
        "prompt_acc": np.array([prompt_accuracy(p, s) for p, s in zip(outputs.prompts, seen)]),
        "replication": ssim(to_tensor(outputs.images), to_tensor(outputs.references)).double().numpy(),
    }
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (character, seed) in enumerate(zip(outputs.characters, outputs.seeds)):
        groups.setdefault((character, seed), []).append(i)
    ap, ap_groups = [], []
    for (character, _), items in sorted(groups.items()):
        within = embeds[items].similarity(embeds[items])
        pairs = [float(within[a, b]) for a, b in combinations(range(len(items)), 2)]
        if pairs:
            ap.append(float(np.mean(pairs)))
            ap_groups.append(character)
    outputs.scores["ap_id_sim"] = np.array(ap)
    outputs.ap_groups = ap_groups
    return outputs


def summary(outputs: Outputs) -> dict[str, tuple[float, float]]:
    """metric -> (mean over characters, 95 % half-width)."""
    out = {}
    for metric, values in outputs.scores.items():
        groups = outputs.ap_groups if metric == "ap_id_sim" else outputs.characters
        keep = ~np.isnan(values)
        out[metric] = interval(values[keep], [g for g, k in zip(groups, keep) if k])
    return out


def markdown(rows: Sequence[Outputs], labels: Mapping[str, str]) -> str:
    """The table: one line per row (``labels`` names it), each figure with its 95 % interval."""
    header = "| method | " + " | ".join(h for h, _ in COLUMNS.values()) + " | characters | outputs |"
    lines = [header, "| --- |" + " --: |" * (len(COLUMNS) + 2)]
    for row in rows:
        stats = summary(row)
        cells = ["{:.{d}f} ± {:.{d}f}".format(*stats[m], d=d) if m in stats else "" for m, (_, d) in COLUMNS.items()]
        lines.append(f"| {labels.get(row.method, row.method)} | " + " | ".join(cells)
                     + f" | {len(set(row.characters))} | {len(row.images)} |")
    return "\n".join(lines)
