"""Tests of the scripts under bench/ (not a package: each is loaded from its file)."""

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_bench(name: str):
    """``bench/<name>.py`` as a module, registered in ``sys.modules`` under ``name`` (dataclasses need it)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
