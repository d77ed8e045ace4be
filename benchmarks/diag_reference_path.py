"""Does the personalizer read its reference? Held-out denoising loss with the own reference, another
character's, and the adapter off, on the same noise and timesteps (the search in docs/personalizer_table2.md).

    python benchmarks/diag_reference_path.py --lake lake-small --mode paired_one_stage --lr 1e-2 --tokens 4 --steps 400
    python benchmarks/diag_reference_path.py --lake lake-small --mode unpaired --joint --lr 3e-4 --steps 400

Trains one adapter on the lake's trained base (`serialgen train-base`) for ``--steps`` and scores 256 pairs of
the validation half of the held-out characters. ``--joint`` also trains every UNet weight: a diagnostic outside
the method (IP-Adapter keeps the base frozen) that asks whether the reference path carries anything at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serialgen.checkpoints import sdxl_folders  # noqa: E402
from serialgen.compositing.split import VALIDATION, held_out_role, split_of  # noqa: E402
from serialgen.config import load_settings  # noqa: E402
from serialgen.models.ip_adapter import embed_images, reference_processor  # noqa: E402
from serialgen.models.sdxl import load_sdxl_parts  # noqa: E402
from serialgen.synthetic.labelled import labelled_images  # noqa: E402
from serialgen.training.captioned import CaptionedImages, captioned, with_references  # noqa: E402
from serialgen.training.data import seed_of  # noqa: E402
from serialgen.training.personalizer import Personalizer, diffusion_loss, train_personalizer  # noqa: E402
from serialgen.training.synthetic_pairs import MODES, source_images, training_pairs  # noqa: E402


class JointPersonalizer(Personalizer):
    """The adapter and every UNet weight train (diagnostic only)."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        adapter = {id(p) for p in self.adapter.parameters()}
        return list(self.adapter.parameters()) + [p for p in self.unet.parameters() if id(p) not in adapter]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="lake-small")
    parser.add_argument("--mode", choices=MODES, default="paired_one_stage")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tokens", type=int, default=257)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--joint", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = load_settings(profile="small", lake=args.lake)
    size = (settings.personalizer.height, settings.personalizer.width)
    images = captioned(labelled_images(settings.open_lake(), sources=("render", "pair")), size)
    fraction = settings.composite.test_fraction
    train = [i for i in images if split_of(i.character_id, fraction) == "train"]
    held = [i for i in images if split_of(i.character_id, fraction) != "train"
            and held_out_role(i.character_id) == VALIDATION]
    parts = load_sdxl_parts(*sdxl_folders(settings))
    model = (JointPersonalizer if args.joint else Personalizer)(parts, args.tokens)
    if args.joint:
        model.unet.requires_grad_(True).train()
    processor = reference_processor(parts.image_encoder.config)

    def data(targets: list[int], references: list[int], pool: list) -> CaptionedImages:
        return with_references(pool, targets, references, model.tokenizers,
                               lambda shown: embed_images(model.image_encoder, processor, shown, model.adapter.full))

    cfg = settings.personalizer.model_copy(update={"steps": args.steps, "learning_rate": args.lr,
                                                   "image_tokens": args.tokens, "checkpoint_every": 0})
    started = time.perf_counter()
    train_personalizer(model, data(*training_pairs(train, args.mode), train), cfg, Path(tempfile.mkdtemp()),
                       resume=False)
    seconds = time.perf_counter() - started
    model.eval()
    sources = source_images(held)
    targets = [k for k, i in enumerate(held) if i.character_id in sources and sources[i.character_id] != k][:256]
    characters = sorted({held[t].character_id for t in targets})
    own = [sources[held[t].character_id] for t in targets]
    other = [sources[characters[(characters.index(held[t].character_id) + 1) % len(characters)]] for t in targets]
    scheduler, out = model.training_scheduler(), {}
    for name, references, scale in (("own", own, 1.0), ("another character's", other, 1.0), ("adapter off", own, 0.0)):
        scored, total = data(targets, references, held), 0.0
        for repeat in range(2):
            for first in range(0, len(scored), 32):
                batch = default_collate([scored[i] for i in range(first, min(first + 32, len(scored)))])
                generator = torch.Generator().manual_seed(seed_of(0, repeat, first))
                with torch.no_grad():
                    loss = diffusion_loss(model, model, scheduler, batch, generator, torch.device("cpu"), scale=scale)
                total += loss.item() * len(batch["pair_id"])
        out[name] = round(total / (2 * len(scored)), 6)
    print(json.dumps({**vars(args), "train_seconds": round(seconds, 1), "held_out_loss": out}))


if __name__ == "__main__":
    main()
