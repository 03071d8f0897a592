"""Fine-tuning checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint directory holds ``state.npz`` (trained weights, masks, optimizer state, by name) and
``meta.json`` (the step reached, the loss/quality history, and a fingerprint of the run: the
training graph's text, the step count and the options), written atomically (temporary file, then
rename), so an interrupt during a save leaves the previous checkpoint intact. The data order and
every mask update depend only on the step number, so a resumed run ends with the same weights as
an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

STATE = "state.npz"
META = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint belongs to another run (different graph, steps or options), or is damaged."""


def fingerprint(graph_text: str, options: Mapping[str, Any]) -> str:
    h = hashlib.sha256(graph_text.encode())
    h.update(json.dumps(options, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def save_checkpoint(path: os.PathLike, state: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{STATE}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in state.items()})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, d / STATE)  # the state first: a meta.json always describes a complete state
    tmp = d / f".{META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(dict(meta), indent=1, default=float))
    os.replace(tmp, d / META)


def load_checkpoint(path: os.PathLike, expect: str) -> Optional[tuple[dict[str, np.ndarray], dict]]:
    """(state, meta) of the checkpoint at ``path``, or None when there is none yet.

    Raises :class:`CheckpointError` when it was written by a run with another fingerprint.
    """
    d = Path(path)
    if not (d / META).is_file() or not (d / STATE).is_file():
        return None
    try:
        meta = json.loads((d / META).read_text())
        with np.load(d / STATE) as z:
            state = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{d}: damaged checkpoint ({e}); delete it to start over") from None
    if meta.get("fingerprint") != expect:
        raise CheckpointError(
            f"{d}: the checkpoint belongs to another run (other graph, steps or options); "
            "use another --checkpoint directory or delete this one"
        )
    return state, meta
