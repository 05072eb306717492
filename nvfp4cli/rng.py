"""Philox4x32-10 in torch integer ops, equal to Triton's `tl.randint4x` (docs/format.md §3).

One Philox call per 16-element block: key = (seed low 32, seed high 32), counter =
(offset + block_index) split into (c0 = low 32, c1 = high 32, 0, 0). The four 32-bit outputs
give 16 bytes; element j of a block takes byte j % 4 of output j // 4 (little-endian).
"""

from __future__ import annotations

import hashlib

import torch

from .names import SEED_LIMIT

PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF


def philox4x32(
    c0: torch.Tensor, c1: torch.Tensor, k0: torch.Tensor | int, k1: torch.Tensor | int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-10 on counters (c0, c1, 0, 0), all values uint32 held in int64 tensors.

    int64 products of two uint32 wrap mod 2^64, which keeps both 32-bit halves exact. c1 and c3
    take whole products (the low half and garbage above it): they only meet XORs before the
    masks, so each round masks twice, not four times (a quarter faster on a CPU)."""
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(PHILOX_ROUNDS):
        product_b, product_a = c2 * PHILOX_ROUND_B, c0 * PHILOX_ROUND_A
        c0 = ((product_b >> 32) ^ c1 ^ k0) & MASK32
        c2 = ((product_a >> 32) ^ c3 ^ k1) & MASK32
        c1, c3 = product_b, product_a
        k0 = (k0 + PHILOX_KEY_A) & MASK32
        k1 = (k1 + PHILOX_KEY_B) & MASK32
    return c0, c1 & MASK32, c2, c3 & MASK32


def block_random_bytes(
    seed: torch.Tensor | int, offset: torch.Tensor | int, first_block: int, num_blocks: int, device: torch.device
) -> torch.Tensor:
    """uint8 [num_blocks, 16]: the random byte of every element of blocks first_block.. (docs/format.md §3)."""
    seed_t = torch.as_tensor(seed, dtype=torch.int64, device=device)
    counter = torch.as_tensor(offset, dtype=torch.int64, device=device) + first_block
    counter = counter + torch.arange(num_blocks, dtype=torch.int64, device=device)
    r0, r1, r2, r3 = philox4x32(counter & MASK32, (counter >> 32) & MASK32, seed_t & MASK32, (seed_t >> 32) & MASK32)
    # Narrowing keeps the low 32 bits; a little-endian byte view then puts byte j % 4 of
    # word j // 4 at element j (torch runs on little-endian hosts only).
    words = torch.stack([r0, r1, r2, r3], dim=-1).to(torch.int32)
    return words.view(torch.uint8).reshape(num_blocks, 16)


def tensor_seed(seed: int, name: str) -> int:
    """Per-tensor RS stream of a checkpoint: sha256(f"{seed}:{name}")[:8] little-endian, 63 bits."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (SEED_LIMIT - 1)
