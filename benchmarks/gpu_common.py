"""What every GPU benchmark script shares: the ``--tiny`` CPU smoke mode and the device/size it implies."""

from __future__ import annotations

import argparse
import sys


def add_tiny_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tiny", action="store_true", help="tiny random model at 64x96 (CPU smoke test)")


def device_and_size(tiny: bool):
    """(torch device, (height, width)): CUDA at the paper's 768x512, or the CPU at 96x64 with ``--tiny``;
    without CUDA and without ``--tiny`` the script stops with one line saying so."""
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not tiny:
        sys.exit("no CUDA device visible: run on a GPU machine, or pass --tiny for a CPU smoke test")
    return torch.device("cuda" if cuda else "cpu"), ((96, 64) if tiny else (768, 512))
