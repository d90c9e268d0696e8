"""Reading PyTorch checkpoints (.pth/.pt/.bin via torch, .safetensors, .npz) into flat numpy dicts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from learngene_jax.errors import ConversionError, fail


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in the file at `path` (`what` names the file's role in the error); a one-line
    ConversionError when it is unreadable, not JSON, or JSON but not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(ConversionError, f"{path} is not a readable JSON file ({type(e).__name__}: {e})")
    if not isinstance(data, dict):
        fail(ConversionError, f"{path} holds a JSON {type(data).__name__}, not the object (key: value) of {what}")
    return data

# Keys under which training scripts (DeiT, timm, the learngene repos) nest the weights.
WRAPPER_KEYS = ("model", "state_dict", "model_state", "module")
# Prefixes that model wrappers put before every key: DistributedDataParallel / DataParallel ('module.'),
# torch.compile ('_orig_mod.'), in any order and nesting.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(sd: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(state dict, prefixes removed): while every key starts with one of WRAPPER_PREFIXES, drop it."""
    out, stripped = dict(sd), []
    while out:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in out)), None)
        if prefix is None:
            break
        out = {k[len(prefix):]: v for k, v in out.items()}
        stripped.append(prefix)
    return out, stripped


def _unwrapped(path: Path, sd: dict[str, Any]) -> dict[str, Any]:
    sd, stripped = strip_wrapper_prefixes(sd)
    if stripped:
        print(f"note: {path.name}: removed the prefix {''.join(stripped)!r} from every key (saved from a "
              f"DistributedDataParallel or torch.compile wrapper)", file=sys.stderr, flush=True)
    return sd


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a .safetensors file ({} for other formats or none)."""
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001
        fail(ConversionError, f"cannot read {path} as safetensors (truncated?): {type(e).__name__}: {e}")


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
    """A flat {key: array} from a checkpoint file (.pth/.pt/.bin, .safetensors, .npz), unwrapping
    {'model': ...}-style containers and stripping the 'module.' / '_orig_mod.' key prefixes of DDP and
    torch.compile (said on stderr). Raises ConversionError for a missing, unreadable or non-state-dict file."""
    path = Path(path)
    if not path.is_file():
        fail(ConversionError, f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        try:
            import ml_dtypes  # noqa: F401  (numpy learns bfloat16 from it: files saved in bf16 read)
            from safetensors.numpy import load_file
            loaded = dict(load_file(str(path)))
        except Exception as e:  # noqa: BLE001
            fail(ConversionError, f"cannot read {path} as safetensors (truncated?): {type(e).__name__}: {e}")
        return _unwrapped(path, loaded)
    if path.suffix == ".npz":
        try:
            with np.load(path) as data:
                loaded = {k: data[k] for k in data.files}
        except Exception as e:  # noqa: BLE001
            fail(ConversionError, f"cannot read {path} as .npz (truncated?): {type(e).__name__}: {e}")
        return _unwrapped(path, loaded)
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
    return _unwrapped(path, {k: _to_numpy(v) for k, v in obj.items()})


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
