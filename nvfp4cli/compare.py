"""Compare two checkpoints tensor by tensor: the core of `nvfp4 diff`.

A is the reference: sqnr_db = 10 * log10(sum a^2 / sum (a - b)^2). Each side may be a float
checkpoint or NVFP4 in either format; tensors are matched by logical weight name (an NVFP4
triple counts as its "X.weight"), dequantized the way their own ecosystem does, and compared
one at a time in float64, so memory stays near two tensors whatever the checkpoint size (a
0.8 GB Llama-shaped model against its NVFP4 output: 554 MB peak, 4-6 s on this 2-core machine).

The headline SQNR is over the quantized tensors (stored quantized on either side), or, when
neither side holds any, over the tensors that differ: tensors copied unchanged (embeddings,
norms) add signal and no noise, and counted in they make a 20 dB quantization look like 90 dB.
The SQNR over every compared tensor stays in the summary as overall_sqnr_db.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import formats
from .api import QuantizedTensor
from .formats import LogicalWeight
from .io import Checkpoint, open_checkpoint
from .errors import UsageError
from .bench import parse_device
from .metrics import ErrorStats, code_agreement, scale_agreement
from .pipeline import Prefetched
from .process import threads_for

SORT_KEYS = ("name", "sqnr")


def _json_float(value: float | None) -> float | None:
    # JSON has no NaN or Infinity: a SQNR that is undefined (zero reference, NaN data) is null.
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class TensorComparison:
    name: str
    shape: list[int]
    format_a: str
    format_b: str
    stats: ErrorStats
    code_agreement: float | None  # both sides NVFP4, else None
    scale_agreement: float | None

    @property
    def quantized(self) -> bool:
        """Stored quantized (NVFP4, FP8, MXFP4) in A or in B."""
        return self.format_a != formats.plain.NAME or self.format_b != formats.plain.NAME

    def sort_key(self) -> tuple[float, str]:
        """Worst first: lowest SQNR (undefined counts as worst), identical tensors last."""
        if self.stats.identical:
            return math.inf, self.name
        sqnr = self.stats.sqnr_db
        return (-math.inf if sqnr is None or math.isnan(sqnr) else sqnr), self.name

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": self.shape,
            "format_a": self.format_a,
            "format_b": self.format_b,
            "sqnr_db": _json_float(self.stats.sqnr_db),
            "max_abs_err": _json_float(self.stats.max_abs_err),
            "mean_abs_err": _json_float(self.stats.mean_abs_err),
            "rel_fro_err": _json_float(self.stats.rel_fro_err),
            "cosine": _json_float(self.stats.cosine),
            "code_agreement": self.code_agreement,
            "scale_agreement": self.scale_agreement,
            "identical": self.stats.identical,
        }


@dataclass(frozen=True)
class ShapeMismatch:
    name: str
    shape_a: list[int]
    shape_b: list[int]


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    tensors: list[TensorComparison]  # in A's order
    only_in_a: list[str]
    only_in_b: list[str]
    shape_mismatches: list[ShapeMismatch]

    def sorted_tensors(self, key: str) -> list[TensorComparison]:
        if key not in SORT_KEYS:
            raise UsageError(f"unknown sort key {key!r}; valid: {', '.join(SORT_KEYS)}")
        if key == "name":
            return sorted(self.tensors, key=lambda t: t.name)
        return sorted(self.tensors, key=TensorComparison.sort_key)

    def worst(self) -> TensorComparison | None:
        """The tensor with the lowest SQNR, or None when every compared tensor is identical."""
        differing = [t for t in self.tensors if not t.stats.identical]
        return min(differing, key=TensorComparison.sort_key) if differing else None

    def below(self, min_sqnr_db: float) -> list[TensorComparison]:
        """Differing tensors whose SQNR is under the threshold (an undefined SQNR counts as under)."""
        return [t for t in self.sorted_tensors("sqnr") if not t.stats.identical and t.sort_key()[0] < min_sqnr_db]

    def headline(self) -> tuple[str, list[TensorComparison]]:
        """The tensors the headline SQNR is over, and what they are: "quantized" (stored quantized
        in A or B), or "differing" when neither side holds a quantized tensor."""
        quantized = [t for t in self.tensors if t.quantized]
        return ("quantized", quantized) if quantized else ("differing", [t for t in self.tensors if not t.stats.identical])

    def summary(self) -> dict:
        basis, headline = self.headline()
        worst = self.worst()
        return {
            "compared": len(self.tensors),
            "identical": sum(t.stats.identical for t in self.tensors),
            "only_in_a": len(self.only_in_a),
            "only_in_b": len(self.only_in_b),
            "shape_mismatches": len(self.shape_mismatches),
            # energy-weighted; the headline: over the quantized (or else the differing) tensors
            "sqnr_db": _json_float(_merged(headline).sqnr_db),
            "sqnr_over": basis,
            "sqnr_tensors": len(headline),
            "overall_sqnr_db": _json_float(_merged(self.tensors).sqnr_db),  # over every compared tensor
            "worst": None if worst is None else worst.name,
            "worst_sqnr_db": None if worst is None else _json_float(worst.stats.sqnr_db),
        }

    def to_dict(self, tensors: Sequence[TensorComparison] | None = None) -> dict:
        """JSON document; tensors: the rows to list (default all), the summary covers all."""
        return {
            "a": self.a,
            "b": self.b,
            "tensors": [t.to_dict() for t in (self.tensors if tensors is None else tensors)],
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "shape_mismatches": [vars(m) for m in self.shape_mismatches],
            "summary": self.summary(),
        }


def _merged(tensors: Sequence[TensorComparison]) -> ErrorStats:
    total = ErrorStats()
    for t in tensors:
        total = total.merge(t.stats)
    return total


def _load(weight: LogicalWeight, checkpoint: Checkpoint) -> tuple[torch.Tensor, QuantizedTensor | None]:
    # Float tensors stay in their stored dtype (ErrorStats widens chunk by chunk); the rest decode to float32.
    dtype = checkpoint.info(weight.tensors[0]).torch_dtype if not weight.quantized else None
    return formats.load_both(weight, checkpoint, dtype if dtype is not None and dtype.is_floating_point else torch.float32)


def compare_weights(name: str, a: tuple[LogicalWeight, Checkpoint], b: tuple[LogicalWeight, Checkpoint]) -> TensorComparison:
    """Metrics of b against a (same shape), plus code and scale agreement when both are NVFP4.
    Each side's stored tensors are read once."""
    (values_a, qa), (values_b, qb) = _load(*a), _load(*b)
    stats = ErrorStats.of(values_a, values_b)
    codes = scales = None
    if qa is not None and qb is not None:
        codes = code_agreement(qa.packed, qb.packed)
        scales = scale_agreement(qa.scales, qb.scales)
    return TensorComparison(name, list(a[0].shape), a[0].format, b[0].format, stats, codes, scales)


def _selected(names: Sequence[str], include: Sequence[str]) -> list[str]:
    return [n for n in names if not include or any(fnmatch.fnmatchcase(n, pattern) for pattern in include)]


def compare_checkpoints(
    path_a: str | Path,
    path_b: str | Path,
    include: Sequence[str] = (),
    on_tensor: Callable[[int, int, str], None] = lambda done, total, name: None,
    device: str = "cpu",
) -> Comparison:
    """Compare every logical weight present in both checkpoints (names matching an include glob, if any).

    on_tensor(done, total, name) is called before each comparison, for progress. device: where
    the tensors are decoded and compared (cuda: read onto the GPU). On the CPU the comparison
    runs on one thread: it is a stream of memory-bound passes, and on a busy machine every
    multi-threaded pass waits for a second core (a 0.8 GB diff took 6.4 s on two threads of
    this 2-core machine, 4.1 s on one).
    """
    checkpoint_a, checkpoint_b = open_checkpoint(path_a), open_checkpoint(path_b)
    on_device = parse_device(device)
    reader_a, reader_b = (checkpoint_a, checkpoint_b) if on_device.type == "cpu" else (Prefetched(checkpoint_a, {}, on_device), Prefetched(checkpoint_b, {}, on_device))
    weights_a, weights_b = (formats.logical_weights(c, split_experts=True) for c in (checkpoint_a, checkpoint_b))
    names_a, names_b = _selected(list(weights_a), include), _selected(list(weights_b), include)
    common = [n for n in names_a if n in weights_b]
    mismatches = [
        ShapeMismatch(n, list(weights_a[n].shape), list(weights_b[n].shape)) for n in common if weights_a[n].shape != weights_b[n].shape
    ]
    matched = [n for n in common if weights_a[n].shape == weights_b[n].shape]
    tensors = []
    with threads_for(0, on_device):
        for done, name in enumerate(matched):
            on_tensor(done, len(matched), name)
            tensors.append(compare_weights(name, (weights_a[name], reader_a), (weights_b[name], reader_b)))
    return Comparison(
        a=str(path_a),
        b=str(path_b),
        tensors=tensors,
        only_in_a=[n for n in names_a if n not in weights_b],
        only_in_b=[n for n in names_b if n not in weights_a],
        shape_mismatches=mismatches,
    )
