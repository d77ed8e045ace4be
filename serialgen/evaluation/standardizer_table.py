"""The standardizer ablation as a table: pixel fidelity and identity, with 95 % intervals over characters.

Identity is read by the identity probe (:mod:`serialgen.probes`): ID-Sim of each output to its own
character's true standard view, and retrieval among the scored characters' standard views (is the output
nearest to its own character?), beside the same retrieval by raw pixels. A tinted template sits near
every target by pixels and at chance by retrieval; a model that keeps the character does not.
Appearance recovery is read by the appearance probe against the procedural spec: hair style and garment
types all right, and the share of hair / top / bottom colours right (the probe's reading of the true
standard views is its ceiling).
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


#: Appearance attributes the table checks: shapes (all must be right) and colours (share right).
SHAPES = ("hair_style", "top", "bottom")
COLOURS = ("hair_colour", "top_colour", "bottom_colour")


@dataclass
class IdentityScores:
    id_sim: np.ndarray          # (N,) probe cosine to the own character's standard view
    rank: np.ndarray            # (N,) own character's rank among the scored characters (probe)
    pixel_rank: np.ndarray      # (N,) the same by pixel distance
    shapes: np.ndarray | None = None   # (N,) 1 when hair style and garment types are all read right
    colours: np.ndarray | None = None  # (N,) share of the hair, top and bottom colours read right


def appearance_recovery(readings: Sequence[Mapping[str, str]], looks: Sequence[Mapping[str, str] | None],
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(shapes right, colour share right) per image: the appearance probe's ``readings`` against the character's
    appearance words (NaN where the spec is unknown)."""
    shapes, colours = [], []
    for reading, truth in zip(readings, looks):
        known = lambda names: [n for n in names if truth and truth.get(n) is not None]  # noqa: E731
        shapes.append(float(all(reading[n] == truth[n] for n in known(SHAPES))) if known(SHAPES) else np.nan)
        colours.append(np.mean([reading[n] == truth[n] for n in known(COLOURS)]) if known(COLOURS) else np.nan)
    return np.array(shapes, float), np.array(colours, float)


def identity_scores(probes: Probes, predictions: torch.Tensor, targets: torch.Tensor,
                    character_ids: Sequence[str], looks: Mapping[str, Mapping[str, str]] | None = None,
                    ) -> IdentityScores:
    """Each output against every scored character's standard view (one per character, its first pair's);
    with ``looks`` (character -> appearance words) also the appearance the attribute probe reads."""
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
    scores = IdentityScores(id_sim, rank, ranks(pixel, character_ids, gallery_ids))
    if looks:
        readings = probes.describe(outputs, [figure_on_white(im) for im in outputs])
        scores.shapes, scores.colours = appearance_recovery(readings, [looks.get(c) for c in character_ids])
    return scores


def interval(values: Sequence[float], groups: Sequence[str]) -> tuple[float, float]:
    """Mean of per-group means and the half-width of its normal 95 % interval (groups = characters)."""
    by_group: dict[str, list[float]] = {}
    for value, group in zip(values, groups):
        by_group.setdefault(group, []).append(float(value))
    means = np.array([np.mean(v) for v in by_group.values()])
    means = means[~np.isnan(means)]
    half = 1.96 * means.std(ddof=1) / np.sqrt(len(means)) if len(means) > 1 else float("nan")
    return float(means.mean()), float(half)


def markdown(ablation: Ablation, identity: Mapping[str, IdentityScores] | None) -> str:
    """Variants, then baselines; each figure with its 95 % interval over the scored characters."""
    chars = ablation.character_ids
    mark = lambda flag: "" if flag is None else ("✓" if flag else "✗")  # noqa: E731
    fmt = lambda values, digits: "{:.{d}f} ± {:.{d}f}".format(*interval(values, chars), d=digits)  # noqa: E731
    header = "| method | FBDM | RPIM | PSNR (dB) ↑ | SSIM ↑ |"
    rule = "| --- | :-: | :-: | --: | --: |"
    looks = any(getattr(v, "shapes", None) is not None for v in (identity or {}).values())
    if identity:
        header += " ID-Sim ↑ | ID top-1 ↑ | ID top-5 ↑ | pixels top-1 |"
        rule += " --: | --: | --: | --: |"
    if looks:
        header += " hair & garments ✓ ↑ | colours ✓ ↑ |"
        rule += " --: | --: |"
    lines = [header + " n |", rule + " --: |"]
    for row in ablation.rows:
        line = (f"| {row.method} | {mark(row.fbdm)} | {mark(row.rpim)} | {fmt(row.per_pair_psnr, 2)} | "
                f"{fmt(row.per_pair_ssim, 4)} |")
        scores = (identity or {}).get(row.method)
        if identity:
            line += (f" {fmt(scores.id_sim, 3)} | {fmt(scores.rank <= 1, 3)} | {fmt(scores.rank <= 5, 3)} | "
                     f"{np.mean(scores.pixel_rank <= 1):.3f} |" if scores is not None else " | | | |")
        if looks:
            line += _appearance_cells(scores, fmt)
        lines.append(line + f" {row.n} |")
    ceiling = (identity or {}).get(ORACLE)
    if looks and ceiling is not None:
        lines.append(f"| {ORACLE} (the probe's ceiling) | | | | |" + " | | | |" * bool(identity)
                     + _appearance_cells(ceiling, fmt) + f" {len(chars)} |")
    return "\n".join(lines)


#: The identity entry holding the probe's reading of the true standard views.
ORACLE = "true standard view"


def _appearance_cells(scores: IdentityScores | None, fmt) -> str:
    if scores is None or scores.shapes is None:
        return " | |"
    return f" {fmt(scores.shapes, 3)} | {fmt(scores.colours, 3)} |"
