"""The closed sets of names the core and the CLI share, in a module that imports nothing.

`nvfp4 --help` and a bad option must not import torch (most of a command's start-up), yet the
options' choices are the core's constants. So the constants are written here, once: the core
modules named beside each take them from this module, and the commands offer them as choices.
"""

from __future__ import annotations

MODES = ("rn", "rs")  # format.Mode's values: round-to-nearest-even, stochastic rounding
# How each block's E4M3 scale is chosen (docs/format.md §4): max maps the block max to
# 6 (torchao's rule); 4over6 and mse pick among candidate scales by lowest squared RN error.
SCALE_RULES = ("max", "4over6", "mse")  # format.SCALE_RULES
SEED_LIMIT = 2**63  # rng.SEED_LIMIT: seeds and offsets are non-negative int64
BACKENDS = ("reference", "triton")  # kernels.BACKENDS
OUTPUT_FORMATS = ("compressed-tensors", "modelopt")  # formats.OUTPUT_FORMATS' keys (each a format module's NAME)
FLOAT_DTYPES = ("bf16", "fp16", "fp32")  # api.FLOAT_DTYPES' keys: bfloat16, float16, float32
VERIFY_TARGETS = ("vllm", "transformers", "trtllm")  # verify.TARGETS
BENCH_OPS = ("quantize", "rowcol", "rht")  # bench.OPS
BENCH_PEERS = ("torchao", "torchao-compile", "compressed-tensors", "plain-compile")  # bench.PEERS
BENCH_CONTENDERS = (*BACKENDS, *BENCH_PEERS)  # bench.CONTENDERS
