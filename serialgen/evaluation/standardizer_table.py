"""The standardizer ablation as a table: pixel fidelity and identity, with 95 % intervals over characters.

Identity is read by the identity probe (:mod:`serialgen.probes`): ID-Sim of each output to its own
character's true standard view, and retrieval among the scored characters' standard views (is the output
nearest to its own character?), beside the same retrieval by raw pixels. A tinted template sits near
every target by pixels and at chance by retrieval; a model that keeps the character does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from serialgen.probes import Probes
from serialgen.probes.validation import ranks
from serialgen.training.ablation import Ablation

#: Pixels at least this bright in every channel count as the white background of a standard view.
WHITE = 245


def _uint8(images: torch.Tensor) -> list[np.ndarray]:
    return list(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def figure_on_white(image: np.ndarray) -> np.ndarray:
    """The figure mask (255 = figure) of an image drawn on white, as a standard view is."""
    return np.where(image[..., :3].min(-1) < WHITE, 255, 0).astype(np.uint8)


@dataclass
class IdentityScores:
    id_sim: np.ndarray          # (N,) probe cosine to the own character's standard view
    rank: np.ndarray            # (N,) own character's rank among the scored characters (probe)
    pixel_rank: np.ndarray      # (N,) the same by pixel distance


def identity_scores(probes: Probes, predictions: torch.Tensor, targets: torch.Tensor,
                    character_ids: Sequence[str]) -> IdentityScores:
    """Each output against every scored character's standard view (one per character, its first pair's)."""
    first: dict[str, int] = {}
    for i, c in enumerate(character_ids):
        first.setdefault(c, i)
    gallery = list(first.values())
    outputs, standards = _uint8(predictions), _uint8(targets)
    out_emb = probes.embed(outputs, [figure_on_white(im) for im in outputs])
    std_emb = probes.embed(standards, [figure_on_white(im) for im in standards])
    id_sim = (out_emb * std_emb).sum(1).numpy()
    gallery_ids = [character_ids[i] for i in gallery]
    rank = ranks(1 - out_emb @ std_emb[gallery].T, character_ids, gallery_ids)
    pixel = torch.cdist(predictions.flatten(1).float(), targets[gallery].flatten(1).float())
    return IdentityScores(id_sim, rank, ranks(pixel, character_ids, gallery_ids))


def interval(values: Sequence[float], groups: Sequence[str]) -> tuple[float, float]:
    """Mean of per-group means and the half-width of its normal 95 % interval (groups = characters)."""
    by_group: dict[str, list[float]] = {}
    for value, group in zip(values, groups):
        by_group.setdefault(group, []).append(float(value))
    means = np.array([np.mean(v) for v in by_group.values()])
    half = 1.96 * means.std(ddof=1) / np.sqrt(len(means)) if len(means) > 1 else float("nan")
    return float(means.mean()), float(half)


def markdown(ablation: Ablation, identity: Mapping[str, IdentityScores] | None) -> str:
    """Variants, then baselines; each figure with its 95 % interval over the scored characters."""
    chars = ablation.character_ids
    mark = lambda flag: "" if flag is None else ("✓" if flag else "✗")  # noqa: E731
    fmt = lambda values, digits: "{:.{d}f} ± {:.{d}f}".format(*interval(values, chars), d=digits)  # noqa: E731
    header = "| method | FBDM | RPIM | PSNR (dB) ↑ | SSIM ↑ |"
    rule = "| --- | :-: | :-: | --: | --: |"
    if identity:
        header += " ID-Sim ↑ | ID top-1 ↑ | ID top-5 ↑ | pixels top-1 |"
        rule += " --: | --: | --: | --: |"
    lines = [header + " n |", rule + " --: |"]
    for row in ablation.rows:
        line = (f"| {row.method} | {mark(row.fbdm)} | {mark(row.rpim)} | {fmt(row.per_pair_psnr, 2)} | "
                f"{fmt(row.per_pair_ssim, 4)} |")
        scores = (identity or {}).get(row.method)
        if identity:
            line += (f" {fmt(scores.id_sim, 3)} | {fmt(scores.rank <= 1, 3)} | {fmt(scores.rank <= 5, 3)} | "
                     f"{np.mean(scores.pixel_rank <= 1):.3f} |" if scores is not None else " | | | |")
        lines.append(line + f" {row.n} |")
    return "\n".join(lines)
