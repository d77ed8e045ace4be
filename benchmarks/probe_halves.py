"""Identity retrieval of probe folders on each half of the held-out characters (validation: recipe choices;
scored: the figure to report), as in docs/probes.md:

    python benchmarks/probe_halves.py --lake lake-small lake-small/_checkpoints/probes lake-small/_checkpoints/probes-cu

Each half's queries are its characters' images and its gallery their standard views, so top-1 is higher than
over all held-out characters (a gallery half as large): whole images (``top1``) and at the narrower framing of
each pair (``framed_top1``, serialgen/probes/framed.py); attribute accuracies on the same half.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serialgen.compositing.split import SCORED, VALIDATION, held_out_role  # noqa: E402
from serialgen.config import load_settings  # noqa: E402
from serialgen.probes import load_probes  # noqa: E402
from serialgen.probes.data import read_probe_images  # noqa: E402
from serialgen.probes.validation import attribute_validation, identity_validation  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="lake-small")
    parser.add_argument("--flip-average", choices=["folder", "both"], default="folder",
                        help="both: read every folder without and with mirror averaging")
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    settings = load_settings(profile="small", lake=args.lake)
    cfg = settings.probes
    images = read_probe_images(settings.open_lake(), (cfg.height, cfg.width), settings.composite.test_fraction)
    train, held = images.where("train"), images.where("test")
    for role in (VALIDATION, SCORED):
        part = held.subset([i for i, c in enumerate(held.character_ids) if held_out_role(c) == role])
        for folder in args.folders:
            probes = load_probes(folder)
            for flip in ((False, True) if args.flip_average == "both" else (probes.flip_average,)):
                probes.flip_average = flip
                scores = identity_validation(probes, part)["vs_standard"]
                attributes = attribute_validation(probes, train, part)
                print(json.dumps({"half": role, "probes": str(folder), "flip_average": flip,
                                  "characters": len(set(part.character_ids)),
                                  "top1": {k: v["top1"] for k, v in scores.items() if isinstance(v, dict)},
                                  "framed_top1": {k: v["framed_top1"] for k, v in scores.items() if isinstance(v, dict)},
                                  "accuracy": {k: v["accuracy"] for k, v in attributes.items()}}))


if __name__ == "__main__":
    main()
