"""The closed sets of names the CLI offers as choices, in a module that imports nothing heavy.

`nvfp4 --help` and a bad option must not import torch (most of a command's start-up), yet the
options' choices are the core's constants, which live beside torch code. These are copies of them;
tests/test_startup.py checks each against the core module it mirrors, so they cannot drift.
"""

from __future__ import annotations

MODES = ("rn", "rs")  # format.Mode
SCALE_RULES = ("max", "4over6", "mse")  # format.SCALE_RULES
SEED_LIMIT = 2**63  # rng.SEED_LIMIT
BACKENDS = ("reference", "triton")  # kernels.BACKENDS
OUTPUT_FORMATS = ("compressed-tensors", "modelopt")  # formats.OUTPUT_FORMATS
FLOAT_DTYPES = ("bf16", "fp16", "fp32")  # api.FLOAT_DTYPES
VERIFY_TARGETS = ("vllm", "transformers", "trtllm")  # verify.TARGETS
BENCH_OPS = ("quantize", "rowcol", "rht")  # bench.OPS
BENCH_CONTENDERS = (*BACKENDS, "torchao", "torchao-compile", "compressed-tensors", "plain-compile")  # bench.CONTENDERS
