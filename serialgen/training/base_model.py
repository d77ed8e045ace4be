"""Training the personalizer's base text-to-image model from scratch (offline profiles): the UNet of a
pixel-space SDXL-shaped model learns the captioned train split; the text encoders stay as built. With an
image path (``base_model.image_path``) an IP-Adapter is installed from the start and trains with the UNet,
each image given another image of its character as reference: a from-scratch base otherwise learns to
ignore its cross-attention, and a frozen base then gives an adapter nothing to steer
(docs/personalizer_table2.md). The personalizer's adapters start from that one.

Same loop as the other models (:func:`serialgen.training.loop.fit`: accelerate, exact resume, EMA,
TensorBoard), the personalizer's loss without an adapter (captions dropped with ``text_dropout`` for
classifier-free guidance). Checkpoints hold the UNet alone.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from torch import nn
from torch.utils.data import Dataset

from serialgen.config import BaseModelSettings
from serialgen.models.sdxl import SDXLParts
from serialgen.training.loop import LoopTimes, make_accelerator
from serialgen.training.personalizer import TextToImage, fit_diffusion


class BaseModel(TextToImage):
    """SDXL's parts with a trainable UNet, and with ``image_tokens`` an IP-Adapter inside it (trained too:
    the adapter's modules are UNet submodules)."""

    def __init__(self, parts: SDXLParts, image_tokens: int | None = None, seed: int = 0) -> None:
        super().__init__(parts)
        if image_tokens is not None:
            self.install_adapter(image_tokens, seed)
        self.unet.requires_grad_(True).train()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.unet.parameters())


def train_base_model(model: BaseModel, train_data: Dataset, cfg: BaseModelSettings, output_dir: Path,
                     resume: bool = True, stop_at: int | None = None) -> LoopTimes:
    """Train the UNet on ``train_data`` (:class:`serialgen.training.captioned.CaptionedImages`) to
    ``cfg.steps`` (or ``stop_at``); at the last step the UNet holds the weights to export (EMA if on)."""
    output_dir = Path(output_dir)
    accelerator = make_accelerator(cfg, output_dir)
    device = accelerator.device
    for module in (model.unet, model.text_encoder, model.text_encoder_2, model.image_encoder, model.vae):
        module.to(device)
    result = fit_diffusion(model, train_data, cfg, output_dir, accelerator, LoopTimes(), "train-base",
                           _register_checkpoint_hooks, resume, stop_at)
    model.unet.eval()
    return result


def _register_checkpoint_hooks(accelerator: Accelerator) -> None:
    """Checkpoints hold the UNet alone (with its adapter, if any), never the frozen encoders."""
    from safetensors.torch import load_file, save_file

    def save(models, weights, folder):
        for m in models:
            save_file(accelerator.unwrap_model(m).unet.state_dict(), str(Path(folder) / "unet.safetensors"))
        weights.clear()

    def load(models, folder):
        while models:
            accelerator.unwrap_model(models.pop()).unet.load_state_dict(load_file(str(Path(folder) / "unet.safetensors")))

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)
