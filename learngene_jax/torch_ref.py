"""PyTorch references (timm, transformers) for parity tests and benchmarks; all are optional extras.

timm imports torchvision, whose PyPI build for CPU-only torch 2.13 fails to register its C++ ops
(`operator torchvision::nms does not exist`). Declaring the two op schemas first lets the pure-Python
parts (models, transforms) import; only detection ops such as nms stay unavailable.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from learngene_jax.errors import UserError, fail

_library = None  # keeps the stand-in op registration alive


def import_torch() -> ModuleType:
    """torch, or a one-line error saying how to install the CPU build."""
    try:
        import torch
    except ImportError:
        fail(UserError, "this needs PyTorch: pip install torch==2.13.0 (CPU build)")
    return torch


def _torchvision_importable(torch: ModuleType) -> None:
    """Make `import torchvision` work next to CPU torch (see module docstring); a no-op where it already does."""
    global _library
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return  # not installed: the importer does without it
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm", "transformers")]:
            del sys.modules[name]
        _library = torch.library.Library("torchvision", "DEF")
        _library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _import_next_to_torch(name: str, pin: str) -> ModuleType:
    """`import name` once torchvision can be imported (see module docstring), or a one-line install hint."""
    _torchvision_importable(import_torch())
    try:
        return importlib.import_module(name)
    except ImportError:
        fail(UserError, f"this needs {name}: pip install {name}=={pin} -c constraints.txt")


def import_timm() -> ModuleType:
    """timm, importable next to CPU torch (see module docstring)."""
    return _import_next_to_torch("timm", "1.0.31")


def import_transformers() -> ModuleType:
    """Hugging Face transformers with its PyTorch models, importable next to CPU torch (see module docstring)."""
    return _import_next_to_torch("transformers", "5.23.0")
