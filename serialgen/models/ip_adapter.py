"""IP-Adapter on an SDXL UNet, built from diffusers' own classes so training, our inference and
stock ``load_ip_adapter`` run the very same modules.

Two image projections (the paper's Fig. 13 token-count ablation):

- ``full`` (the paper's 257 tokens): every token of the image encoder's penultimate hidden states
  goes through Linear, GELU, Linear, LayerNorm (diffusers' ``IPAdapterFullImageProjection``;
  exported as ``image_proj.proj.{0,2,3}.*``), so the token count is the encoder's sequence length;
- ``plain`` (any other count N): the projected image embedding -> Linear to N tokens, LayerNorm
  (diffusers' ``ImageProjection``; exported as ``image_proj.proj.*``/``image_proj.norm.*``; stock
  ``load_ip_adapter`` assumes N = 4 for this layout).

Every cross-attention gets ``IPAdapterAttnProcessor2_0`` with ``to_k_ip``/``to_v_ip`` initialised
from its ``to_k``/``to_v``; exported as ``ip_adapter.{k}.to_k_ip.weight`` with k = 1, 3, 5, ... in
``unet.attn_processors`` order. The unconditional image embedding is the encoder run on all-zero
pixels (what diffusers' pipelines use for classifier-free guidance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from diffusers.models.embeddings import ImageProjection, IPAdapterFullImageProjection, MultiIPAdapterImageProjection
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

WEIGHTS_NAME = "ip_adapter.safetensors"
#: diffusers module names <-> the original IP-Adapter names ``load_ip_adapter`` reads.
_FULL_NAMES = {"ff.net.0.proj": "proj.0", "ff.net.2": "proj.2", "norm": "proj.3"}
_PLAIN_NAMES = {"image_embeds": "proj", "norm": "norm"}


class IPAdapter(nn.Module):
    """The trainable part: the image projection and the per-cross-attention ``to_k_ip``/``to_v_ip``.

    Its modules are the ones installed in the UNet (shared, not copied), so training this module
    trains the UNet's adapter and nothing else.
    """

    def __init__(self, image_proj: nn.Module, processors: dict[str, IPAdapterAttnProcessor2_0], tokens: int) -> None:
        super().__init__()
        self.image_proj = image_proj
        self.processor_names = list(processors)
        self.processors = nn.ModuleList(processors.values())
        self.tokens = tokens

    @property
    def full(self) -> bool:
        return isinstance(self.image_proj, IPAdapterFullImageProjection)

    def set_scale(self, scale: float) -> None:
        for processor in self.processors:
            processor.scale = [scale]

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under the names stock diffusers ``load_ip_adapter`` reads (one flat safetensors dict);
        the tensors share memory with the live weights (clone them to keep a snapshot)."""
        names = _FULL_NAMES if self.full else _PLAIN_NAMES
        out = {}
        for key, value in self.image_proj.state_dict().items():
            module, leaf = key.rsplit(".", 1)
            out[f"image_proj.{names[module]}.{leaf}"] = value.detach().contiguous()
        for i, processor in enumerate(self.processors):
            out[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"] = processor.to_k_ip[0].weight.detach().contiguous()
            out[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"] = processor.to_v_ip[0].weight.detach().contiguous()
        return out

    def load_export_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights in the exported layout (the inverse of :meth:`export_state_dict`)."""
        names = {v: k for k, v in (_FULL_NAMES if self.full else _PLAIN_NAMES).items()}
        proj = {}
        for key, value in state.items():
            if key.startswith("image_proj."):
                module, leaf = key[len("image_proj."):].rsplit(".", 1)
                proj[f"{names[module]}.{leaf}"] = value
        self.image_proj.load_state_dict(proj)
        for i, processor in enumerate(self.processors):
            processor.to_k_ip[0].weight.data.copy_(state[f"ip_adapter.{2 * i + 1}.to_k_ip.weight"])
            processor.to_v_ip[0].weight.data.copy_(state[f"ip_adapter.{2 * i + 1}.to_v_ip.weight"])


def install_ip_adapter(unet, encoder_config, tokens: int = 257, seed: int = 0) -> IPAdapter:
    """Put an IP-Adapter into ``unet`` (in place) and return its trainable part.

    ``tokens`` equal to the encoder's sequence length ((image / patch)^2 + 1) selects the ``full``
    projection; any other count the ``plain`` one. The projection's initialisation is drawn from
    ``seed`` (the global RNG is left as it was). Everything else in the UNet is left as it was.
    """
    sequence = (encoder_config.image_size // encoder_config.patch_size) ** 2 + 1
    cross_dim = unet.config.cross_attention_dim
    if tokens <= 0:
        raise ValueError(f"personalizer.image_tokens must be positive, got {tokens}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if tokens == sequence:
            image_proj = IPAdapterFullImageProjection(image_embed_dim=encoder_config.hidden_size,
                                                      cross_attention_dim=cross_dim)
        else:
            image_proj = ImageProjection(image_embed_dim=encoder_config.projection_dim, cross_attention_dim=cross_dim,
                                         num_image_text_embeds=tokens)
    processors, adapters = {}, {}
    for name in unet.attn_processors:
        attention = unet.get_submodule(name.removesuffix(".processor"))
        if name.endswith("attn1.processor"):
            processors[name] = AttnProcessor2_0()
            continue
        processor = IPAdapterAttnProcessor2_0(hidden_size=attention.to_k.out_features,
                                              cross_attention_dim=attention.to_k.in_features, num_tokens=(tokens,),
                                              scale=1.0)
        processor.to_k_ip[0].weight.data.copy_(attention.to_k.weight.data)
        processor.to_v_ip[0].weight.data.copy_(attention.to_v.weight.data)
        processors[name] = adapters[name] = processor
    dtype, device = unet.dtype, unet.device
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([image_proj])
    unet.config.encoder_hid_dim_type = "ip_image_proj"  # what diffusers' loader sets too
    adapter = IPAdapter(image_proj, adapters, tokens).to(device, dtype)
    return adapter


def remove_ip_adapter(unet) -> None:
    """Take an installed adapter out of ``unet`` (in place): plain attention processors, no image projection,
    as stock ``unload_ip_adapter`` leaves it, so the UNet saves and loads as a text-only SDXL UNet."""
    unet.set_attn_processor(AttnProcessor2_0())
    unet.encoder_hid_proj = None
    unet.config.encoder_hid_dim_type = None


def load_ip_adapter_weights(unet, encoder_config, path: Path) -> IPAdapter:
    """Install an adapter whose layout and token count are read from an exported ``path`` and load it."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    if "image_proj.proj.3.weight" in state:
        tokens = (encoder_config.image_size // encoder_config.patch_size) ** 2 + 1
    elif "image_proj.proj.weight" in state:
        tokens = state["image_proj.proj.weight"].shape[0] // unet.config.cross_attention_dim
    else:
        raise ValueError(f"{path} is not an IP-Adapter in the full or plain layout (no image_proj.proj weights)")
    adapter = install_ip_adapter(unet, encoder_config, tokens)
    adapter.load_export_state_dict(state)
    return adapter


def reference_processor(encoder_config) -> CLIPImageProcessor:
    """The CLIP preprocessing stock diffusers builds for this encoder (resize + centre crop at its
    image size, CLIP mean/std); on a square input the crop cuts nothing."""
    size = encoder_config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def pad_to_white_square(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 centred on a white square of side max(H, W): the encoder's resize then keeps the
    whole figure (a centre crop of a 512x768 standard image would cut the face at the top)."""
    height, width = image.shape[:2]
    side = max(height, width)
    out = np.full((side, side, 3), 255, np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    out[top:top + height, left:left + width] = image[..., :3]
    return out


def reference_pixels(processor: CLIPImageProcessor, images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HxWx3 references -> the encoder's (N, 3, S, S) pixel values (white-square padded)."""
    return processor([pad_to_white_square(i) for i in images], return_tensors="pt").pixel_values


@torch.no_grad()
def encode_references(encoder: CLIPVisionModelWithProjection, pixels: torch.Tensor, full: bool,
                      keep: torch.Tensor | None = None) -> torch.Tensor:
    """Image embeddings for the adapter, shaped (N, 1, tokens, dim) (full) or (N, 1, dim) (plain).

    ``keep`` False rows get the unconditional embedding: the encoder run on all-zero pixels.
    """
    pixels = pixels.to(encoder.device, encoder.dtype)
    if keep is not None:
        pixels = torch.where(keep.to(pixels.device)[:, None, None, None], pixels, torch.zeros_like(pixels))
    output = encoder(pixels, output_hidden_states=full)
    embeds = output.hidden_states[-2] if full else output.image_embeds
    return embeds[:, None]


@torch.no_grad()
def unconditional_embeds(encoder: CLIPVisionModelWithProjection, full: bool) -> torch.Tensor:
    """The embedding for "no image" (image dropout in training, the negative of classifier-free guidance):
    the encoder on all-zero pixels, as diffusers' pipelines use; shaped as :func:`encode_references`' rows."""
    size = encoder.config.image_size
    return encode_references(encoder, torch.zeros(1, 3, size, size), full)


@torch.no_grad()
def embed_images(encoder: CLIPVisionModelWithProjection, processor: CLIPImageProcessor, images: list[np.ndarray],
                 full: bool, batch_size: int = 64) -> torch.Tensor:
    """uint8 HxWx3 references -> their adapter embeddings (:func:`encode_references`), in batches."""
    chunks = [encode_references(encoder, reference_pixels(processor, images[i:i + batch_size]), full).cpu()
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0)


def save_adapter(adapter: IPAdapter, folder: Path, metadata: dict) -> Path:
    """``folder/ip_adapter.safetensors`` (stock ``load_ip_adapter`` layout) + ``folder/adapter.json``."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(adapter.export_state_dict(), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / "adapter.json").write_text(json.dumps(metadata, indent=1, default=str))
    return folder / WEIGHTS_NAME
