"""nvfp4: quantize tensors and checkpoints to NVIDIA NVFP4, bit-exact across backends.

The public names load on first use (PEP 562): `import nvfp4cli` and the CLI's `--help` stay free
of torch, whose import is most of a command's start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports these on first use
    from .api import QuantizedTensor, dequantize, philox_counters, quantize, quantize_rowcol, rht
    from .errors import DataError, UsageError
    from .format import Mode

    __version__: str

_EXPORTS = {
    "DataError": ".errors",
    "Mode": ".format",
    "QuantizedTensor": ".api",
    "UsageError": ".errors",
    "dequantize": ".api",
    "philox_counters": ".api",
    "quantize": ".api",
    "quantize_rowcol": ".api",
    "rht": ".api",
}

__all__ = sorted(_EXPORTS)


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # 20 ms: only when asked for

    try:
        return version("nvfp4cli")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+source"


def __getattr__(name: str) -> object:
    if name == "__version__":
        value: object = _installed_version()
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif not name.startswith("__"):  # a submodule (nvfp4cli.kernels.X after a bare import nvfp4cli)
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, "__version__"})
