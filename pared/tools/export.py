"""Export an artifact for other stacks: a dense Hugging Face checkpoint, or the compressed-tensors layout.

- ``hf``: ``config.json`` + tokenizer + ``model.safetensors`` with every weight in float32, sparse
  weights as the zeros they hold and quantized layers dequantized (``(q - zero) * scale``). Loads
  with ``transformers.AutoModel.from_pretrained``.
- ``int-quantized`` / ``pack-quantized``: compressed-tensors checkpoints (the layout vLLM and
  llm-compressor read). Each quantized linear ``m`` stores ``m.weight`` as int8 codes
  (``int-quantized``) or ``m.weight_packed`` as int32 words holding 32/b codes each, densely
  bit-packed (``pack-quantized``), with ``m.weight_scale`` [N, G], ``m.weight_zero_point``
  (asymmetric; int8, packed along dim 0 when packing) and ``m.weight_shape``. compressed-tensors
  keeps codes in the signed range, so pared's unsigned asymmetric codes and zero points are shifted
  by 2^(b-1): (q - z) and hence the dequantized weight are unchanged. ``config.json`` gets the
  ``quantization_config`` (one config group per distinct weight scheme). Unquantized weights are
  written dense, as in the ``hf`` export.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import safetensors_io as st
from .artifact import Artifact, ArtifactError, make_partial_dir

FORMATS = ("hf", "int-quantized", "pack-quantized")


class ExportError(ValueError):
    """The artifact cannot be exported in the requested format (the message says why)."""


def qlinears(graph) -> dict[str, dict]:
    """Quantized linear layers: base weight name -> {q, scale, zero, act_scale param names, attrs}."""
    from ..ir import Param
    from ..ir.ops.qops import split_inputs

    out = {}
    for e in graph.walk():
        if e.op != "qlinear":
            continue
        _, q, scale, zero, act_scale = split_inputs(e.inputs, e.attrs["act"])
        if not isinstance(q, Param):
            continue
        base = q.name[:-2] if q.name.endswith(".q") else q.name
        out[base] = {"q": q.name, "scale": scale.name, "zero": getattr(zero, "name", None),
                     "act_scale": getattr(act_scale, "name", None), "group_size": e.attrs["group_size"],
                     "act": e.attrs["act"], "encoding": q.type.encoding, "dtype": q.type.dtype.name}
    return out


def dense_weights(graph) -> dict[str, np.ndarray]:
    """Every weight as the float value it represents: quantized layers dequantized under their
    original name (``x.weight``, not ``x.weight.q``), companions (scales, zero points) dropped."""
    from ..ir.ops.qops import dequantize_weight

    ql = qlinears(graph)
    companions = {v[k] for v in ql.values() for k in ("q", "scale", "zero", "act_scale") if v[k]}
    out = {}
    for base, info in ql.items():
        w = graph.weights
        zero = w[info["zero"]] if info["zero"] else None
        out[base] = np.asarray(
            dequantize_weight(
                np.asarray(w[info["q"]]),
                np.asarray(w[info["scale"]]),
                None if zero is None else np.asarray(zero),
                info["group_size"],
            ),
            np.float32,
        )
    for p in graph.params:
        if p.name in companions or p.name in out:
            continue
        out[p.name] = np.asarray(graph.weights[p.name])
    return out


MARKER = "pared_export.json"
"""Written into every export; ``--overwrite`` replaces only a directory that holds it."""


def _prepare(out: Any, overwrite: bool, source: Path) -> tuple[Path, Path]:
    """Check ``out`` before any work: never the source artifact, never inside or around it, and
    ``overwrite`` replaces only an earlier export (a directory holding :data:`MARKER`)."""
    out = Path(out).absolute()
    src = Path(source).resolve()
    real = out.resolve()
    if real == src or src in real.parents or real in src.parents:
        raise ExportError(
            f"--out {str(out)!r} is the source artifact {str(src)!r} or contains it or lies inside it; "
            "choose an output directory outside the artifact"
        )
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {str(out)!r} exists and is not a directory; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ExportError(
                f"output directory {str(out)!r} exists, is not empty and is not a pared export; "
                "choose another --out (pared never replaces other files)"
            )
        if not overwrite:
            raise ExportError(f"{out} already holds a pared export; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_partial_dir(f".{out.name}.partial-{os.getpid()}-", out.parent)
    return out, tmp


def _commit(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _copy_model_files(art: Artifact, tmp: Path) -> dict:
    src = art.path / "model"
    if not (src / "config.json").is_file():
        raise ExportError(
            f"{art.path} has no model/config.json (the source was not a Hugging Face model); "
            "an HF/compressed-tensors export needs one"
        )
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / f.name)
    return json.loads((src / "config.json").read_text())


def export(art: Artifact, out: Any, fmt: str = "hf", *, overwrite: bool = False) -> Path:
    """Write ``art`` to ``out`` in ``fmt`` (see the module docstring); atomic like artifacts."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not isinstance(art, Artifact):
        raise ArtifactError("export() takes a loaded Artifact (pared.tools.artifact.load_artifact)")
    out, tmp = _prepare(out, overwrite, art.path)
    try:
        config = _copy_model_files(art, tmp)
        if fmt == "hf":
            tensors = {k: v for k, v in dense_weights(art.graph).items()}
        else:
            tensors, qconfig = compressed_tensors_state(art.graph, fmt)
            config["quantization_config"] = qconfig
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        st.save(tmp / "model.safetensors", tensors, metadata={"format": "pt"})
        (tmp / MARKER).write_text(json.dumps({"format": fmt, "source": str(art.path), "recipe": art.recipe}, indent=2))
        _commit(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --- compressed-tensors ------------------------------------------------------------------------------


def pack_int32(codes: np.ndarray, bits: int) -> np.ndarray:
    """compressed-tensors' dense packing of signed ``bits``-bit codes [R, C] into int32 [R, ceil(C*b/32)]:
    code ``i`` (offset to unsigned by 2^(b-1)) occupies bits ``[i*b, (i+1)*b)`` of its row."""
    from ..ir.packing import pack_bits

    u = (codes.astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)
    rows, cols = u.shape
    packed = pack_bits(u, bits, signed=False)  # little-endian bit stream, rows padded to bytes
    words = -(-cols * bits // 32)
    pad = words * 4 - packed.shape[1]
    if pad:
        packed = np.concatenate([packed, np.zeros((rows, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(packed).view("<i4").reshape(rows, words)


def _module(base: str) -> str:
    return base[: -len(".weight")] if base.endswith(".weight") else base


def compressed_tensors_state(graph, fmt: str) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, quantization_config) of the compressed-tensors layout ``fmt``."""
    from ..ir.types import Quant, SparseQuant

    ql = qlinears(graph)
    if not ql:
        raise ExportError(
            "the artifact has no quantized layers (qlinear); compressed-tensors formats hold quantized "
            "weights: export with --format hf instead"
        )
    dense = dense_weights(graph)
    tensors: dict[str, np.ndarray] = {k: v for k, v in dense.items() if k not in ql}
    groups: dict[tuple, list[str]] = {}
    w = graph.weights
    for base, info in ql.items():
        enc = info["encoding"]
        if isinstance(enc, SparseQuant):
            enc = enc.quant
        if not isinstance(enc, Quant) or enc.scheme == "float":
            raise ExportError(f"layer {base!r}: {info['dtype']} weights have no {fmt} layout (integer codes only)")
        bits, sym = enc.bits, enc.scheme == "sym"
        q = np.asarray(w[info["q"]]).astype(np.int16)
        scale = np.asarray(w[info["scale"]], np.float32)
        k = q.shape[1]
        gs = info["group_size"]
        if gs is not None and k % gs:
            raise ExportError(
                f"layer {base!r}: group size {gs} does not divide its {k} inputs (a ragged last group); "
                "compressed-tensors needs equal groups"
            )
        if fmt == "int-quantized" and bits != 8:
            raise ExportError(
                f"layer {base!r} has {bits}-bit weights: int-quantized stores int8 codes; use pack-quantized"
            )
        shift = 0 if sym else 1 << (bits - 1)
        codes = (q - shift).astype(np.int8)
        m = _module(base)
        if fmt == "pack-quantized":
            tensors[f"{m}.weight_packed"] = pack_int32(codes, bits)
            tensors[f"{m}.weight_shape"] = np.asarray(q.shape, np.int64)
        else:
            tensors[f"{m}.weight"] = codes
        tensors[f"{m}.weight_scale"] = scale
        if not sym:
            zp = (np.asarray(w[info["zero"]], np.float32) - shift).astype(np.int8)
            tensors[f"{m}.weight_zero_point"] = pack_int32(zp.T, bits).T.copy() if fmt == "pack-quantized" else zp
        act: Optional[dict] = None
        if info["act"] == "dynamic":
            act = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}
        elif info["act"] == "static":
            act = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor", "dynamic": False}
            tensors[f"{m}.input_scale"] = np.asarray(w[info["act_scale"]], np.float32).reshape(1)
        key = (bits, sym, gs, json.dumps(act, sort_keys=True))
        groups.setdefault(key, []).append(m)
    config_groups = {}
    for i, ((bits, sym, gs, act), modules) in enumerate(groups.items()):
        config_groups[f"group_{i}"] = {
            "targets": modules,
            "weights": {
                "num_bits": bits,
                "type": "int",
                "symmetric": sym,
                "strategy": "group" if gs else "channel",
                "group_size": gs,
                "dynamic": False,
                "observer": "minmax",
            },
            "input_activations": json.loads(act),
            "output_activations": None,
            "format": fmt,
        }
    qconfig = {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "quantization_status": "compressed",
        "config_groups": config_groups,
        "ignore": [],
        "kv_cache_scheme": None,
    }
    return tensors, qconfig
