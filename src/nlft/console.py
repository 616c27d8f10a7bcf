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
