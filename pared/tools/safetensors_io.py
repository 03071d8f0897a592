"""Read and write the safetensors format with numpy alone (no dependency on the ``safetensors`` package).

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``,
then the raw little-endian tensor bytes, offsets relative to the end of the header. Files written
here load with ``safetensors.numpy.load_file`` and ``safetensors.torch.load_file``, and vice versa.

The reader checks everything a damaged file can get wrong (header length, JSON, offsets outside the
file, a file shorter than its header promises) and raises :class:`SafetensorsError` naming the file
and, where it can, the tensor.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np

_TO_ST = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
    "int64": "I64", "int32": "I32", "int16": "I16", "int8": "I8",
    "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8", "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}
_FROM_ST = {v: k for k, v in _TO_ST.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A safetensors file is truncated, corrupted or not a safetensors file at all."""


def _np_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes  # bfloat16 / float8 (ships with jax)

        return np.dtype(getattr(ml_dtypes, name))


def save(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None
) -> None:
    """Write ``tensors`` (name -> array) to ``path``, fsync'd; arrays are stored C-contiguous little-endian."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    arrays = []
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        st = _TO_ST.get(a.dtype.name)
        if st is None:
            raise SafetensorsError(f"tensor {name!r}: dtype {a.dtype} has no safetensors equivalent")
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        arrays.append(a)
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data to 8 bytes, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in arrays:
            f.write(a.tobytes())
        f.flush()
        os.fsync(f.fileno())


class StreamWriter:
    """Write a safetensors file one tensor at a time, holding none of them: ``add`` appends each
    tensor's bytes to ``<path>.data``; ``close`` writes the header, then copies the data after it.

    Use it as a context manager (the file is complete on a clean exit, and neither file is left
    behind on an error). Out-of-core artifacts are written this way (docs/out_of_core.md).
    """

    def __init__(self, path: str | os.PathLike, metadata: Optional[Mapping[str, str]] = None):
        self.path = os.fspath(path)
        self.header: dict[str, Any] = {}
        if metadata:
            self.header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        self._data = open(self.path + ".data", "w+b")
        self._offset = 0

    def add(self, name: str, array: Any) -> None:
        if name in self.header:
            raise SafetensorsError(f"{self.path}: tensor {name!r} added twice")
        a = np.ascontiguousarray(array)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        st = _TO_ST.get(a.dtype.name)
        if st is None:
            raise SafetensorsError(f"tensor {name!r}: dtype {a.dtype} has no safetensors equivalent")
        end = self._offset + a.nbytes
        self.header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [self._offset, end]}
        self._data.write(a.reshape(-1).view(np.uint8).data if a.size else b"")
        self._offset += a.nbytes

    def add_blocks(self, name: str, dtype: Any, shape: Sequence[int], blocks: Iterable[Any]) -> Iterator[np.ndarray]:
        """Append one tensor of ``dtype`` and ``shape`` given as consecutive C-order blocks (a weight
        read a row block at a time); yields each block once written. The blocks must fill the shape."""
        if name in self.header:
            raise SafetensorsError(f"{self.path}: tensor {name!r} added twice")
        dt = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).byteorder == ">" else np.dtype(dtype)
        st = _TO_ST.get(dt.name)
        if st is None:
            raise SafetensorsError(f"tensor {name!r}: dtype {dt} has no safetensors equivalent")
        nbytes = int(np.prod(tuple(shape), dtype=np.int64)) * dt.itemsize
        written = 0
        for block in blocks:
            a = np.ascontiguousarray(block, dtype=dt)
            self._data.write(a.reshape(-1).view(np.uint8).data if a.size else b"")
            written += a.nbytes
            yield a
        if written != nbytes:
            raise SafetensorsError(
                f"tensor {name!r}: blocks gave {written} bytes, its shape {list(shape)} needs {nbytes}")
        end = self._offset + nbytes
        self.header[name] = {"dtype": st, "shape": [int(d) for d in shape], "data_offsets": [self._offset, end]}
        self._offset += nbytes

    def close(self) -> None:
        import shutil

        raw = json.dumps(self.header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._data.flush()
        self._data.seek(0)
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            shutil.copyfileobj(self._data, f, 1 << 24)
            f.flush()
            os.fsync(f.fileno())
        self._discard()

    def _discard(self) -> None:
        self._data.close()
        if os.path.exists(self.path + ".data"):
            os.remove(self.path + ".data")

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self._discard()
            if os.path.exists(self.path):
                os.remove(self.path)


def read_header(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """(header dict, byte offset where the data starts); checks the header against the file size."""
    name = os.fspath(path)
    size = os.path.getsize(name)
    with open(name, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{name}: truncated ({size} bytes; not even the 8-byte header length is there)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER:
            raise SafetensorsError(f"{name}: corrupted (header length {n} is implausible)")
        if 8 + n > size:
            raise SafetensorsError(f"{name}: truncated (the header needs {8 + n} bytes, the file has {size})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{name}: corrupted header ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{name}: corrupted header (not a JSON object)")
    data_start = 8 + n
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            b, e = info["data_offsets"]
            dtype, shape = info["dtype"], info["shape"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{name}: corrupted header entry for tensor {key!r}") from None
        if dtype not in _FROM_ST:
            raise SafetensorsError(f"{name}: tensor {key!r} has unknown dtype {dtype!r}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * _np_dtype(_FROM_ST[dtype]).itemsize
        if e - b != nbytes or b < 0:
            raise SafetensorsError(
                f"{name}: corrupted header: tensor {key!r} spans {e - b} bytes, its shape needs {nbytes}"
            )
        if data_start + e > size:
            raise SafetensorsError(
                f"{name}: truncated: tensor {key!r} ends at byte {data_start + e}, the file has only {size} bytes"
            )
        end = max(end, e)
    if data_start + end < size:
        raise SafetensorsError(f"{name}: corrupted: {size - data_start - end} unexpected bytes after the last tensor")
    return header, data_start


def load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> array, metadata). Arrays are read-only views of one buffer read from the file."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        buf = f.read()
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = _np_dtype(_FROM_ST[info["dtype"]])
        out[key] = np.frombuffer(buf, dtype=dt, count=(e - b) // dt.itemsize, offset=start + b).reshape(info["shape"])
    return out, dict(header.get("__metadata__", {}))


def tensor_bytes(path: str | os.PathLike) -> dict[str, bytes]:
    """name -> the raw stored bytes of each tensor (what the artifact's per-tensor checksums cover)."""
    header, start = read_header(path)
    with open(path, "rb") as f:
        buf = f.read()
    return {
        k: buf[start + v["data_offsets"][0] : start + v["data_offsets"][1]]
        for k, v in header.items()
        if k != "__metadata__"
    }
