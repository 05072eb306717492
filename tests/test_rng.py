"""Our torch Philox equals Triton's tl.randint4x (run under TRITON_INTERPRET=1) and the oracle."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import spec_oracle
from nvfp4cli.rng import block_random_bytes, philox4x32, tensor_seed

pytest.importorskip("triton")

SEEDS = [0, 1, 0xDEADBEEF, 2**32 + 5, 2**63 - 1]
OFFSETS = [0, 77, 2**32 - 2, 2**40 + 3, 2**63 - 9]
COUNTERS_PER_CASE = 8

TRITON_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch, triton, triton.language as tl

    @triton.jit
    def kernel(out_ptr, seed, offset, N: tl.constexpr):
        idx = tl.arange(0, N)
        r0, r1, r2, r3 = tl.randint4x(seed, offset + idx.to(tl.int64))
        tl.store(out_ptr + idx * 4 + 0, r0.to(tl.int64, bitcast=False) & 0xFFFFFFFF)
        tl.store(out_ptr + idx * 4 + 1, r1.to(tl.int64, bitcast=False) & 0xFFFFFFFF)
        tl.store(out_ptr + idx * 4 + 2, r2.to(tl.int64, bitcast=False) & 0xFFFFFFFF)
        tl.store(out_ptr + idx * 4 + 3, r3.to(tl.int64, bitcast=False) & 0xFFFFFFFF)

    results = []
    for seed, offset in json.loads(sys.argv[1]):
        out = torch.zeros(N_CASE * 4, dtype=torch.int64)
        kernel[(1,)](out, seed, offset, N=N_CASE)
        results.append(out.tolist())
    print(json.dumps(results))
    """
).replace("N_CASE", str(COUNTERS_PER_CASE))


@pytest.fixture(scope="module")
def triton_words():
    cases = [(s, o) for s in SEEDS for o in OFFSETS]
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-c", TRITON_SCRIPT, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = json.loads(proc.stdout.strip().splitlines()[-1])
    return {case: torch.tensor(w).reshape(COUNTERS_PER_CASE, 4) for case, w in zip(cases, words)}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("offset", OFFSETS)
def test_philox_equals_triton_randint4x(triton_words, seed, offset):
    counter = offset + torch.arange(COUNTERS_PER_CASE, dtype=torch.int64)
    ours = torch.stack(philox4x32(counter & 0xFFFFFFFF, (counter >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF, seed >> 32), -1)
    assert torch.equal(ours, triton_words[(seed, offset)])


@pytest.mark.parametrize("seed", SEEDS)
def test_block_bytes_follow_spec_layout(seed):
    offset = 2**35 + 1
    got = block_random_bytes(seed, offset, first_block=3, num_blocks=5, device=torch.device("cpu"))
    for block in range(5):
        words = spec_oracle.philox_randint4x(seed, offset + 3 + block)
        expected = [(words[j // 4] >> (8 * (j % 4))) & 0xFF for j in range(16)]
        assert got[block].tolist() == expected


def test_tensor_seed_is_63_bit_and_name_dependent():
    a, b = tensor_seed(7, "model.layers.0.mlp.up_proj.weight"), tensor_seed(7, "model.layers.0.mlp.gate_proj.weight")
    assert a != b and 0 <= a < 2**63 and 0 <= b < 2**63
    assert tensor_seed(8, "model.layers.0.mlp.up_proj.weight") != a
    import hashlib

    digest = hashlib.sha256(b"7:model.layers.0.mlp.up_proj.weight").digest()
    assert a == int.from_bytes(digest[:8], "little") & (2**63 - 1)
