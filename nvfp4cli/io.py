"""safetensors files: reading (each file opened once, tensors read by offset) and writing
(layout fixed up front, tensors streamed in any order), and the checkpoint a path names.

    checkpoint = open_checkpoint("model_dir")       # a file, an index or a model directory
    x = checkpoint.read("model.layers.0.mlp.up_proj.weight")

The header is parsed here rather than through safetensors' mmap: a file stays open for the whole
run (no per-tensor re-open and re-parse, so time is linear in the tensor count), and a tensor is
read with one positional read into a fresh buffer, so resident memory stays near the tensor being
converted instead of growing with the pages of a mapped shard. Dtypes this tool does not know
(F8_E8M0, F4, C64, ...) are kept by name and copied as raw bytes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

SAFETENSORS_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".safetensors.index.json"
CONFIG_NAME = "config.json"
HEADER_LIMIT = 100 * 2**20  # safetensors' own bound on the JSON header
READ_CHUNK = 32 * 2**20  # a large tensor is read in pieces of this size by a thread pool

# In the order the safetensors library lays tensors out (by dtype, then name): writing in this
# order gives the library's exact bytes, and wide dtypes come first so every tensor is aligned.
TORCH_DTYPES = {
    "U64": torch.uint64,
    "I64": torch.int64,
    "F64": torch.float64,
    "F32": torch.float32,
    "U32": torch.uint32,
    "I32": torch.int32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "U16": torch.uint16,
    "I16": torch.int16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
# Every dtype the safetensors format defines, with its width in bits: those torch lacks (or this
# tool does not decode) are copied as raw bytes; a name not here makes the file unreadable.
DTYPE_BITS = {name: dtype.itemsize * 8 for name, dtype in TORCH_DTYPES.items()} | {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8, "C64": 64}


@dataclass(frozen=True)
class TensorSpec:
    """A stored tensor's name, safetensors dtype name and shape; nbytes as stored."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @classmethod
    def of(cls, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> TensorSpec:
        return cls(name, DTYPE_NAMES[dtype], tuple(shape), math.prod(shape) * dtype.itemsize)

    @property
    def torch_dtype(self) -> torch.dtype | None:
        """The torch dtype, or None for a dtype this tool only copies (F8_E8M0, F4, ...)."""
        return TORCH_DTYPES.get(self.dtype)


class SafetensorsFile:
    """One safetensors file, opened once: its header is parsed on open, tensors are read on demand.

    Picklable (a worker process re-opens the file by path)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = None
        self.specs: dict[str, TensorSpec] = {}
        self._offsets: dict[str, int] = {}
        self.metadata: dict[str, str] = {}
        self._parse_header()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}

    def _file(self):
        if self._handle is None:
            try:
                self._handle = open(self.path, "rb")  # noqa: SIM115 - kept open for the run
            except OSError as exc:
                raise DataError(f"{self.path}: {exc.strerror}") from None
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _bad(self, what: str) -> DataError:
        return DataError(f"{self.path}: not a readable safetensors file ({what})")

    def _parse_header(self) -> None:
        handle = self._file()
        size = os.fstat(handle.fileno()).st_size
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise self._bad("shorter than its 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > HEADER_LIMIT:
            raise self._bad(f"header length {length} exceeds the {HEADER_LIMIT >> 20} MiB limit")
        if length > size - 8:
            raise self._bad(f"header length {length} exceeds the file")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._bad(f"header is not JSON: {exc}") from None
        if not isinstance(header, dict):
            raise self._bad("header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise self._bad("__metadata__ is not a map of strings")
        self.metadata = metadata
        data_start, data_size = 8 + length, size - 8 - length
        position = 0  # as the safetensors library checks: tensors tile the data, no gap, no overlap
        for name, entry in sorted(header.items(), key=lambda item: _data_start(item[1])):
            spec = self.specs[name] = self._spec(name, entry, data_size)
            begin = entry["data_offsets"][0]
            if begin != position:
                raise self._bad(f"tensor {name!r} starts at byte {begin} of the data, not {position}: tensors overlap or leave a gap")
            position = begin + spec.nbytes
            self._offsets[name] = data_start + begin
        if position != data_size:
            raise self._bad(f"{data_size - position} bytes after the last tensor belong to no tensor")

    def _spec(self, name: str, entry: object, data_size: int) -> TensorSpec:
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise self._bad(f"tensor {name!r} has a malformed entry (dtype, shape and data_offsets [begin, end] expected)") from None
        if not all(type(n) is int and n >= 0 for n in shape):
            raise self._bad(f"tensor {name!r} has an invalid shape {list(shape)}")
        if not all(type(n) is int for n in (begin, end)) or not 0 <= begin <= end <= data_size:
            raise self._bad(f"tensor {name!r} has data_offsets {[begin, end]} outside the {data_size} bytes of data")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise self._bad(f"tensor {name!r} has an unknown dtype {dtype!r}")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or bits // 8 != end - begin:
            raise self._bad(f"tensor {name!r} of shape {list(shape)} {dtype} does not fit its {end - begin} bytes")
        return TensorSpec(name, dtype, shape, end - begin)

    def read_bytes(self, name: str, start: int = 0, length: int | None = None, *, out: torch.Tensor | None = None, pool: Executor | None = None) -> torch.Tensor:
        """The stored bytes of a tensor (or `length` of them from `start`) as flat uint8, any dtype.

        out: the flat uint8 buffer to read into (page-locked memory, say); pool: threads
        that read a large tensor in READ_CHUNK pieces at once (one thread tops out below the
        page cache's bandwidth)."""
        spec = self.specs[name]
        length = spec.nbytes - start if length is None else length
        buffer = torch.empty(length, dtype=torch.uint8) if out is None else out
        view = memoryview(buffer.numpy())
        offset = self._offsets[name] + start
        if pool is None or length <= READ_CHUNK:
            self._read_into(name, view, offset)
        else:
            pieces = [(view[at : at + READ_CHUNK], offset + at) for at in range(0, length, READ_CHUNK)]
            for done in [pool.submit(self._read_into, name, piece, at) for piece, at in pieces]:
                done.result()
        return buffer

    def _read_into(self, name: str, view: memoryview, offset: int) -> None:
        handle, done = self._file(), 0
        while done < len(view):
            count = os.preadv(handle.fileno(), [view[done:]], offset + done)
            if count == 0:
                raise DataError(f"{self.path}: tensor {name!r} is cut short (file truncated?)")
            done += count

    def read(self, name: str, index: int | None = None) -> torch.Tensor:
        """A tensor of a known dtype, shaped as stored (raw uint8 bytes for an unknown dtype); with
        index, only tensor[index] along the first dim is read (one expert of a 3-D expert tensor)."""
        spec = self.specs[name]
        if index is None:
            raw, shape = self.read_bytes(name), spec.shape
        else:
            length = spec.nbytes // spec.shape[0]
            raw, shape = self.read_bytes(name, index * length, length), spec.shape[1:]
        if spec.torch_dtype is None:
            return raw
        return raw.view(spec.torch_dtype).reshape(shape)


def _data_start(entry: object) -> int:
    try:
        return int(entry["data_offsets"][0])
    except (TypeError, KeyError, ValueError, IndexError):
        return -1  # reported as malformed by _spec


def read_json(path: Path) -> dict:
    """A JSON object from a file; DataError naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: {exc.strerror}") from None
    if not isinstance(payload, dict):
        raise DataError(f"{path}: expected a JSON object")
    return payload


def write_json(path: Path, payload: dict) -> None:
    """Indented JSON with a final newline; key order as given, so equal inputs give equal bytes."""
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---- the checkpoint a path names ---------------------------------------------------------------


class Checkpoint:
    """The stored tensors of one or more safetensors files, each opened once.

    path: what was opened; directory: the model directory (None for a single file input); files:
    the shards; metadata: their `__metadata__` merged; config: config.json, or None; skipped_files:
    weight files beside the checkpoint that are neither converted nor copied, with the reason.
    """

    def __init__(self, path: Path, directory: Path | None, files: list[Path], weight_map: dict[str, str] | None = None):
        self.path = path
        self.directory = directory
        self.files = [SafetensorsFile(file) for file in files]
        self.metadata: dict[str, str] = {}
        self.specs: dict[str, TensorSpec] = {}
        self._file_of: dict[str, SafetensorsFile] = {}
        self.skipped_files: list[dict[str, str]] = []
        for file in self.files:
            for key, value in file.metadata.items():
                self.metadata.setdefault(key, value)
            for name, spec in sorted(file.specs.items()):  # name order within a shard, as safetensors lists them
                if name in self.specs:
                    raise DataError(f"{file.path}: tensor {name!r} is also stored in {self._file_of[name].path}")
                self.specs[name] = spec
                self._file_of[name] = file
        if weight_map is not None:
            self._check_weight_map(weight_map)
        self.config = _read_config(directory) if directory is not None else None

    def _check_weight_map(self, weight_map: dict[str, str]) -> None:
        for name, file_name in weight_map.items():
            if name not in self._file_of or self._file_of[name].path != self.path.parent / file_name:
                raise DataError(f"{self.path}: tensor {name!r} is listed in {file_name} but not stored there")
        unlisted = [name for name in self.specs if name not in weight_map]
        if unlisted:
            raise DataError(f"{self.path}: tensor {unlisted[0]!r} is stored in {self._file_of[unlisted[0]].path.name} but missing from the index")

    def tensor_names(self) -> list[str]:
        """Stored tensor names, shard by shard, sorted within a shard."""
        return list(self.specs)

    def info(self, name: str) -> TensorSpec:
        """Name, dtype and shape of a stored tensor, from the header (nothing is loaded)."""
        try:
            return self.specs[name]
        except KeyError:
            raise DataError(f"{self.path}: no tensor named {name!r}") from None

    def file(self, name: str) -> Path:
        """The shard that stores a tensor."""
        self.info(name)
        return self._file_of[name].path

    def read(self, name: str, index: int | None = None) -> torch.Tensor:
        """A stored tensor (raw uint8 bytes for a dtype this tool does not know); with index,
        only tensor[index] along its first dim."""
        self.info(name)
        return self._file_of[name].read(name, index)

    def read_bytes(self, name: str, *, out: torch.Tensor | None = None, pool: Executor | None = None) -> torch.Tensor:
        """A stored tensor's bytes, flat uint8, whatever its dtype (SafetensorsFile.read_bytes)."""
        self.info(name)
        return self._file_of[name].read_bytes(name, out=out, pool=pool)

    def view(self, name: str, raw: torch.Tensor) -> torch.Tensor:
        """A stored tensor's bytes (from read_bytes) as the tensor read() returns."""
        spec = self.info(name)
        return raw if spec.torch_dtype is None else raw.view(spec.torch_dtype).reshape(spec.shape)

    def close(self) -> None:
        for file in self.files:
            file.close()


def _read_config(directory: Path) -> dict | None:
    path = directory / CONFIG_NAME
    return read_json(path) if path.is_file() else None


def _index_files(index: Path) -> tuple[list[Path], dict[str, str]]:
    payload = read_json(index)
    weight_map = payload.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(file_name, str) for file_name in weight_map.values()):
        raise DataError(f"{index}: no 'weight_map' of tensor names to shard files")
    files: list[Path] = []
    for file_name in dict.fromkeys(weight_map.values()):
        # Shards live beside the index or below it: a path out of it ("../x", "/etc/x") would read outside the model.
        relative = Path(file_name)
        if relative.is_absolute() or ".." in relative.parts or not relative.name:
            raise DataError(f"{index}: shard {file_name!r} is not a path inside {index.parent}")
        file = index.parent / relative
        if not file.is_file():
            raise DataError(f"{index}: shard {file_name} does not exist")
        files.append(file)
    return files, weight_map


# Weight files a model directory may hold beside its checkpoint that are the same weights in
# another layout (Mistral's consolidated files, Meta's original/ folder) or not the model's own
# (a PEFT adapter): never converted, never copied into the output, and reported.
DUPLICATE_WEIGHT_PREFIXES = ("consolidated",)
ADAPTER_PREFIXES = ("adapter_model",)
WEIGHT_FILE_SUFFIXES = (SAFETENSORS_SUFFIX, INDEX_SUFFIX, ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")


def is_weight_file(path: Path) -> bool:
    return path.name.endswith(WEIGHT_FILE_SUFFIXES)


def _skip_reason(name: str) -> str:
    if name.startswith(DUPLICATE_WEIGHT_PREFIXES):
        return "another layout of the same weights (consolidated checkpoint): neither converted nor copied"
    if name.startswith(ADAPTER_PREFIXES):
        return "an adapter, not the model's own weights: neither converted nor copied (convert it on its own)"
    return "not part of the checkpoint: neither converted nor copied"


def _find_in_directory(directory: Path) -> Path:
    """The checkpoint file of a model directory: model.safetensors(.index.json), or the one
    index or file there. Other safetensors files beside it are reported by open_checkpoint."""
    for preferred in ("model" + INDEX_SUFFIX, "model" + SAFETENSORS_SUFFIX):
        if (directory / preferred).is_file():
            return directory / preferred
    for pattern in ("*" + INDEX_SUFFIX, "*" + SAFETENSORS_SUFFIX):
        found = [path for path in sorted(directory.glob(pattern)) if not path.name.startswith(DUPLICATE_WEIGHT_PREFIXES + ADAPTER_PREFIXES)]
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(path.name for path in found)
            raise DataError(f"{directory}: several candidates ({names}); pass one of them")
    raise DataError(f"{directory}: no .safetensors file or {INDEX_SUFFIX} in this directory")


def _weight_files_beside(directory: Path, used: set[Path]) -> list[dict[str, str]]:
    """Weight files anywhere under directory that the checkpoint does not use, with the reason."""
    skipped = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and is_weight_file(path) and path not in used:
            skipped.append({"file": str(path.relative_to(directory)), "reason": _skip_reason(path.name)})
    return skipped


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a .safetensors file, a *.safetensors.index.json or a model directory holding either.

    Only headers are read here; DataError names the file when it is missing or not safetensors.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        found = _find_in_directory(path)
        checkpoint = _open_file_or_index(found, path)
        checkpoint.path = path
        used = {found, *(file.path for file in checkpoint.files)}
        checkpoint.skipped_files = _weight_files_beside(path, used)
        return checkpoint
    if path.name.endswith((INDEX_SUFFIX, SAFETENSORS_SUFFIX)):
        return _open_file_or_index(path, path.parent if path.name.endswith(INDEX_SUFFIX) else None)
    raise DataError(f"{path}: expected a .safetensors file, a {INDEX_SUFFIX} or a model directory")


def _open_file_or_index(path: Path, directory: Path | None) -> Checkpoint:
    if path.name.endswith(INDEX_SUFFIX):
        files, weight_map = _index_files(path)
        return Checkpoint(path, directory, files, weight_map)
    return Checkpoint(path, directory, [path])


# ---- writing -------------------------------------------------------------------------------


def safetensors_layout(specs: list[TensorSpec], metadata: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    """The header bytes of a safetensors file holding specs, and each tensor's file offset.

    Laid out exactly as safetensors' own `save` does (by dtype, then name; compact JSON padded
    with spaces to 8 bytes), with metadata keys sorted so that equal inputs give equal bytes.
    Dtypes the library does not know go last, in name order.
    """
    rank = {name: position for position, name in enumerate(TORCH_DTYPES)}
    ordered = sorted(specs, key=lambda spec: (rank.get(spec.dtype, len(rank)), spec.name))
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    starts: dict[str, int] = {}
    position = 0
    for spec in ordered:
        header[spec.name] = {"dtype": spec.dtype, "shape": list(spec.shape), "data_offsets": [position, position + spec.nbytes]}
        starts[spec.name] = position
        position += spec.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    prefix = struct.pack("<Q", len(text)) + text
    return prefix, {name: len(prefix) + start for name, start in starts.items()}


class SafetensorsWriter:
    """Streams one safetensors file whose layout is fixed up front: the header is written first,
    then each tensor at its own offset, in any order, so only one tensor need be in memory."""

    def __init__(self, path: Path, specs: list[TensorSpec], metadata: dict[str, str]):
        self.path = path
        self._specs = {spec.name: spec for spec in specs}
        header, self._offsets = safetensors_layout(specs, metadata)
        self._pending = set(self._specs)
        self._handle = open(path, "wb")  # noqa: SIM115 - closed by close() or abort()
        with self._naming_the_file():
            self._handle.write(header)

    @contextlib.contextmanager
    def _naming_the_file(self) -> Iterator[None]:
        # A failed write or flush (a full disk) raises an OSError without a file name: name it.
        try:
            yield
        except OSError as exc:
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write a tensor of the planned dtype and shape (or its raw bytes, flat uint8)."""
        spec = self._specs[name]
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        raw = tensor.dtype == torch.uint8 and spec.dtype != "U8" and tensor.dim() == 1
        if (DTYPE_NAMES.get(tensor.dtype) != spec.dtype or tuple(tensor.shape) != spec.shape) and not raw or data.numel() != spec.nbytes:
            raise ValueError(f"{self.path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, planned {spec.dtype} {spec.shape}")
        with self._naming_the_file():
            self._handle.seek(self._offsets[name])
            self._handle.write(data.numpy())
        self._pending.discard(name)

    def close(self) -> None:
        """Flush to disk; a tensor never written is an error (the file would have holes)."""
        try:
            if self._pending:
                raise ValueError(f"{self.path}: tensor {sorted(self._pending)[0]!r} was planned but never written")
            with self._naming_the_file():
                self._handle.flush()
                os.fsync(self._handle.fileno())
        finally:
            self._handle.close()

    def abort(self) -> None:
        """Close a file being discarded. Closing flushes its buffer, and on a full disk that fails
        too: the error that made the run abort is the one to report, not this one."""
        with contextlib.suppress(OSError):
            self._handle.close()


def shard_file_names(count: int, stem: str = "model") -> list[str]:
    """Hugging Face shard names: model.safetensors, or model-00001-of-00003.safetensors ..."""
    if count == 1:
        return [stem + SAFETENSORS_SUFFIX]
    return [f"{stem}-{index:05d}-of-{count:05d}{SAFETENSORS_SUFFIX}" for index in range(1, count + 1)]


def split_into_shards(units: list[list[TensorSpec]], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Fill shards in order, unit by unit (a unit's tensors stay together); a unit larger than
    the limit gets a shard of its own, as in Hugging Face's save_pretrained."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for unit in units:
        unit_bytes = sum(spec.nbytes for spec in unit)
        if shards[-1] and size + unit_bytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].extend(unit)
        size += unit_bytes
    return shards


def write_index(path: Path, shards: list[list[TensorSpec]], file_names: list[str]) -> None:
    """model.safetensors.index.json: total size and tensor -> shard map, names sorted."""
    weight_map = {spec.name: file_name for shard, file_name in zip(shards, file_names) for spec in shard}
    total = sum(spec.nbytes for shard in shards for spec in shard)
    write_json(path, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def open_writers(shards: list[list[TensorSpec]], paths: list[Path], metadata: dict[str, str]) -> dict[str, SafetensorsWriter]:
    """A writer per shard file; returns the writer of every tensor by name."""
    writers: dict[str, SafetensorsWriter] = {}
    for shard, path in zip(shards, paths):
        writer = SafetensorsWriter(path, shard, metadata)
        writers.update({spec.name: writer for spec in shard})
    return writers
