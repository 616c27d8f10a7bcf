"""What a command prints besides its results: logging set-up for the ``nlft`` commands."""

from __future__ import annotations

import logging
import warnings


def setup_logging(level: int = logging.INFO) -> None:
    """nlft's own messages at ``level`` (INFO by default), everyone else's warnings only."""
    # PEFT reads a property transformers 5 deprecated; the warning is theirs and says nothing to our users.
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*deprecated", category=FutureWarning
    )
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("nlft").setLevel(level)
    quiet_deepspeed()


def quiet_deepspeed() -> None:
    """Where DeepSpeed is installed on a machine without CUDA, tell it so before anything imports it: otherwise
    every command that loads transformers' trainer prints DeepSpeed's accelerator-detection warning."""
    import importlib.util
    import os

    if "DS_ACCELERATOR" in os.environ or importlib.util.find_spec("deepspeed") is None:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
