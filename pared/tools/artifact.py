"""Saved artifacts: a compressed graph on disk, loadable and runnable on any backend.

An artifact is a directory::

    manifest.json         format version, pared version, recipe, source model hash, the graph's
                          inputs/outputs, and a sha256 for every file and every stored tensor
    graph.ir              the compressed IR in its text form (``pared.ir.parse`` reads it back)
    weights.safetensors   the weights, compressed: sparse params as nonzero values + a bitmask,
                          quantized params as their integer codes (with their scale params)
    report.json, ...      the per-layer report and anything else the writer adds (plots, html)

Writing is atomic: everything goes into a hidden temporary sibling directory, the manifest last,
which is renamed onto the output path only when complete. An interrupted write (Ctrl-C, SIGKILL,
a full disk) leaves the output directory as it was: absent, or the previous complete artifact.
Loading checks every file and tensor against the manifest and names the first one that is
missing, truncated or corrupted, before anything runs.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from ..ir import Graph, dtypes, parse, print_graph, verify
from ..ir.dtypes import fp8_encode, fp8_table
from ..ir.errors import IRError
from ..ir.lazy import is_lazy
from ..ir.packing import pack_bits, unpack_bits
from ..ir.types import Quant, Sparse, SparseQuant
from ..version import __version__
from . import safetensors_io as st
from .manifest import check as check_manifest

FORMAT = "pared-artifact"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GRAPH_FILE = "graph.ir"
WEIGHTS_FILE = "weights.safetensors"
REPORT_FILE = "report.json"
SHARED = "shared"  # codec of a nested artifact's param stored in the enclosing artifact
DECODE_DIR = "decode"  # a causal LM's decode step over a static KV cache: a nested artifact
BACKENDS = ("reference", "torch", "xla")

PathLike = Union[str, os.PathLike]


class ArtifactError(Exception):
    """An artifact cannot be written or read; the message names the file (and tensor) at fault."""


# --- weight codecs ----------------------------------------------------------------------------------


def _is_sparse(param_type) -> bool:
    enc = param_type.encoding
    return isinstance(enc, Sparse) or isinstance(enc, SparseQuant)


def stored_raw_in_blocks(value: Any, param_type) -> bool:
    """Whether ``value`` is a lazy (out-of-core) weight that :func:`encode_weight` would store as
    is: it is then copied a row block at a time instead of being read whole."""
    return (is_lazy(value) and param_type.encoding is None and len(value.shape) >= 1
            and param_type.dtype.name not in ("f8e4m3", "f8e5m2"))


def encode_weight(name: str, value: np.ndarray, param_type) -> tuple[str, dict[str, np.ndarray]]:
    """(codec, stored tensors) for one weight. Sparse weights in their dense layout are stored as
    their nonzero values plus a packed bitmask; fp8 weights (float32 in memory) as one byte per
    value; narrow integer codes packed at their bits; everything else is stored as is. A pruned weight
    comes back as +0.0 even when it was -0.0 (``w * mask`` of a negative weight): equal under ``==``
    and in every product and sum, and it keeps 2:4 weights at half size plus 1 bit per element."""
    a = np.ascontiguousarray(value)
    quant = param_type.encoding.quant if isinstance(param_type.encoding, SparseQuant) else param_type.encoding
    if isinstance(quant, Quant) and quant.bits < 8 and a.dtype.kind in "iu" and a.ndim >= 1 and a.itemsize == 1:
        try:  # narrow integer codes, one per byte in memory: pack b bits per code
            packed = pack_bits(a, quant.bits, signed=a.dtype.kind == "i")
            return f"packed:{quant.bits}:{a.dtype.kind}", {f"{name}::packed": packed}
        except ValueError:  # a code outside the declared range: keep it as is
            pass
    if param_type.dtype.name in ("f8e4m3", "f8e5m2") and a.dtype == np.float32:
        codes = fp8_encode(param_type.dtype, a)  # fp8 values emulated in float32: one byte each
        if codes is not None:
            return f"fp8:{param_type.dtype.name}", {f"{name}::fp8": codes}
    if _is_sparse(param_type) and a.ndim >= 1 and a.size >= 64 and a.dtype.kind in "fiu":
        mask = (a != 0).reshape(-1)
        if mask.mean() <= 0.75:  # below that density the bitmask is smaller than dense
            return "bitmask", {f"{name}::values": a.reshape(-1)[mask], f"{name}::mask": np.packbits(mask)}
    return "raw", {name: a}


def decode_weight(
    name: str, codec: str, shape: Sequence[int], dtype: str, stored: Mapping[str, np.ndarray]
) -> np.ndarray:
    if codec == "raw":
        return np.array(stored[name])
    if codec.startswith("packed:"):
        _, bits, kind = codec.split(":")
        return (
            unpack_bits(stored[f"{name}::packed"], int(bits), kind == "i", int(shape[-1])).astype(dtype).reshape(shape)
        )
    if codec.startswith("fp8:"):
        dt = dtypes.get(codec.split(":", 1)[1])
        return fp8_table(dt)[stored[f"{name}::fp8"]].astype(dtype).reshape(shape)
    if codec == "bitmask":
        n = int(np.prod(shape, dtype=np.int64))
        mask = np.unpackbits(stored[f"{name}::mask"], count=n).astype(bool)
        values = stored[f"{name}::values"]
        if int(mask.sum()) != values.size:
            raise ArtifactError(
                f"{WEIGHTS_FILE}: tensor {name!r}: bitmask has {int(mask.sum())} bits set "
                f"but {values.size} values are stored (corrupted)"
            )
        out = np.zeros(n, dtype=values.dtype)
        out[mask] = values
        return out.reshape(shape)
    raise ArtifactError(f"{MANIFEST}: tensor {name!r} uses unknown codec {codec!r} (written by a newer pared?)")


# --- hashing -------------------------------------------------------------------------------------


def sha256_bytes(data: Any) -> str:
    """sha256 of bytes, or of an array's bytes in C order (hashed in place: no copy of the array)."""
    if isinstance(data, np.ndarray):
        a = np.ascontiguousarray(data)
        data = a.reshape(-1).view(np.uint8).data if a.size else b""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --- the artifact ---------------------------------------------------------------------------------


@dataclass
class Artifact:
    """A loaded artifact: the graph with its weights, the manifest and the report rows."""

    path: Path
    graph: Graph
    manifest: dict
    report_rows: list = field(default_factory=list)

    @property
    def recipe(self) -> str:
        return self.manifest.get("recipe", {}).get("pipeline", "")

    @property
    def source(self) -> dict:
        return self.manifest.get("source", {})

    @property
    def input_names(self) -> list[str]:
        return [i.get("name", f"input{k}") for k, i in enumerate(self.manifest.get("inputs", []))]

    @property
    def output_names(self) -> list[str]:
        return [o.get("name", f"output{k}") for k, o in enumerate(self.manifest.get("outputs", []))]

    def stored_bytes(self) -> dict[str, int]:
        """Bytes each weight occupies in ``weights.safetensors`` (values + metadata)."""
        return {k: int(v.get("stored_bytes", 0)) for k, v in self.manifest.get("tensors", {}).items()}

    def compile(self, backend: str = "reference", device: Any = None) -> Callable[..., list]:
        """A function ``f(*inputs) -> list of outputs`` running the graph on ``backend``."""
        return compile_graph(self.graph, backend, device)

    def run(self, *inputs: Any, backend: str = "reference") -> list:
        """Run the graph once on ``backend`` (inputs in the graph's order: see :attr:`input_names`)."""
        return self.compile(backend)(*inputs)

    @property
    def decode(self) -> Optional[Artifact]:
        """The decode-step artifact stored with a causal LM (``decode/``), or None."""
        d = self.path / DECODE_DIR
        return load_artifact(d, shared_weights=self.graph.weights) if (d / MANIFEST).is_file() else None

    def generate(self, prompt: Any, max_new_tokens: int = 32, *, temperature: float = 0.0, top_p: float = 1.0,
                 seed: Optional[int] = None, backend: str = "torch", stop_at_eos: bool = True) -> list[int]:
        """New token ids after ``prompt`` (a string, with the artifact's tokenizer, or token ids):
        greedy when ``temperature`` is 0, else sampled with ``top_p``; stops at EOS. Runs the
        decode graph (:mod:`pared.tools.decoding`) on ``backend``."""
        from .decoding import Sampling, generate_tokens, load_tokenizer, zero_cache

        dec = self.decode
        if dec is None:
            raise ArtifactError(f"{self.path}: no {DECODE_DIR}/ graph (only causal LMs compressed by this version of "
                                "pared store one); compress the model again to generate from it")
        tok = load_tokenizer(self.path) if isinstance(prompt, str) or stop_at_eos else None
        if isinstance(prompt, str) and tok is None:
            raise ArtifactError(f"{self.path}: no tokenizer stored; pass token ids instead of text")
        ids = list(tok(prompt).input_ids) if isinstance(prompt, str) else [int(t) for t in prompt]
        eos = _eos_ids(tok) if stop_at_eos and tok is not None else ()
        step = dec.compile(backend)
        return list(generate_tokens(step, ids, zero_cache(dec.graph), max_new_tokens=max_new_tokens,
                                    sampling=Sampling(temperature, top_p, seed), eos=eos))


def _eos_ids(tokenizer: Any) -> tuple[int, ...]:
    eos = getattr(tokenizer, "eos_token_id", None)
    return () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def compile_graph(graph: Graph, backend: str = "reference", device: Any = None) -> Callable[..., list]:
    """Lower ``graph`` for ``backend`` ("reference" numpy, "torch", "xla"); returns ``f(*inputs) -> list``."""
    if backend == "reference":
        from ..backends.reference import run_graph

        return lambda *ins: run_graph(graph, [np.asarray(x) for x in ins])
    if backend == "torch":
        import torch

        from ..backends.torch import lower

        gm = lower(graph, device=device)

        def run_torch(*ins):
            with torch.no_grad():
                ts = [x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x)) for x in ins]
                return list(gm(*ts))

        return run_torch
    if backend == "xla":
        import jax

        from ..backends.xla import graph_params, lower

        fn = jax.jit(lower(graph).__call__)
        params = graph_params(graph)
        return lambda *ins: list(fn(params, *[np.asarray(x) for x in ins]))
    raise ArtifactError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")


def _atom_types(atoms) -> list[str]:
    from ..ir import format_type

    return [format_type(a.type) for a in atoms]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale_partials(out: Path) -> None:
    """Remove temporary directories left by writers of ``out`` that were killed (their pid is gone)."""
    rx = re.compile(re.escape(f".{out.name}.partial-") + r"(\d+)-")
    for p in out.parent.glob(f".{out.name}.partial-*"):
        m = rx.match(p.name)
        if m and p.is_dir() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)


def _dense_size(param, value: np.ndarray, known: Optional[Mapping[str, int]]) -> int:
    """A weight's size before compression: as the caller knows it, else float32 for an encoded
    (quantized or sparse) param, else the stored array's own size."""
    if known and param.name in known:
        return int(known[param.name])
    if param.type.encoding is not None:
        return int(np.prod(value.shape, dtype=np.int64)) * 4
    return int(value.nbytes)


def make_partial_dir(prefix: str, parent: Path) -> Path:
    """A fresh temporary directory under ``parent`` with the mode a plain ``mkdir`` would get
    (``tempfile.mkdtemp`` makes it 0700 whatever the umask, and it becomes the output by rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def is_artifact(path: PathLike) -> bool:
    p = Path(path) / MANIFEST
    try:
        return json.loads(p.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_output_dir(out_dir: PathLike, overwrite: bool) -> Path:
    """Fail early (before any compression work) when ``out_dir`` cannot be written."""
    out = Path(out_dir).absolute()
    if out.exists():
        if not out.is_dir():
            raise ArtifactError(f"output {str(out)!r} exists and is not a directory")
        if any(out.iterdir()):
            if not is_artifact(out):
                raise ArtifactError(
                    f"output directory {str(out)!r} exists, is not empty and is not a pared artifact; "
                    "choose another --out (pared never replaces other files)"
                )
            if not overwrite:
                raise ArtifactError(
                    f"output directory {str(out)!r} already holds an artifact; pass --overwrite to replace it"
                )
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ArtifactError(
            f"cannot write the output {str(out)!r}: {str(parent)!r} is a file, not a directory; choose another --out"
        )
    try:  # the artifact is written next to ``out`` and renamed into place: try that now, not after the work
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = make_partial_dir(f".{out.name}.probe-{os.getpid()}-", out.parent)
        probe.rmdir()
    except OSError as e:
        raise ArtifactError(
            f"cannot write the output {str(out)!r}: {e.strerror or e} (in {str(parent or out.parent)!r}); "
            "choose another --out"
        ) from None
    return out


def check_free_space(out_dir: PathLike, needed_bytes: int) -> None:
    """Refuse before the work when the disk holding ``out_dir`` has less than ``needed_bytes`` free."""
    out = Path(out_dir).absolute()
    parent = next((p for p in [out, *out.parents] if p.exists()), out.parent)
    free = shutil.disk_usage(parent).free
    if free < needed_bytes:
        raise ArtifactError(
            f"not enough free disk space for {str(out)!r}: {free / 2**20:.1f} MiB free, the artifact "
            f"needs up to {needed_bytes / 2**20:.1f} MiB; free some space or choose another --out"
        )


def save_artifact(
    out_dir: PathLike,
    graph: Graph,
    *,
    recipe: str = "",
    recipe_source: Any = None,
    source: Optional[Mapping[str, Any]] = None,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
    report_rows: Optional[Sequence[Mapping[str, Any]]] = None,
    metrics: Optional[Mapping[str, Any]] = None,
    extra: Optional[Callable[[Path], None]] = None,
    overwrite: bool = False,
    dense_bytes: Optional[Mapping[str, int]] = None,
    shared: Sequence[str] = (),
) -> Path:
    """Write ``graph`` (with its weights) as an artifact directory, atomically.

    Args:
        out_dir: the artifact directory (created; its parent too).
        graph: the compressed graph; every param needs a weight value.
        recipe: the pipeline string that produced it; ``recipe_source`` what the user wrote.
        source: facts about the source model (name, class, sha256 of its weights, ...).
        input_names / output_names: names of the graph's inputs/outputs (e.g. ``input_ids``).
        report_rows: the per-layer report (``Report.to_dicts()``), saved as ``report.json``.
        metrics: measured numbers (quality, size, speed) recorded in the manifest.
        extra: ``extra(tmpdir)`` writes more files (plots, html, a tokenizer) before the manifest;
            they are checksummed with the rest.
        overwrite: replace an existing artifact at ``out_dir``.
        shared: params whose values live in the enclosing artifact (a nested ``decode/`` graph
            sharing the compressed weights): recorded with a digest of their value, not stored.
        dense_bytes: each weight's size in the original model, by name; a compressed weight missing
            from it counts 4 bytes (float32) per element.

    Returns the artifact path.
    """
    out = check_output_dir(out_dir, overwrite)
    missing = [p.name for p in graph.params if p.name not in graph.weights]
    if missing:
        raise ArtifactError(f"cannot save: no weight value for params {missing[:5]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_partials(out)
    prefix = f".{out.name}.partial-{os.getpid()}-"
    try:
        tmp = make_partial_dir(prefix, out.parent)
        (tmp / GRAPH_FILE).write_text(print_graph(graph))
        tensors_meta = {}
        # one weight at a time (an out-of-core graph's weights are lazy handles on disk): each is
        # read, encoded, appended to the weights file and dropped before the next
        writer = st.StreamWriter(tmp / WEIGHTS_FILE, metadata={"format": FORMAT, "pared_version": __version__})
        for p in graph.params:
            value = graph.weights[p.name]
            if p.name not in shared and stored_raw_in_blocks(value, p.type):
                digest = hashlib.sha256()
                for block in writer.add_blocks(p.name, value.dtype, value.shape, value.blocks()):
                    digest.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8).data)
                tensors_meta[p.name] = {
                    "dtype": value.dtype.name, "shape": list(value.shape), "codec": "raw",
                    "stored_bytes": int(value.nbytes), "dense_bytes": _dense_size(p, value, dense_bytes),
                    "sha256": {p.name: digest.hexdigest()},
                }
                continue
            value = np.asarray(value)
            if p.name in shared:
                tensors_meta[p.name] = {
                    "dtype": value.dtype.name, "shape": list(value.shape), "codec": SHARED, "stored_bytes": 0,
                    "dense_bytes": _dense_size(p, value, dense_bytes),
                    "sha256": {"value": sha256_bytes(value)},
                }
                continue
            codec, parts = encode_weight(p.name, value, p.type)
            for k, a in parts.items():
                writer.add(k, a)
            tensors_meta[p.name] = {
                "dtype": value.dtype.name,
                "shape": list(value.shape),
                "codec": codec,
                "stored_bytes": int(sum(a.nbytes for a in parts.values())),
                "dense_bytes": _dense_size(p, value, dense_bytes),
                "sha256": {k: sha256_bytes(a) for k, a in parts.items()},
            }
            del value, parts
        writer.close()
        (tmp / REPORT_FILE).write_text(json.dumps(list(report_rows or []), indent=1, default=_json_default))
        if extra is not None:
            extra(tmp)
        files = {}
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                files[f.relative_to(tmp).as_posix()] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        in_names = list(input_names or [])[: len(graph.inputs)]
        in_names += [f"input{k}" for k in range(len(in_names), len(graph.inputs))]
        out_names = list(output_names or [])[: len(graph.outputs)]
        out_names += [f"output{k}" for k in range(len(out_names), len(graph.outputs))]
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "pared_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "recipe": {
                "pipeline": recipe,
                "source": recipe_source if isinstance(recipe_source, (str, type(None))) else str(recipe_source),
            },
            "source": dict(source or {}),
            "inputs": [{"name": n, "type": t} for n, t in zip(in_names, _atom_types(graph.inputs))],
            "outputs": [{"name": n, "type": t} for n, t in zip(out_names, _atom_types(graph.outputs))],
            "metrics": dict(metrics or {}),
            "files": files,
            "tensors": tensors_meta,
        }
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1, default=_json_default))
        _fsync_dir(tmp)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)  # an empty dir or a previous artifact (checked above)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        _fsync_dir(out.parent)
    except BaseException:
        # by prefix, not by ``tmp``: an interrupt can land inside mkdtemp, after the directory exists
        for p in out.parent.glob(prefix + "*"):
            shutil.rmtree(p, ignore_errors=True)
        raise
    return out


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- loading ---------------------------------------------------------------------------------------


def read_manifest(path: PathLike) -> dict:
    d = Path(path)
    if not d.exists():
        raise ArtifactError(f"artifact {str(d)!r} does not exist")
    if not d.is_dir():
        raise ArtifactError(f"artifact {str(d)!r} is not a directory")
    m = d / MANIFEST
    if not m.is_file():
        partial = "" if not list(d.parent.glob(f".{d.name}.partial-*")) else " (a partial write of it lies next to it)"
        raise ArtifactError(
            f"{str(d)!r} has no {MANIFEST}: it is not a pared artifact, or its manifest was deleted "
            f"(pared writes the manifest last and renames the directory into place){partial}"
        )
    try:
        manifest = json.loads(m.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{m}: corrupted ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(f"{m}: not a pared artifact manifest (format is {got!r})")
    version = manifest.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ArtifactError(
            f"{m}: format version {version} is newer than this pared "
            f"({__version__}, reads version {FORMAT_VERSION}); upgrade pared"
        )
    problem = check_manifest(manifest)
    if problem is None:
        missing = [f for f in (GRAPH_FILE, WEIGHTS_FILE) if f not in manifest["files"]]
        problem = f"manifest.files: {missing[0]!r} is not listed" if missing else None
    if problem:
        raise ArtifactError(
            f"{m}: invalid: {problem}; the artifact was edited or damaged (write it again with pared compress)"
        )
    return manifest


def verify_artifact(path: PathLike, manifest: Optional[dict] = None) -> dict:
    """Check every file's size and checksum against the manifest; returns the manifest."""
    d = Path(path)
    manifest = manifest or read_manifest(d)
    for rel, info in manifest["files"].items():
        f = d / rel
        if not f.is_file():
            raise ArtifactError(f"{f}: missing (listed in {MANIFEST})")
        size = f.stat().st_size
        if size != info["bytes"]:
            how = "truncated" if size < info["bytes"] else "corrupted (grew)"
            raise ArtifactError(f"{f}: {how}: {size} bytes, the manifest says {info['bytes']}")
        if rel == WEIGHTS_FILE:
            continue  # checked per tensor below, so the message can name the tensor
        if sha256_file(f) != info["sha256"]:
            raise ArtifactError(f"{f}: corrupted: its sha256 does not match the manifest")
    return manifest


def load_artifact(path: PathLike, *, check: bool = True, shared_weights: Optional[Mapping[str, Any]] = None
                  ) -> Artifact:
    """Load an artifact directory; with ``check`` every file and tensor is verified first.

    ``shared_weights``: the enclosing artifact's weights, for a nested artifact whose params are
    stored there (``Artifact.decode`` passes them). Raises :class:`ArtifactError` naming the
    missing, truncated or corrupted file (and tensor).
    """
    d = Path(path)
    manifest = verify_artifact(d) if check else read_manifest(d)
    try:
        graph = parse((d / GRAPH_FILE).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{d / GRAPH_FILE}: missing") from None
    except (IRError, ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{d / GRAPH_FILE}: cannot be parsed: {e}") from None
    wpath = d / WEIGHTS_FILE
    if not wpath.is_file():
        raise ArtifactError(f"{wpath}: missing")
    try:
        stored, _ = st.load(wpath)
    except st.SafetensorsError as e:
        raise ArtifactError(str(e)) from None
    weights = {}
    for p in graph.params:
        meta = manifest["tensors"].get(p.name)
        if meta is None:
            raise ArtifactError(f"{MANIFEST}: no entry for param @{p.name} declared in {GRAPH_FILE}")
        if meta["codec"] == SHARED:
            if shared_weights is None or p.name not in shared_weights:
                raise ArtifactError(f"{d}: param @{p.name} is stored in the enclosing artifact; load that one "
                                    f"(load_artifact(parent).decode)")
            value = np.asarray(shared_weights[p.name])
            if check and sha256_bytes(value) != meta["sha256"].get("value"):
                raise ArtifactError(f"{d}: shared param @{p.name} does not match the enclosing artifact's weight")
            weights[p.name] = value
            continue
        for key, digest in meta["sha256"].items():
            if key not in stored:
                raise ArtifactError(f"{wpath}: tensor {key!r} (of param @{p.name}) is missing")
            if check and sha256_bytes(np.asarray(stored[key])) != digest:
                raise ArtifactError(f"{wpath}: corrupted: tensor {key!r} (param @{p.name}) does not match its sha256")
        value = decode_weight(p.name, meta["codec"], meta["shape"], meta["dtype"], stored)
        if list(value.shape) != list(meta["shape"]) or value.dtype.name != meta["dtype"]:
            raise ArtifactError(
                f"{wpath}: tensor @{p.name} is {value.dtype.name}{list(value.shape)}, "
                f"the manifest says {meta['dtype']}{meta['shape']}"
            )
        weights[p.name] = value
    graph = graph.replace(weights=weights)
    try:
        verify(graph)
    except IRError as e:
        raise ArtifactError(f"{d / GRAPH_FILE}: does not verify: {e}") from None
    rows = []
    rpath = d / REPORT_FILE
    if rpath.is_file():
        try:
            rows = json.loads(rpath.read_text())
        except ValueError as e:
            raise ArtifactError(f"{rpath}: corrupted ({e})") from None
    return Artifact(d, graph, manifest, rows)
