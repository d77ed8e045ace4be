"""The personalizer's SDXL components: a tiny SDXL-shaped set written to disk offline, SDXL-sized
configs (random weights, for GPU benchmarks) and the one loader both the ``tiny`` and ``sdxl``
profiles use.

The loader reads an SDXL base folder (``unet/``, ``vae/``, ``text_encoder/``, ``text_encoder_2/``,
``tokenizer/``, ``tokenizer_2/``, ``scheduler/``) and a ``CLIPVisionModelWithProjection`` folder
(ViT-H/14 for the paper); nothing downloads, and a missing file is a FileNotFoundError naming the
file, the folder and what it is for. The tiny set is written in exactly that layout (tokenizers as
``vocab.json`` + ``merges.txt``), so tests exercise the same code path real weights take.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from serialgen.models.components import _require
from serialgen.models.loading import without_progress_bars
from serialgen.models.pixel_space import PixelShuffleAutoencoder, load_autoencoder
from serialgen.synthetic.vocabulary import APPEARANCE_WORDS, PHRASES

#: SDXL base's noise schedule (its scheduler/scheduler_config.json); training uses DDPM, inference DDIM on it.
SDXL_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
}
_TEMPLATE_WORDS = ("a", "an", "the", "of", "in", "on", "at", "with", "and", "full", "body", "character", "anime", "photo",
                   "person", "standing", "sitting", "running", "walking", "smiling", "park", "beach", "city", "street",
                   "forest", "room", "front", "back", "side", "view", "red", "blue", "green", "yellow", "girl", "boy",
                   "man", "woman", "hair", "dress", "shirt", "cooking", "meal", "reading", "book", "night", "day", "happy",
                   "sad")
#: Words the tiny tokenizers hold as whole BPE tokens (captions, the template, test prompts, the synthetic
#: vocabulary's phrases); others split into bytes.
TINY_WORDS = _TEMPLATE_WORDS + tuple(sorted({word for phrases in PHRASES.values() for phrase in phrases.values()
                                             for word in phrase.split()} | set(APPEARANCE_WORDS)
                                            - set(_TEMPLATE_WORDS)))


@dataclass
class SDXLParts:
    """What the personalizer needs of SDXL, plus the image encoder, and where they were read from."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL | PixelShuffleAutoencoder
    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    tokenizer: CLIPTokenizer
    tokenizer_2: CLIPTokenizer
    image_encoder: CLIPVisionModelWithProjection
    scheduler_config: dict[str, Any]
    model_dir: Path | None           # None: built in memory (benchmarks)
    image_encoder_dir: Path | None

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder,
                "text_encoder_2": self.text_encoder_2, "image_encoder": self.image_encoder}


def tiny_configs() -> tuple[dict[str, Any], dict[str, Any], CLIPTextConfig, CLIPTextConfig, CLIPVisionConfig]:
    """SDXL-shaped tiny configs (diffusers' own SDXL pipeline tests use this shape): a text_time UNet
    whose cross-attention width is the two text encoders' widths concatenated, a 4-block (/8) VAE, and a
    CLIP vision encoder whose 224 px / patch 14 input yields 257 tokens like ViT-H/14."""
    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000,
                max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
                bos_token_id=0, eos_token_id=2, pad_token_id=1)  # eos 2: pool at the highest id (CLIP's legacy rule)
    unet = dict(sample_size=12, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                transformer_layers_per_block=(1, 2), use_linear_projection=True, norm_num_groups=8,
                cross_attention_dim=64, addition_embed_type="text_time", addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=6 * 8 + 32)
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
               block_out_channels=(8, 16, 16, 16), sample_size=96, scaling_factor=0.13025,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=224, patch_size=14, projection_dim=32, hidden_act="gelu")
    return unet, vae, CLIPTextConfig(**text), CLIPTextConfig(**text), vision


def pixel_configs(channels: tuple[int, ...] = (64, 128, 192), layers_per_block: int = 1, patch_size: int = 4,
                  ) -> tuple[dict[str, Any], dict[str, Any], CLIPTextConfig, CLIPTextConfig, CLIPVisionConfig]:
    """A base model the pipeline trains from scratch (offline profiles): :func:`tiny_configs`' text and
    image encoders and an SDXL-shaped UNet (text_time conditioning, cross-attention on both text
    encoders) over pixel-unshuffled images (:class:`PixelShuffleAutoencoder`), cross-attention on every
    level but the top one. The adapter installs into it exactly as into SDXL."""
    _, _, text, text_2, vision = tiny_configs()
    levels = len(channels)
    unet = dict(sample_size=24, in_channels=3 * patch_size ** 2, out_channels=3 * patch_size ** 2,
                layers_per_block=layers_per_block, block_out_channels=tuple(channels),
                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
                up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
                attention_head_dim=tuple(max(1, c // 32) for c in channels), transformer_layers_per_block=1,
                use_linear_projection=True, norm_num_groups=16, cross_attention_dim=text.hidden_size + text_2.hidden_size,
                addition_embed_type="text_time", addition_time_embed_dim=8,
                projection_class_embeddings_input_dim=6 * 8 + text_2.projection_dim)
    return unet, {"patch_size": patch_size}, text, text_2, vision


def sdxl_configs() -> tuple[dict[str, Any], dict[str, Any], CLIPTextConfig, CLIPTextConfig, CLIPVisionConfig]:
    """SDXL base and OpenCLIP ViT-H/14 shaped configs (70 cross-attention layers, 2048-d context)."""
    unet = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
                transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, cross_attention_dim=2048,
                addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    vae = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=1024,
               block_out_channels=(128, 256, 512, 512), scaling_factor=0.13025, force_upcast=True,
               down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                          projection_dim=768, hidden_act="quick_gelu")
    text_2 = CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                            projection_dim=1280, hidden_act="gelu")
    vision = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                              image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")
    return unet, vae, text, text_2, vision


def random_sdxl_parts(vocab_dir: Path, configs=None, seed: int = 0) -> SDXLParts:
    """Random-weight components from ``configs`` (default :func:`tiny_configs`), tokenizers from the
    BPE vocabulary written to ``vocab_dir``; build under ``torch.device("cuda")`` to initialise on a GPU."""
    unet_config, vae_config, text_config, text_config_2, vision_config = configs or tiny_configs()
    torch.manual_seed(seed)
    _write_bpe_vocabulary(Path(vocab_dir), TINY_WORDS)
    tokenizer = CLIPTokenizer.from_pretrained(vocab_dir, local_files_only=True, model_max_length=77)
    return SDXLParts(
        unet=UNet2DConditionModel(**unet_config), vae=_autoencoder(vae_config), text_encoder=CLIPTextModel(text_config),
        text_encoder_2=CLIPTextModelWithProjection(text_config_2), tokenizer=tokenizer, tokenizer_2=tokenizer,
        image_encoder=CLIPVisionModelWithProjection(vision_config), scheduler_config=dict(SDXL_SCHEDULE),
        model_dir=None, image_encoder_dir=None)


def _autoencoder(config: dict[str, Any]) -> AutoencoderKL | PixelShuffleAutoencoder:
    """An SD VAE from its config, or pixel space when the config names a ``patch_size``."""
    return PixelShuffleAutoencoder(**config) if "patch_size" in config else AutoencoderKL(**config)


def write_sdxl_folders(root: Path, configs=None, seed: int = 0, scheduler: dict[str, Any] | None = None
                       ) -> tuple[Path, Path]:
    """:func:`random_sdxl_parts` saved as ``root/base`` (SDXL base layout, loadable by
    ``StableDiffusionXLPipeline.from_pretrained`` when the VAE is an SD VAE) and ``root/image_encoder``;
    returns both folders. Tokenizers are written as vocab.json + merges.txt, like SDXL base ships them;
    ``scheduler`` overrides entries of SDXL's noise schedule."""
    without_progress_bars()
    root = Path(root)
    base, encoder_dir, vocab_dir = root / "base", root / "image_encoder", root / "vocab"
    parts = random_sdxl_parts(vocab_dir, configs, seed)
    parts.scheduler_config.update(scheduler or {})
    save_sdxl_folders(parts, base, encoder_dir, vocab_dir)
    return base, encoder_dir


def save_sdxl_folders(parts: SDXLParts, base: Path, encoder_dir: Path, vocab_dir: Path | None = None) -> None:
    """``parts`` in the SDXL base layout (``base``) and the image encoder's folder; ``vocab_dir`` holds the
    BPE files to copy in as the tokenizers (None: the tokenizers save themselves)."""
    without_progress_bars()
    pipeline = StableDiffusionXLPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, text_encoder_2=parts.text_encoder_2,
        tokenizer=parts.tokenizer, tokenizer_2=parts.tokenizer_2, unet=parts.unet,
        scheduler=EulerDiscreteScheduler(**parts.scheduler_config))
    pipeline.save_pretrained(base, safe_serialization=True)
    for folder in ("tokenizer", "tokenizer_2"):
        if vocab_dir is not None:
            (base / folder / "tokenizer.json").unlink(missing_ok=True)
            for name in ("vocab.json", "merges.txt"):
                (base / folder / name).write_bytes((Path(vocab_dir) / name).read_bytes())
    parts.image_encoder.save_pretrained(encoder_dir, safe_serialization=True)


def load_sdxl_parts(model_dir: Path | None, image_encoder_dir: Path | None,
                    dtype: torch.dtype = torch.float32) -> SDXLParts:
    """Every component from local folders only; any missing file is one clear FileNotFoundError."""
    if model_dir is None or image_encoder_dir is None:
        raise FileNotFoundError(
            "the personalizer needs local weights: set personalizer.model_dir to an SDXL base folder (unet/, vae/, "
            "text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/) and personalizer.image_encoder_dir "
            "to a CLIPVisionModelWithProjection folder (ViT-H/14); nothing is downloaded")
    model_dir, image_encoder_dir = Path(model_dir), Path(image_encoder_dir)
    where = "(personalizer.model_dir, the SDXL base folder)"
    _require(model_dir / "unet", f"the SDXL UNet {where}", "diffusion_pytorch_model")
    if not _is_pixel_space(model_dir / "vae"):
        _require(model_dir / "vae", f"the SDXL VAE {where}", "diffusion_pytorch_model")
    _require(model_dir / "text_encoder", f"SDXL's first text encoder, CLIP ViT-L {where}", "model")
    _require(model_dir / "text_encoder_2", f"SDXL's second text encoder, OpenCLIP bigG {where}", "model")
    for folder in ("tokenizer", "tokenizer_2"):
        for name in ("vocab.json", "merges.txt"):
            _require_file(model_dir / folder / name, f"the BPE vocabulary of SDXL's {folder} {where}")
    _require_file(model_dir / "scheduler" / "scheduler_config.json", f"SDXL's noise schedule {where}")
    _require(image_encoder_dir, "the reference image encoder, a CLIPVisionModelWithProjection such as ViT-H/14 "
             "(personalizer.image_encoder_dir)", "model")
    without_progress_bars()
    load = dict(local_files_only=True, torch_dtype=dtype)
    stored = json.loads((model_dir / "scheduler" / "scheduler_config.json").read_text())
    return SDXLParts(
        unet=UNet2DConditionModel.from_pretrained(model_dir / "unet", **load),
        vae=load_autoencoder(model_dir / "vae", dtype),
        text_encoder=CLIPTextModel.from_pretrained(model_dir / "text_encoder", **_dtype_kw(dtype)),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(model_dir / "text_encoder_2", **_dtype_kw(dtype)),
        tokenizer=CLIPTokenizer.from_pretrained(model_dir / "tokenizer", local_files_only=True),
        tokenizer_2=CLIPTokenizer.from_pretrained(model_dir / "tokenizer_2", local_files_only=True),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(image_encoder_dir, **_dtype_kw(dtype)),
        scheduler_config={**SDXL_SCHEDULE, **{k: stored[k] for k in SDXL_SCHEDULE if k in stored}},
        model_dir=model_dir, image_encoder_dir=image_encoder_dir)


def _is_pixel_space(folder: Path) -> bool:
    config = folder / "config.json"
    return config.is_file() and json.loads(config.read_text()).get("_class_name") == PixelShuffleAutoencoder.__name__


def _dtype_kw(dtype: torch.dtype) -> dict[str, Any]:
    return {"local_files_only": True, "dtype": dtype}


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path.name} in {path.parent}: expected {what} there")


def _write_bpe_vocabulary(folder: Path, words: tuple[str, ...]) -> None:
    """A CLIP byte-level BPE vocabulary: the 256 byte symbols (alone and word-final), merges that make each
    of ``words`` one token, and the start/end tokens last (end = highest id, as in CLIP).

    Each word's merges are appended after the earlier words' ones and join the pieces the earlier merges
    already make of it, so BPE (lowest rank first) ends every word in one token whatever letters words share."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = _apply_bpe([*word[:-1], word[-1] + "</w>"], merges)
        merged = pieces[0]
        for piece in pieces[1:]:
            merges[(merged, piece)] = len(merges)
            merged += piece
            if merged not in vocab:
                vocab.append(merged)
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in merges) + "\n")


def _apply_bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the lowest-ranked adjacent pair (every occurrence) until none applies."""
    while len(pieces) > 1:
        pair = min(zip(pieces, pieces[1:]), key=lambda p: ranks.get(p, len(ranks)))
        if pair not in ranks:
            break
        out, i = [], 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == pair:
                out.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                out.append(pieces[i])
                i += 1
        pieces = out
    return pieces
