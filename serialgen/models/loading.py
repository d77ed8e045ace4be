"""Loading and saving weights quietly: the Hugging Face libraries draw a progress bar per model they load or
save ("Loading weights: 0%|...", "Writing model shards") into the terminal and every flow-run log; the
pipeline reports its own progress instead."""

from __future__ import annotations


def without_progress_bars() -> None:
    """Turn off transformers' and diffusers' progress bars for this process (call before loading or saving)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
