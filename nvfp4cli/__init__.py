"""nvfp4: quantize tensors and checkpoints to NVIDIA NVFP4, bit-exact across backends."""

from importlib.metadata import PackageNotFoundError, version

from .api import QuantizedTensor, dequantize, philox_counters, quantize, quantize_rowcol, rht
from .errors import DataError, UsageError
from .format import Mode

try:
    __version__ = version("nvfp4cli")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"

__all__ = [
    "DataError",
    "Mode",
    "QuantizedTensor",
    "UsageError",
    "dequantize",
    "philox_counters",
    "quantize",
    "quantize_rowcol",
    "rht",
]
