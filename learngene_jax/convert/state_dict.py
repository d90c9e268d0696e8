"""Reading PyTorch checkpoints (.pth/.pt/.bin via torch, .safetensors, .npz) into flat numpy dicts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.errors import ConversionError, fail

# Keys under which training scripts (DeiT, timm, the learngene repos) nest the weights.
WRAPPER_KEYS = ("model", "state_dict", "model_state", "module")


def _torch_load(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        fail(ConversionError, f"reading {path.name} needs PyTorch: pip install torch==2.13.0 "
                              f"(or convert it to .safetensors first)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - older checkpoints pickle argparse Namespaces; retry below
        pass
    try:
        # Official DeiT-harness checkpoints store an argparse Namespace next to the weights; torch >= 2.6
        # refuses that with weights_only=True. The file is the user's own.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001
        fail(ConversionError, f"cannot read {path} as a PyTorch checkpoint (truncated or not a torch file?): "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().cpu().float().numpy() if value.is_floating_point() else value.cpu().numpy()
    return np.asarray(value)


def read_state_dict(path: str | Path, wrapper: str | None = None) -> dict[str, np.ndarray]:
    """A flat {key: array} from a checkpoint file, unwrapping {'model': ...}-style containers."""
    path = Path(path)
    if not path.is_file():
        fail(ConversionError, f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
            return dict(load_file(str(path)))
        except Exception as e:  # noqa: BLE001
            fail(ConversionError, f"cannot read {path} as safetensors (truncated?): {type(e).__name__}: {e}")
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except Exception as e:  # noqa: BLE001
            fail(ConversionError, f"cannot read {path} as .npz (truncated?): {type(e).__name__}: {e}")
    obj = _torch_load(path)
    if wrapper is not None:
        if not isinstance(obj, Mapping) or wrapper not in obj:
            fail(ConversionError, f"{path} has no '{wrapper}' entry")
        obj = obj[wrapper]
    else:
        while isinstance(obj, Mapping) and not _is_flat(obj):
            found = next((k for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if found is None:
                fail(ConversionError, f"{path} holds no state dict (top-level keys: {sorted(obj)[:10]})")
            obj = obj[found]
    if not isinstance(obj, Mapping):
        fail(ConversionError, f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k: _to_numpy(v) for k, v in obj.items()}


def _is_flat(obj: Mapping[str, Any]) -> bool:
    return bool(obj) and all(hasattr(v, "shape") for v in obj.values())


def write_safetensors(path: str | Path, state_dict: Mapping[str, np.ndarray],
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Write float32 tensors as .safetensors (loadable by timm/torch without pickle)."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state_dict.items()}
    save_file(tensors, str(path), metadata=dict(metadata or {}))
    return path
