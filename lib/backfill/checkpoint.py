"""Checkpoints: written atomically, read as tensors and plain data only (weights_only), with the RNG states
that let an interrupted phase resume and draw the same numbers."""
from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

from .model import CVAE, ModelConfig
from .rundir import atomic_write_bytes, run_first


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be trusted (it holds more than tensors and plain data)."""


def _plain(x):
    """Numpy scalars and arrays inside history / summary / config as plain Python (lists for arrays):
    the only kinds besides tensors that torch.load(weights_only=True) accepts."""
    if isinstance(x, dict):
        return {_plain(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, (np.generic, np.ndarray)):
        return x.tolist()
    return x


def save(path: Path, obj: dict) -> None:
    """Write a checkpoint atomically; everything but the state dicts is made plain data first."""
    obj = {k: v if k in ("model", "optimizer") else _plain(v) for k, v in obj.items()}
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load(path, device="cpu") -> dict:
    """Read a checkpoint as tensors and plain data only (weights_only): a foreign or tampered file
    cannot run code on load, it is refused."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed|\.\s|$)", str(e), re.M)
        raise CheckpointError(f"refused checkpoint {path}: it holds more than tensors and plain data "
                            f"({m.group(1) if m else type(e).__name__}); delete it to retrain") from None


def load_model(path, device="cpu") -> CVAE:
    m = re.fullmatch(r"phase(\d)\.pt", Path(path).name)
    if m and not Path(path).exists():        # a notebook opened by hand before its phase was trained
        n = int(m.group(1))
        raise FileNotFoundError(f"{path} is missing: {run_first(Path(path).parent.parent, f'{n + 1:02d} (phase {n})')}")
    ck = load(path, device)
    try:
        model = CVAE(ModelConfig(**ck["model_config"])).to(device)
        model.load_state_dict(ck["model"])
    except (TypeError, ValueError, RuntimeError) as e:       # another version's config or state dict
        raise CheckpointError(f"checkpoint {path} does not fit this code's model ({type(e).__name__}); train its "
                              f"phase again") from None
    return model


def rng_state() -> dict:
    """torch, numpy (legacy), python and CUDA generator states as tensors and plain data, so that the
    checkpoint loads with weights_only and a resumed run draws the same numbers."""
    kind, key, pos, has_gauss, cached = np.random.get_state()     # key: (624,) uint32
    version, internal, gauss_next = random.getstate()             # internal: 625 ints
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": str(kind), "key": torch.from_numpy(key.copy()), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": int(version), "state": list(internal), "gauss_next": gauss_next},
            "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else None}


def set_rng_state(st: dict) -> None:
    """Restore the states written by rng_state."""
    torch.set_rng_state(st["torch"].cpu())
    n = st["numpy"]
    np.random.set_state((n["kind"], n["key"].cpu().numpy(), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    py = st["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if st.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in st["cuda"]])


def load_if_safe(path: Path, device="cpu", log=print) -> dict | None:
    """A checkpoint of this phase to reuse, or None: missing, or written by older code that stored more than
    tensors and plain data (it cannot carry today's key either, so the phase trains again, saying why in one line:
    a retraining nobody asked for should not go unexplained)."""
    if not path.exists():
        return None
    try:
        return load(path, device)
    except CheckpointError as e:
        log(f"{str(e).removesuffix('; delete it to retrain')}; not reused, the phase trains again")
        return None
