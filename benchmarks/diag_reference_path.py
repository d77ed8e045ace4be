"""Does the personalizer read its reference? Held-out denoising loss with the own reference, another
character's, and the adapter off, on the same noise and timesteps (the search in docs/personalizer_table2.md).

    python benchmarks/diag_reference_path.py --lake lake-small --mode paired_one_stage --lr 1e-2 --tokens 4 --steps 400
    python benchmarks/diag_reference_path.py --lake lake-small --mode unpaired --joint --lr 3e-4 --steps 400
    python benchmarks/diag_reference_path.py --lake lake-small --mode unpaired --train-encoder --steps 300 --overfit 64
    python benchmarks/diag_reference_path.py --lake lake-small --mode unpaired --pixel-tokens --steps 300 --overfit 16 [--joint]

Trains one adapter on the lake's trained base (`serialgen train-base`) for ``--steps`` and scores 256 pairs of
the validation half of the held-out characters, over all timesteps and over the noisier half alone (where the
reference has to decide what is drawn). Diagnostics outside the method: ``--joint`` also trains every UNet
weight (IP-Adapter keeps the base frozen); ``--train-encoder`` also trains the image encoder (references go in as
pixels); ``--pixel-tokens`` replaces the encoder by tokens that hold the reference's pixels and their positions;
``--overfit N`` trains on N train images and scores those same images, each with itself as reference
(``--mode unpaired``): can the path carry anything at all?
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.nn import functional as F
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serialgen.checkpoints import sdxl_folders  # noqa: E402
from serialgen.compositing.split import VALIDATION, held_out_role, split_of  # noqa: E402
from serialgen.config import load_settings  # noqa: E402
from serialgen.models.ip_adapter import embed_images, pad_to_white_square, reference_processor  # noqa: E402
from serialgen.models.sdxl import load_sdxl_parts  # noqa: E402
from serialgen.synthetic.labelled import labelled_images  # noqa: E402
from serialgen.training.captioned import CaptionedImages, captioned, with_references  # noqa: E402
from serialgen.training.data import seed_of  # noqa: E402
from serialgen.training.personalizer import Personalizer, diffusion_loss, train_personalizer  # noqa: E402
from serialgen.training.synthetic_pairs import MODES, source_images, training_pairs  # noqa: E402


class JointTraining:
    """Mixed into a personalizer: the adapter and every UNet weight train (diagnostic only)."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        adapter = {id(p) for p in self.adapter.parameters()}
        return list(self.adapter.parameters()) + [p for p in self.unet.parameters() if id(p) not in adapter]


class EncoderPersonalizer(Personalizer):
    """The adapter and the image encoder train; references arrive as uint8 white-padded squares (diagnostic only)."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.adapter.parameters()) + list(self.image_encoder.parameters())

    def reference_embeds(self, batch: dict, keep: torch.Tensor | None) -> torch.Tensor:
        processor = reference_processor(self.image_encoder.config)
        size = self.image_encoder.config.image_size
        pixels = F.interpolate(batch["image_embeds"].float() / 255, size=(size, size), mode="bicubic")
        pixels = (pixels - torch.tensor(processor.image_mean).view(1, 3, 1, 1)) / torch.tensor(processor.image_std).view(1, 3, 1, 1)
        if keep is not None:
            pixels = torch.where(keep[:, None, None, None], pixels, torch.zeros_like(pixels))
        output = self.image_encoder(pixels, output_hidden_states=True)
        return (output.hidden_states[-2] if self.adapter.full else output.image_embeds)[:, None]


class PixelTokenPersonalizer(Personalizer):
    """References as tokens that carry everything: each 4 x 4 patch of the reference's pixels (a fixed random
    projection to 16 numbers) beside 16 sinusoidal numbers of its position; 384 tokens at 64 x 96 (diagnostic only:
    is the encoder what limits the adapter?). Dropped references keep the positions and lose the pixels."""

    def reference_embeds(self, batch: dict, keep: torch.Tensor | None) -> torch.Tensor:
        embeds = batch["image_embeds"]
        if keep is None:
            return embeds
        pixels_kept = torch.cat([keep[:, None].float().expand(-1, PIXEL_DIMS), torch.ones(len(keep), POSITION_DIMS)], 1)
        return embeds * pixels_kept[:, None, None, :]


PIXEL_DIMS = POSITION_DIMS = 16


def pixel_tokens(images: list) -> torch.Tensor:
    """(N, 1, H/4 * W/4, 32) tokens of HxWx3 uint8 images (:class:`PixelTokenPersonalizer`)."""
    pixels = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 127.5 - 1 for i in images])
    patches = F.pixel_unshuffle(pixels, 4).flatten(2).transpose(1, 2)              # (N, H/4 * W/4, 48)
    generator = torch.Generator().manual_seed(0)
    projection = torch.linalg.qr(torch.randn(patches.shape[-1], patches.shape[-1], generator=generator))[0]
    rows, cols = pixels.shape[2] // 4, pixels.shape[3] // 4
    y, x = (t.flatten()[:, None].float() for t in torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"))
    frequencies = torch.tensor([1.0, 2.0, 4.0, 8.0]) * math.pi
    position = torch.cat([torch.sin(y / rows * frequencies), torch.cos(y / rows * frequencies),
                          torch.sin(x / cols * frequencies), torch.cos(x / cols * frequencies)], 1)
    tokens = torch.cat([3 * patches @ projection[:, :PIXEL_DIMS], position.expand(len(images), -1, -1)], 2)
    return tokens[:, None]


def squares(images: list) -> torch.Tensor:
    return torch.stack([torch.from_numpy(pad_to_white_square(i)).permute(2, 0, 1).contiguous() for i in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", default="lake-small")
    parser.add_argument("--mode", choices=MODES, default="paired_one_stage")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tokens", type=int, default=257)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--joint", action="store_true")
    parser.add_argument("--train-encoder", action="store_true")
    parser.add_argument("--pixel-tokens", action="store_true")
    parser.add_argument("--overfit", type=int, default=0)
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
    if args.overfit:
        train = held = train[:args.overfit]
    parts = load_sdxl_parts(*sdxl_folders(settings))
    kind = EncoderPersonalizer if args.train_encoder else PixelTokenPersonalizer if args.pixel_tokens else Personalizer
    if args.joint:
        kind = type("Joint" + kind.__name__, (JointTraining, kind), {})
    model = kind(parts, args.tokens)
    if args.joint:
        model.unet.requires_grad_(True).train()
    if args.train_encoder:
        model.image_encoder.requires_grad_(True).train()
    processor = reference_processor(parts.image_encoder.config)

    def encode(shown: list) -> torch.Tensor:
        if args.pixel_tokens:
            return pixel_tokens(shown)
        return squares(shown) if args.train_encoder else embed_images(model.image_encoder, processor, shown,
                                                                      model.adapter.full)

    def data(targets: list[int], references: list[int], pool: list) -> CaptionedImages:
        return with_references(pool, targets, references, model.tokenizers, encode)

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
    if args.overfit:
        targets = own = list(range(len(held)))
        other = own[1:] + own[:1]
    noisier = SimpleNamespace(noise_offset=0.0, text_dropout=0.0, image_dropout=0.0, both_dropout=0.0,
                              high_noise_share=1.0)  # every timestep from the noisier half, nothing dropped
    scheduler, out = model.training_scheduler(), {"all timesteps": {}, "noisier half": {}}
    for name, references, scale in (("own", own, 1.0), ("another character's", other, 1.0), ("adapter off", own, 0.0)):
        scored = data(targets, references, held)
        for span, cfg in (("all timesteps", None), ("noisier half", noisier)):
            total = 0.0
            for repeat in range(2):
                for first in range(0, len(scored), 32):
                    batch = default_collate([scored[i] for i in range(first, min(first + 32, len(scored)))])
                    generator = torch.Generator().manual_seed(seed_of(0, repeat, first))
                    with torch.no_grad():
                        loss = diffusion_loss(model, model, scheduler, batch, generator, torch.device("cpu"), cfg,
                                              scale=scale)
                    total += loss.item() * len(batch["pair_id"])
            out[span][name] = round(total / (2 * len(scored)), 6)
    print(json.dumps({**vars(args), "train_seconds": round(seconds, 1), "held_out_loss": out}))


if __name__ == "__main__":
    main()
