"""Checkpoint I/O: read a .safetensors file, a sharded *.safetensors.index.json or an HF model
directory one tensor at a time, and write sharded safetensors output reproducibly.

    ckpt = open_checkpoint("model_dir")
    for name, weight in ckpt.logical_weights().items():
        x = weight.load_float()              # NVFP4 weights are dequantized on the fly

Reading opens the shard for every tensor and closes it again: safetensors maps the whole file,
and a handle kept open lets resident memory grow to the size of the shard.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .api import QuantizedTensor
from .errors import DataError, UsageError, one_line
from .format import BLOCK_SIZE, Mode, dequantize_blocks

SAFETENSORS_SUFFIX = ".safetensors"
INDEX_SUFFIX = ".safetensors.index.json"
CONFIG_NAME = "config.json"
METADATA_KEY = "nvfp4"  # one safetensors metadata key holding this tool's record as sorted JSON

# In the order the safetensors library lays tensors out (by dtype, then name): writing in this
# order gives the library's exact bytes, and wide dtypes come first so every tensor is aligned.
DTYPE_NAMES = {
    torch.uint64: "U64",
    torch.int64: "I64",
    torch.float64: "F64",
    torch.float32: "F32",
    torch.uint32: "U32",
    torch.int32: "I32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.uint16: "U16",
    torch.int16: "I16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
DTYPES_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}
FLOAT_FORMAT = "float"
COMPRESSED_TENSORS_FORMAT = "compressed-tensors"
MODELOPT_FORMAT = "modelopt"


@dataclass(frozen=True)
class TensorSpec:
    """A stored tensor's name, dtype and shape: what a safetensors header says of it."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Checkpoint:
    """A safetensors checkpoint of one or more shards; tensors are read one at a time.

    path: what was opened; directory: the model directory (for a directory or an index input,
    None for a single file); files: the shards; metadata: their safetensors `__metadata__`
    merged; config: the directory's config.json, or None.
    """

    def __init__(self, path: Path, directory: Path | None, files: list[Path], weight_map: dict[str, str] | None):
        self.path = path
        self.directory = directory
        self.files = files
        self.metadata: dict[str, str] = {}
        self._infos: dict[str, TensorSpec] = {}
        self._files: dict[str, Path] = {}
        for file in files:
            self._read_header(file)
        if weight_map is not None:
            self._check_weight_map(weight_map)
        self.config = _read_config(directory) if directory is not None else None

    def _read_header(self, file: Path) -> None:
        try:
            with safe_open(file, framework="pt") as handle:
                for key, value in (handle.metadata() or {}).items():
                    self.metadata.setdefault(key, value)
                for name in handle.keys():
                    view = handle.get_slice(name)
                    dtype_name = view.get_dtype()
                    if dtype_name not in DTYPES_BY_NAME:
                        raise DataError(f"{file}: tensor {name!r} has unsupported dtype {dtype_name}")
                    if name in self._infos:
                        raise DataError(f"{file}: tensor {name!r} is also stored in {self._files[name]}")
                    self._infos[name] = TensorSpec(name, DTYPES_BY_NAME[dtype_name], tuple(view.get_shape()))
                    self._files[name] = file
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{file}: not a readable safetensors file ({one_line(str(exc))})") from None

    def _check_weight_map(self, weight_map: dict[str, str]) -> None:
        for name, file_name in weight_map.items():
            if name not in self._files or self._files[name].name != Path(file_name).name:
                raise DataError(f"{self.path}: tensor {name!r} is listed in {file_name} but not stored there")
        unlisted = sorted(set(self._infos) - set(weight_map))
        if unlisted:
            raise DataError(f"{self.path}: tensor {unlisted[0]!r} is stored in {self._files[unlisted[0]].name} but missing from the index")

    def tensor_names(self) -> list[str]:
        """Stored tensor names, shard by shard, sorted within a shard."""
        return list(self._infos)

    def info(self, name: str) -> TensorSpec:
        """Name, dtype and shape of a stored tensor, from the header (nothing is loaded)."""
        try:
            return self._infos[name]
        except KeyError:
            raise DataError(f"{self.path}: no tensor named {name!r}") from None

    def file(self, name: str) -> Path:
        """The shard that stores a tensor."""
        self.info(name)
        return self._files[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.info(name).shape

    def dtype(self, name: str) -> torch.dtype:
        return self.info(name).dtype

    def get_tensor(self, name: str) -> torch.Tensor:
        """The stored tensor, read from its shard (which is closed again at once)."""
        file = self.file(name)
        try:
            with safe_open(file, framework="pt") as handle:
                return handle.get_tensor(name)
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{file}: cannot read tensor {name!r} ({one_line(str(exc))})") from None

    def record(self) -> dict | None:
        """This tool's record of how the checkpoint was made (settings, producer), or None."""
        text = self.metadata.get(METADATA_KEY)
        if text is None:
            return None
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise DataError(f"{self.path}: metadata {METADATA_KEY!r} is not a JSON object")
        return record

    def recorded_mode(self) -> Mode:
        """The rounding mode this tool recorded in the metadata (RN when none is recorded)."""
        mode = (self.record() or {}).get("mode", Mode.RN.value)
        try:
            return Mode(mode)
        except ValueError:
            raise DataError(f"{self.path}: metadata {METADATA_KEY!r} records an unknown mode {mode!r}") from None

    def logical_weights(self) -> dict[str, LogicalWeight]:
        """Every logical tensor by name: NVFP4 triples as one "X.weight", the rest as stored."""
        weights: dict[str, LogicalWeight] = {}
        claimed: set[str] = set()
        for name in self._infos:
            weight = self._quantized_weight(name)
            if weight is not None:
                if weight.name in weights or claimed.intersection(weight.tensors):
                    raise DataError(f"{self.path}: {weight.name!r} is stored as more than one NVFP4 weight ({weight.format} and another)")
                weights[weight.name] = weight
                claimed.update(weight.tensors)
        for name, info in self._infos.items():
            if name in claimed:
                continue
            if name in weights:
                raise DataError(f"{self.path}: {name!r} is stored both as a float tensor and as an NVFP4 weight ({weights[name].format})")
            weights[name] = LogicalWeight(name, info.shape, FLOAT_FORMAT, (name,), self)
        order = {name: position for position, name in enumerate(self._infos)}
        return dict(sorted(weights.items(), key=lambda item: order[item[1].tensors[0]]))

    def _quantized_weight(self, name: str) -> LogicalWeight | None:
        if name.endswith(".weight_packed"):
            base = name.removesuffix("_packed")
            fmt, members = COMPRESSED_TENSORS_FORMAT, (name, f"{base}_scale", f"{base}_global_scale")
        elif name.endswith(".weight") and self._infos[name].dtype == torch.uint8 and f"{name}_scale" in self._infos:
            base = name
            fmt, members = MODELOPT_FORMAT, (name, f"{base}_scale", f"{base}_scale_2")
        else:
            return None
        missing = [member for member in members[1:] if member not in self._infos]
        if missing:
            raise DataError(f"{self.path}: {fmt} tensor {name!r} has no {missing[0]!r}")
        packed, scales, global_scale = (self._infos[member] for member in members)
        if packed.dtype != torch.uint8 or scales.dtype != torch.float8_e4m3fn or global_scale.dtype != torch.float32:
            raise DataError(f"{self.path}: {fmt} tensors of {base!r} must be uint8, float8_e4m3fn and float32")
        if not packed.shape or packed.shape[:-1] != scales.shape[:-1] or packed.shape[-1] * 2 != scales.shape[-1] * BLOCK_SIZE:
            raise DataError(f"{self.path}: {fmt} tensor {name!r} of shape {packed.shape} does not match scales {members[1]!r} of shape {scales.shape}")
        if global_scale.shape not in ((), (1,)):
            raise DataError(f"{self.path}: {fmt} tensor {members[2]!r} must hold one value, has shape {global_scale.shape}")
        logical_shape = (*packed.shape[:-1], packed.shape[-1] * 2)
        return LogicalWeight(base, logical_shape, fmt, members, self)


@dataclass(frozen=True)
class LogicalWeight:
    """One logical tensor "X.weight": stored as a float tensor or as an NVFP4 triple.

    tensors: the stored names (packed, block scales, per-tensor scale for NVFP4).
    """

    name: str
    shape: tuple[int, ...]
    format: str  # FLOAT_FORMAT, COMPRESSED_TENSORS_FORMAT or MODELOPT_FORMAT
    tensors: tuple[str, ...]
    checkpoint: Checkpoint = field(repr=False, compare=False)

    @property
    def quantized(self) -> bool:
        return self.format != FLOAT_FORMAT

    def load_quantized(self) -> QuantizedTensor | None:
        """The NVFP4 tensor (None for a float tensor). Its per_tensor_scale is pts: stored as is by
        ModelOpt, the float32 reciprocal of the stored global scale for compressed-tensors."""
        if not self.quantized:
            return None
        return self._quantized(*self._stored())

    def load_per_tensor_scale(self) -> torch.Tensor | None:
        """pts (float32 0-d) of an NVFP4 weight without loading the rest; None for a float tensor."""
        if not self.quantized:
            return None
        return self._pts(self._stored_scale())

    def load_float(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The tensor in dtype; NVFP4 is dequantized the way its own ecosystem does it:
        e2m1 * scale * pts for ModelOpt, e2m1 * (scale / global_scale) for compressed-tensors."""
        if not self.quantized:
            return self.checkpoint.get_tensor(self.name).to(dtype)
        return self._values(*self._stored(), dtype)

    def load_both(self, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, QuantizedTensor | None]:
        """(load_float(dtype), load_quantized()) from one read of the stored tensors."""
        if not self.quantized:
            return self.load_float(dtype), None
        stored = self._stored()
        return self._values(*stored, dtype), self._quantized(*stored)

    def _stored(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.checkpoint.get_tensor(self.tensors[0]), self._block_scales(), self._stored_scale()

    def _pts(self, stored_scale: torch.Tensor) -> torch.Tensor:
        return 1.0 / stored_scale if self.format == COMPRESSED_TENSORS_FORMAT else stored_scale

    def _quantized(self, packed: torch.Tensor, scales: torch.Tensor, stored_scale: torch.Tensor) -> QuantizedTensor:
        return QuantizedTensor(packed=packed, scales=scales, per_tensor_scale=self._pts(stored_scale), mode=self.checkpoint.recorded_mode())

    def _values(self, packed: torch.Tensor, scales: torch.Tensor, stored_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.format == COMPRESSED_TENSORS_FORMAT:
            effective_scales = scales.to(torch.float32) / stored_scale
            return dequantize_blocks(packed, effective_scales, torch.ones(()), dtype)
        return dequantize_blocks(packed, scales, stored_scale, dtype)

    def _block_scales(self) -> torch.Tensor:
        name = self.tensors[1]
        scales = self.checkpoint.get_tensor(name)
        nans = int(((scales.view(torch.uint8) & 0x7F) == 0x7F).sum())  # E4M3FN's only NaN: all exponent and mantissa bits set
        if nans:
            raise DataError(f"{self.checkpoint.file(name)}: tensor {name!r} holds {nans} NaN block scale(s)")
        return scales

    def _stored_scale(self) -> torch.Tensor:
        # pts (ModelOpt) or 1/pts (compressed-tensors): either way it and its reciprocal must be
        # positive and finite, or every value of the weight decodes to 0, Inf or NaN.
        name = self.tensors[2]
        stored_scale = self.checkpoint.get_tensor(name).reshape(())
        if not (stored_scale > 0 and torch.isfinite(stored_scale) and torch.isfinite(1.0 / stored_scale)):
            raise DataError(f"{self.checkpoint.file(name)}: tensor {name!r} holds {float(stored_scale)}; a tensor scale must be positive and finite")
        return stored_scale


def _read_json(path: Path) -> dict:
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


def _read_config(directory: Path) -> dict | None:
    path = directory / CONFIG_NAME
    return _read_json(path) if path.is_file() else None


def _open_index(index: Path) -> Checkpoint:
    payload = _read_json(index)
    weight_map = payload.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(file_name, str) for file_name in weight_map.values()):
        raise DataError(f"{index}: no 'weight_map' of tensor names to shard files")
    files: list[Path] = []
    for file_name in dict.fromkeys(weight_map.values()):
        # Shards live beside the index: a path ("../x", "/etc/x") would read outside the model.
        if Path(file_name).name != file_name:
            raise DataError(f"{index}: shard {file_name!r} is not a file name in {index.parent}")
        file = index.parent / file_name
        if not file.is_file():
            raise DataError(f"{index}: shard {file_name} does not exist")
        files.append(file)
    return Checkpoint(index, index.parent, files, weight_map)


def _find_in_directory(directory: Path) -> Path:
    for preferred in ("model" + INDEX_SUFFIX, "model" + SAFETENSORS_SUFFIX):
        if (directory / preferred).is_file():
            return directory / preferred
    for pattern in ("*" + INDEX_SUFFIX, "*" + SAFETENSORS_SUFFIX):
        found = sorted(directory.glob(pattern))
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(path.name for path in found)
            raise DataError(f"{directory}: several candidates ({names}); pass one of them")
    raise DataError(f"{directory}: no .safetensors file or {INDEX_SUFFIX} in this directory")


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Open a .safetensors file, a *.safetensors.index.json or a model directory holding either.

    Only headers are read here; DataError names the file when it is missing or not safetensors.
    """
    path = Path(path)
    if path.is_dir():
        found = _find_in_directory(path)
        if found.name.endswith(INDEX_SUFFIX):
            checkpoint = _open_index(found)
        else:
            checkpoint = Checkpoint(found, path, [found], None)
        checkpoint.path = path
        return checkpoint
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.name.endswith(INDEX_SUFFIX):
        return _open_index(path)
    if path.name.endswith(SAFETENSORS_SUFFIX):
        return Checkpoint(path, None, [path], None)
    raise DataError(f"{path}: expected a .safetensors file, a {INDEX_SUFFIX} or a model directory")


# ---- writing -------------------------------------------------------------------------------

SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Bytes in a size such as "5GB" (decimal, as Hugging Face counts shards), "500MiB" or "1000"."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in SIZE_UNITS or float(match.group(1)) * SIZE_UNITS[unit] < 1:
        raise UsageError(f"invalid size {text!r}; use e.g. 5GB, 500MB or 2GiB")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def safetensors_layout(specs: list[TensorSpec], metadata: dict[str, str]) -> tuple[bytes, dict[str, int]]:
    """The header bytes of a safetensors file holding specs, and each tensor's file offset.

    Laid out exactly as safetensors' own `save` does (by dtype, then name; compact JSON padded
    with spaces to 8 bytes), with metadata keys sorted so that equal inputs give equal bytes.
    """
    rank = {dtype: position for position, dtype in enumerate(DTYPE_NAMES)}
    ordered = sorted(specs, key=lambda spec: (rank[spec.dtype], spec.name))
    header: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    starts: dict[str, int] = {}
    position = 0
    for spec in ordered:
        header[spec.name] = {"dtype": DTYPE_NAMES[spec.dtype], "shape": list(spec.shape), "data_offsets": [position, position + spec.nbytes]}
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
        self._handle = open(path, "wb")
        self._handle.write(header)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        spec = self._specs[name]
        if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise ValueError(f"{self.path}: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, planned {spec.dtype} {spec.shape}")
        self._handle.seek(self._offsets[name])
        self._handle.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        self._pending.discard(name)

    def close(self) -> None:
        """Flush to disk; a tensor never written is an error (the file would have holes)."""
        try:
            if self._pending:
                raise ValueError(f"{self.path}: tensor {sorted(self._pending)[0]!r} was planned but never written")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        finally:
            self._handle.close()

    def abort(self) -> None:
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


def write_json(path: Path, payload: dict) -> None:
    """Indented JSON with a final newline; key order as given, so equal inputs give equal bytes."""
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_index(path: Path, shards: list[list[TensorSpec]], file_names: list[str]) -> None:
    """model.safetensors.index.json: total size and tensor -> shard map, names sorted."""
    weight_map = {spec.name: file_name for shard, file_name in zip(shards, file_names) for spec in shard}
    total = sum(spec.nbytes for shard in shards for spec in shard)
    write_json(path, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def check_output_path(output: Path, input_path: Path, force: bool) -> None:
    """Refuse an output that would touch the input, or an existing one without force.

    What killed runs left beside output is cleaned up first (see clean_leftovers), so that an
    old output such a run had moved aside counts as existing again."""
    resolved_output, resolved_input = output.resolve(), input_path.resolve()
    if _is_within(resolved_input, resolved_output) or (input_path.is_dir() and _is_within(resolved_output, resolved_input)):
        raise UsageError(f"output {output} would overwrite or write into the input {input_path}")
    clean_leftovers(output)
    if (output.exists() or output.is_symlink()) and not force:
        raise UsageError(f"output {output} exists; pass --force to replace it")
    check_output_directory(output)


def check_output_directory(output: Path) -> None:
    """Refuse an output whose parent is missing or is not a directory."""
    if not output.parent.is_dir():
        problem = "is not a directory" if output.parent.exists() else "does not exist"
        raise UsageError(f"output directory {output.parent} {problem}")


# Beside an output X, a run writes into ".X.nvfp4-tmp-<host>-<pid>-<random>" and, when --force
# replaces a directory, moves the old X into ".X.nvfp4-old-<host>-<pid>-<random>/X" for the moment
# of the final rename. Any exception removes both; a killed process (SIGKILL, power loss) cannot,
# and the next run writing X removes them once their process is gone.
STAGING_TAG = "nvfp4-tmp"
RETIRED_TAG = "nvfp4-old"
HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _sibling(output: Path, tag: str, is_dir: bool) -> Path:
    prefix = f".{output.name}.{tag}-{HOST}-{os.getpid()}-"
    if is_dir:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=output.parent))
    handle, name = tempfile.mkstemp(prefix=prefix, dir=output.parent)
    os.close(handle)
    return Path(name)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def clean_leftovers(output: Path) -> list[Path]:
    """Remove the staging siblings of output that runs killed on this machine left behind, and
    put back an old output such a run had moved aside if output is missing. Entries of live
    processes (a run still writing) and of other machines are left alone. Returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(output.name)}\.({STAGING_TAG}|{RETIRED_TAG})-{re.escape(HOST)}-(\d+)-[a-z0-9_]+")
    if not output.parent.is_dir():
        return []
    removed = []
    for entry in sorted(output.parent.iterdir()):
        match = pattern.fullmatch(entry.name)
        if match is None or _process_alive(int(match.group(2))):
            continue
        old_output = entry / output.name
        if match.group(1) == RETIRED_TAG and os.path.lexists(old_output) and not os.path.lexists(output):
            os.replace(old_output, output)  # killed between moving the old output aside and the final rename
        _remove(entry)
        removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _default_permissions(path: Path, is_dir: bool) -> None:
    # mkstemp/mkdtemp create private (0600/0700) entries; give the output the usual umask mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if is_dir else 0o666) & ~umask)


@contextlib.contextmanager
def staged_output(output: Path, is_dir: bool) -> Iterator[Path]:
    """Yield a temporary sibling of output to write into; rename it to output when the block
    completes. After any exception (Ctrl-C included) the temporary is removed and output is as
    it was. An existing output (checked for by the caller) is replaced only at the very end.

    A write that fails without naming a file (a full disk) is reported as an OSError on output."""
    clean_leftovers(output)
    staging = _sibling(output, STAGING_TAG, is_dir)
    try:
        yield staging
        _default_permissions(staging, is_dir)
        if os.path.lexists(output) and (is_dir or (output.is_dir() and not output.is_symlink())):
            # os.replace cannot put a directory over anything, nor a file over a directory: move
            # the old output aside first, and put it back if the final rename fails.
            retired = _sibling(output, RETIRED_TAG, is_dir=True) / output.name
            os.replace(output, retired)
            try:
                os.replace(staging, output)
            except BaseException:
                os.replace(retired, output)
                raise
            shutil.rmtree(retired.parent)
        else:
            os.replace(staging, output)  # atomic, over an old file too
    except OSError as exc:
        _remove(staging)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(output)) from None
        raise
    except BaseException:
        _remove(staging)
        raise
