"""nlft: Natural Language Fine-Tuning (Liu et al., arXiv 2412.20382) on transformers, PEFT and TRL."""

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"


def resource_path(*parts: str) -> Path:
    """A file or folder shipped in the package (``src/nlft/resources``)."""
    node = resources.files("nlft").joinpath("resources")
    for part in parts:
        node = node.joinpath(part)
    return Path(str(node))
