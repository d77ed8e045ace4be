"""Choose a standardizer recipe on the validation half of the held-out characters (never the scored half).

    SERIALGEN_STANDARDIZER__COLOUR_AUGMENT=0.5 python benchmarks/standardizer_recipe.py --lake lake-small \\
        --out lake-small/_checkpoints/recipes/colour-0.5 --steps 3000 [--role validation|scored|train]

Trains FBDM+RPIM with the profile's recipe (plus any ``SERIALGEN_STANDARDIZER__*`` override) in ``--out``, then standardizes one pair per character of the chosen half as inference does (the one standard
pose, DDIM as configured) and prints PSNR, SSIM, identity-probe ID-Sim and retrieval top-1 / top-5 among
those characters, each with its 95 % interval over characters, beside the mean and recoloured templates and an
oracle (the template recoloured with the target's own colours: what knowing the colours is worth).
``--copy`` also scores the model given each character's own standard view (image, mask, pose) as its reference:
the answer itself, so a model that reads its reference should copy it.
A finished folder is only scored again; an unfinished one is resumed from its newest checkpoint *without* checking
that it was trained with the same recipe (this script is for comparing recipes: give each its own ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serialgen.compositing.dynamic import pairs_dataset  # noqa: E402
from serialgen.compositing.split import held_out_role  # noqa: E402
from serialgen.config import load_settings  # noqa: E402
from serialgen.evaluation.standardizer_table import identity_scores, interval  # noqa: E402
from serialgen.models.standardizer import Standardizer  # noqa: E402
from serialgen.probes import load_probes  # noqa: E402
from serialgen.stages.ablate_standardizer import machine  # noqa: E402
from serialgen.stages.train_standardizer import with_overrides  # noqa: E402
from serialgen.checkpoints import probes_dir  # noqa: E402
from serialgen.storage.images import encode_png  # noqa: E402
from serialgen.training.ablation import baseline_predictions, recolour, score, standardize_all  # noqa: E402
from serialgen.training.standardizer import build_standardizer, train_standardizer  # noqa: E402

KEYS = ("input_image", "background_mask", "reference_pose_image", "target_image")
OPTIONS = ("colour_augment", "self_reference", "token_positions", "train_image_encoder", "colour_embedding")


def one_pair_per_character(items: list[dict], keep, limit: int) -> list[dict]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item["character_id"] not in seen and keep(item["character_id"]):
            seen.add(item["character_id"])
            out.append(item)
    return out[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--role", default="validation", choices=["validation", "scored", "train"])
    parser.add_argument("--characters", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--copy", action="store_true",
                        help="also score the model given each character's own standard view as its reference")
    parser.add_argument("--grid", type=Path,
                        help="write a PNG: input | model | recoloured template | true standard view, first 8 characters")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = with_overrides(load_settings(None, "small", lake=args.lake), steps=args.steps)
    cfg = settings.standardizer.model_copy(update={"num_workers": 0})
    size = (cfg.height, cfg.width)
    train_set, test = pairs_dataset(settings, "train", size), pairs_dataset(settings, "test", size)
    train = [train_set[i] for i in range(len(train_set))]
    started = time.perf_counter()
    result = train_standardizer(build_standardizer(settings), train, cfg, args.out, resume=True)
    trained = time.perf_counter() - started
    if args.role == "train":
        items = one_pair_per_character(train, lambda c: True, args.characters)
    else:
        items = one_pair_per_character([test[i] for i in range(len(test))],
                                       lambda c: held_out_role(c) == args.role, args.characters)
    batch = torch.utils.data.default_collate([{k: item[k] for k in KEYS} for item in items])
    target = batch.pop("target_image")
    chars = [item["character_id"] for item in items]
    model = Standardizer.from_pretrained(result.model_dir)
    outputs = {"model": standardize_all(model, batch, cfg)}
    if args.copy:  # the answer as the reference: can the model copy at all?
        own = {"input_image": target,
               "background_mask": torch.stack([item["target_background_mask"] for item in items]),
               "reference_pose_image": torch.stack([item["target_pose_image"] for item in items])}
        outputs["model, own standard view as reference (copy)"] = standardize_all(model, own, cfg)
    baselines = baseline_predictions(train, batch["input_image"], batch["background_mask"])
    outputs.update({k: baselines[k] for k in ("mean training standard", "recoloured mean standard")})
    # An oracle, not a baseline: the template recoloured with the target's own band colours (what colours are worth).
    target_foreground = torch.stack([item["target_background_mask"][0] < 0.5 for item in items])
    outputs["mean standard recoloured from the target (oracle colours)"] = torch.stack(
        [recolour(baselines["mean training standard"][i], target[i], target_foreground[i]) for i in range(len(items))])
    if args.grid:
        columns = [batch["input_image"], outputs["model"], outputs["recoloured mean standard"], target]
        grid = torch.cat([torch.cat(list(column[:8]), -2) for column in columns], -1)
        args.grid.write_bytes(encode_png(((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()))
    probes = load_probes(probes_dir(settings))
    recipe = ", ".join(f"{k} {getattr(cfg, k)}" for k in OPTIONS)
    fmt = lambda values, d: "{:.{d}f} ± {:.{d}f}".format(*interval(values, chars), d=d)  # noqa: E731
    print(f"{args.out}: step {result.step}, trained {trained:.0f} s here; {args.role} half, {len(items)} characters; "
          f"seed {cfg.seed}, {recipe}; {machine()}")
    print("| method | PSNR | SSIM | ID-Sim | ID top-1 | ID top-5 |")
    for name, prediction in outputs.items():
        psnr, ssim = score(prediction, target)
        ids = identity_scores(probes, prediction, target, chars)
        print(f"| {name} | {fmt(psnr.tolist(), 2)} | {fmt(ssim.tolist(), 4)} | {fmt(ids.id_sim, 3)} | "
              f"{fmt(ids.rank <= 1, 3)} | {fmt(ids.rank <= 5, 3)} |")


if __name__ == "__main__":
    main()
