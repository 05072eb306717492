"""SASS statistics of the Triton backend's kernels, compiled for a Hopper-class GPU on a machine without one.

    .venv/bin/python scripts/sass_stats.py [--arch 90] [--kernel quantize|quantize-2d|amax-quantize|rowcol|amax ...]
        [--mode rn|rs] [--dtype bf16|fp16|fp32] [--json] [--keep DIR] [--check-finite]

Each kernel is compiled with the configuration nvfp4cli/kernels/triton_backend.py launches by
default on a large tensor (QUANTIZE_CONFIGS, ROWCOL_CONFIGS, AMAX_QUANTIZE_CONFIGS, AMAX_*, scale
rule max, no Hadamard, 2-D scaling only in quantize-2d), by Triton's own compiler and its bundled ptxas, and read
back with its bundled cuobjdump. A row gives registers, stack and local (spill) bytes, the SASS
instructions of the whole kernel and of its main path, the elements a thread handles in one pass
of that path, main-path instructions per element, and of those the ones on Hopper's two 16-lane
pipes (ALU and IMAD: two cycles a warp instruction, see ALU_OPCODES). On an H200 the quantize
kernels are instruction-bound, so instructions per element predict their relative speed before
GPU time is spent.

The main path is what a thread runs on a large tensor: the code up to the last EXIT (called
subroutines follow it), without div_rn's slow paths (a few instructions around a CALL, skipped
unless a quotient is denormal or huge), each loop run as often as the configuration needs. The
elements a piece of code handles are read from the code itself (16 a packed-codes store for
quantize, the bytes of its vector loads for amax), so a loop's trips follow from the
configuration's elements a thread whatever shape the compiler gave it: every instruction counts
once, then the loops repeat until the path has handled them (an unrolled loop in whole trips, a
remainder loop the rest). The one-launch amax+quantize's wait loop (NANOSLEEP) counts none, and
a loop-free path must handle exactly the configuration's elements (else the tool stops). That kernel gives two rows, one a role (its
amax programs, its quantize programs): an element of x costs the sum of the two. Counts are
SASS instructions a thread (a warp issues one for its 32 threads), NOPs left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from nvfp4cli import names  # the CLI's closed sets; imports nothing

# The backend's launches get Triton's default, FP fusion on (Triton 3.9); saying so silences
# Triton's warning that the default will change.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

KERNELS = ("quantize", "quantize-2d", "amax-quantize", "rowcol", "amax")
THREADS_A_WARP = 32
PACKED_STORE = "STG.E.64"  # one int64 of 16 nibbles: one block's packed codes


class ToolError(Exception):
    """Bad input or a missing tool: one line on stderr, exit 2."""


# ----------------------------------------------------------------------------------------------
# what to compile: the backend's kernels with its default configurations
# ----------------------------------------------------------------------------------------------


@dataclass
class Role:
    """What the threads of a kernel (or of one branch of it) do in a main-path pass."""

    name: str
    elements: int  # elements of x a thread handles in one pass (from the configuration)
    counts_stores: bool  # elements counted from packed-code stores (quantize) or from vector loads (amax)
    packed_stores_a_block: int = 1  # packed-code stores per 16 elements of x (rowcol: a row block's and a column block's)


@dataclass
class Variant:
    kernel: str
    mode: str
    config: str
    fn: object  # the @triton.jit function
    arguments: dict[str, str]  # argument -> Triton type, as the backend's launch passes it
    constexprs: dict[str, object]
    num_warps: int
    options: dict
    roles: list[Role]

    @property
    def name(self) -> str:
        return f"{self.kernel}_{self.mode}" if self.mode != "-" else self.kernel


def _quantize_arguments() -> dict[str, str]:
    """_quantize_kernel's runtime arguments (seeds are 63-bit, docs/format.md §3: i64)."""
    return {
        "words_ptr": "*i32", "pts_ptr": "*fp32", "col_pts_ptr": "*fp32", "seed": "i64", "offset": "i64", "packed_ptr": "*i64", "scales_ptr": "*u8", "col_packed_ptr": "*i64",
        "col_scales_ptr": "*u8", "nonfinite_ptr": "*fp32", "n_blocks": "i32", "scale_cols": "i32", "unit_stride": "i32",
    }


def _threads(warps: int) -> int:
    return warps * THREADS_A_WARP


def quantize_variant(tb, mode, input_kind: int, *, columns: bool, block_2d: bool = False, check_finite: bool = False) -> Variant:
    """_quantize_kernel as _launch_quantize launches it: 1-D tiles, 2-D scaling's 2-D tiles
    (block_2d), or quantize_rowcol's 2-D tiles (columns); with check_finite, with the nonfinite
    flag (the NaN/Inf check of a call given its per-tensor scale)."""
    blocks, warps, tiles, patch = tb.ROWCOL_CONFIGS[mode] if columns else (*tb.QUANTIZE_CONFIGS[(mode, block_2d)], 1)
    constexprs = dict(
        INPUT_KIND=input_kind, STOCHASTIC=mode is tb.Mode.RS, SEED_IN_MEMORY=False, OFFSET_IN_MEMORY=False,
        SWIZZLE=False, SCALE_RULE=0, HADAMARD=False, TILED=columns or block_2d, BLOCK_2D=block_2d, COLUMNS=columns,
        COL_HADAMARD=False, SIGN_MASK=tb._HADAMARD_MASK, BLOCKS=blocks, TILES=tiles, PATCH=patch, PTX=True,  # PTX: as compiled for NVIDIA
        CHECK_FINITE=check_finite,
    )
    role = Role("all", tiles * blocks * 16 // _threads(warps), counts_stores=True, packed_stores_a_block=2 if columns else 1)
    return Variant(
        "rowcol" if columns else "quantize-2d" if block_2d else "quantize", mode.value,
        f"{blocks} blocks x {tiles}, {warps} warps" + (f", patch {patch}" if columns else "") + (", nonfinite flag" if check_finite else ""), tb._quantize_kernel,
        _quantize_arguments(), constexprs, warps, tb._compile_options("max", None if columns else (mode, block_2d, check_finite)), [role],
    )


def amax_quantize_variant(tb, mode, input_kind: int) -> Variant:
    """_amax_quantize_kernel as quantize_amax launches it from nvfp4cli.quantize (host_amax given)."""
    blocks, warps, tiles = tb.AMAX_QUANTIZE_CONFIGS[(mode, False)]
    chunk_tiles = tb.AMAX_CHUNK_TILES
    arguments = {
        "words_ptr": "*i32", "pts_ptr": "*fp32", "amax_ptr": "*fp32",
        "host_amax_ptr": "*i32", "state_ptr": "*i32", "tickets_before": "i32", "chunks_before": "i32", "amax_word": "i32", "seed": "i64", "offset": "i64", "packed_ptr": "*i64",
        "scales_ptr": "*u8", "n_blocks": "i32", "scale_cols": "i32", "unit_stride": "i32", "n_words": "i32",
        "n_chunks": "i32", "n_programs": "i32",
    }
    constexprs = dict(
        INPUT_KIND=input_kind, STOCHASTIC=mode is tb.Mode.RS, SEED_IN_MEMORY=False, OFFSET_IN_MEMORY=False,
        SCALE_RULE=0, HADAMARD=False, BLOCK_2D=False, SIGN_MASK=tb._HADAMARD_MASK, BLOCKS=blocks, TILES=tiles,
        CHUNK_TILES=chunk_tiles, KEPT_STEPS=tb._kept_steps(2 * chunk_tiles), STREAM_QUANTIZE=tb.AMAX_STREAM_QUANTIZE, NOTIFY_HOST=True, RESIDENT=False, PTX=True,
    )
    roles = [
        Role("amax", chunk_tiles * blocks * 16 // _threads(warps), counts_stores=False),
        Role("quantize", tiles * blocks * 16 // _threads(warps), counts_stores=True),
    ]
    return Variant(
        "amax-quantize", mode.value, f"{blocks} blocks x {tiles}, amax x {chunk_tiles}, {warps} warps",
        tb._amax_quantize_kernel, arguments, constexprs, warps, tb._compile_options("max"), roles,
    )


def amax_variant(tb, dtype) -> Variant:
    """_amax_partial_kernel as amax launches it (the one-program finish is left out)."""
    paired = dtype.itemsize == 2  # two elements a word
    elements = tb.AMAX_TILES * tb.AMAX_WORDS * (2 if paired else 1) // _threads(tb.AMAX_WARPS)
    return Variant(
        "amax", "-", f"{tb.AMAX_WORDS} words x {tb.AMAX_TILES}, {tb.AMAX_WARPS} warps", tb._amax_partial_kernel,
        {"words_ptr": "*i32", "partial_ptr": "*i32", "n_words": "i32"},
        dict(PAIRED=paired, WORDS=tb.AMAX_WORDS, TILES=tb.AMAX_TILES, KEPT_STEPS=tb._kept_steps(tb.AMAX_TILES)), tb.AMAX_WARPS, {},
        [Role("all", elements, counts_stores=False)],
    )


def variants(tb, kernels: list[str], modes: list[str], dtype, check_finite: bool = False) -> list[Variant]:
    """The selected kernels for input of torch dtype `dtype`, one a mode (amax has none); the
    quantize kernels with the nonfinite flag where check_finite."""
    input_kind = tb._INPUT_KIND[dtype]
    selected = []
    for kernel in kernels:
        if kernel == "amax":
            selected.append(amax_variant(tb, dtype))
            continue
        for mode in modes:
            mode = tb.Mode(mode)
            if kernel == "amax-quantize":
                selected.append(amax_quantize_variant(tb, mode, input_kind))
            else:
                selected.append(quantize_variant(tb, mode, input_kind, columns=kernel == "rowcol", block_2d=kernel == "quantize-2d", check_finite=check_finite))
    return selected


# ----------------------------------------------------------------------------------------------
# compiling and disassembling
# ----------------------------------------------------------------------------------------------


def nvidia_tools(arch: int) -> tuple[str, str]:
    """Paths of the ptxas Triton uses for arch (checked only) and of cuobjdump, or a one-line ToolError."""
    try:
        from triton import knobs
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError as error:
        raise ToolError(f"triton with its NVIDIA backend is not importable ({error})") from None
    try:
        tools = get_ptxas(arch).path, knobs.nvidia.cuobjdump.path
    except Exception as error:  # knobs raise when neither TRITON_*_PATH nor the bundled binary works
        raise ToolError(f"triton has no usable NVIDIA ptxas/cuobjdump ({error})") from None
    # An arch ptxas does not know aborts inside Triton's LLVM (no Python error): check it first.
    known = sorted({int(n) for n in re.findall(r"'sm_(\d+)'", subprocess.run([tools[0], "--help"], capture_output=True, text=True).stdout)})
    if arch not in known:
        raise ToolError(f"--arch {arch}: not an arch that {tools[0]} compiles for (it knows {', '.join(map(str, known))})")
    return tools


def compile_variant(variant: Variant, arch: int) -> dict[str, object]:
    """Triton's asm of the variant: {'ptx': str, 'cubin': bytes, ...}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(variant.fn.arg_names)
    signature = {name: "constexpr" if name in variant.constexprs else variant.arguments[name] for name in names}
    # The launcher marks pointers and sizes that are multiples of 16 (all of them, on a large
    # tensor) as such; without that Triton cannot prove alignment and loads 4 bytes at a time.
    aligned = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(names) if signature[name].startswith("*") or name in ("n_blocks", "scale_cols", "n_words")}
    source = ASTSource(
        fn=variant.fn, signature=signature, attrs=aligned,
        constexprs={(names.index(name),): value for name, value in variant.constexprs.items()},
    )
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": variant.num_warps, **variant.options})
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ToolError(f"{variant.name}: Triton could not compile it for sm_{arch}: {first_line}") from None
    return compiled.asm


def cuobjdump(tool: str, flag: str, cubin: Path) -> str:
    result = subprocess.run([tool, flag, str(cubin)], capture_output=True, text=True)
    if result.returncode:
        raise ToolError(f"{cubin}: cuobjdump {flag} failed: {result.stderr.strip().splitlines()[0] if result.stderr.strip() else result.returncode}")
    return result.stdout


def resources(res_usage: str) -> dict[str, int]:
    """REG, STACK and LOCAL (bytes a thread; spills land in local memory) from cuobjdump -res-usage."""
    found = {key: re.search(rf"\b{key}:(\d+)", res_usage) for key in ("REG", "STACK", "LOCAL")}
    return {key.lower(): int(match.group(1)) if match else 0 for key, match in found.items()}


# ----------------------------------------------------------------------------------------------
# reading the SASS
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    address: int
    predicate: str  # '' or e.g. '@!P0'
    opcode: str  # with its modifiers, e.g. 'LDG.E.128'
    operands: str

    def is_branch(self) -> bool:
        return self.opcode.split(".")[0] == "BRA"

    def target(self) -> int:
        return int(re.search(r"0x([0-9a-f]+)", self.operands).group(1), 16)


SASS_LINE = re.compile(r"\s+/\*([0-9a-f]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*?);")


def parse_sass(sass: str) -> list[Instruction]:
    """The kernel's instructions, NOPs (alignment padding) left out."""
    instructions = []
    for line in sass.splitlines():
        match = SASS_LINE.match(line)
        if match and match.group(3) != "NOP":
            address, predicate, opcode, operands = match.groups()
            instructions.append(Instruction(int(address, 16), (predicate or "").strip(), opcode, operands))
    return instructions


SLOW_PATH_MAX = 8  # instructions of a div_rn slow path: the call and the moves of its operands


def main_path(instructions: list[Instruction]) -> list[Instruction]:
    """Up to the last EXIT (called subroutines follow it), less div_rn's slow paths: the few
    instructions a conditional forward branch skips when they hold a CALL (a longer skipped
    range with a CALL in it is a branch of the kernel's own, such as a role of amax-quantize)."""
    last_exit = max(i.address for i in instructions if i.opcode == "EXIT")
    path = [i for i in instructions if i.address <= last_exit]
    slow = set()
    for branch in path:
        if branch.is_branch() and branch.predicate and branch.target() > branch.address:
            skipped = [i for i in path if branch.address < i.address < branch.target()]
            if len(skipped) <= SLOW_PATH_MAX and any(i.opcode.startswith("CALL") for i in skipped):
                slow.update(i.address for i in skipped)
    return [i for i in path if i.address not in slow]


def outermost_if_else(path: list[Instruction]) -> tuple[set[int], set[int]] | None:
    """The addresses of the two sides of the path's largest if/else: a conditional forward
    branch to T whose fall-through side ends in an unconditional forward branch past T (the
    other side ends there) or in an unconditional EXIT (the other side runs to the end)."""
    by_address = {i.address: n for n, i in enumerate(path)}
    best = None
    for branch in path:
        if not (branch.is_branch() and branch.predicate and branch.target() in by_address):
            continue
        end_of_then = path[by_address[branch.target()] - 1]
        if end_of_then.predicate:
            continue
        if end_of_then.is_branch() and end_of_then.target() > branch.target():
            end = end_of_then.target()
        elif end_of_then.opcode == "EXIT":
            end = path[-1].address + 1
        else:
            continue
        then = {i.address for i in path if branch.address < i.address < branch.target()}
        other = {i.address for i in path if branch.target() <= i.address < end}
        if best is None or len(then) + len(other) > len(best[0]) + len(best[1]):
            best = (then, other)
    return best


def role_paths(path: list[Instruction], roles: list[Role]) -> dict[str, list[Instruction]]:
    """The main path of each role: with one role, all of it; with two (amax-quantize's ticket
    test), the path through one side of the outermost if/else each, the quantize side being the
    one that stores packed codes."""
    if len(roles) == 1:
        return {roles[0].name: path}
    sides = outermost_if_else(path)
    if sides is None:
        raise ToolError("amax-quantize: no if/else found in the SASS; the kernel's shape changed, update role_paths")
    stores = [any(i.address in side and i.opcode == PACKED_STORE for i in path) for side in sides]
    if stores.count(True) != 1:
        raise ToolError("amax-quantize: not exactly one branch stores packed codes; update role_paths")
    quantize_side, amax_side = sides if stores[0] else sides[::-1]
    return {
        "amax": [i for i in path if i.address not in quantize_side],
        "quantize": [i for i in path if i.address not in amax_side],
    }


def loops(path: list[Instruction]) -> list[list[Instruction]]:
    """Each loop's body: from a backward branch's target to the branch."""
    return [
        [i for i in path if branch.target() <= i.address <= branch.address]
        for branch in path
        if branch.is_branch() and branch.target() <= branch.address
    ]


def load_bytes(instruction: Instruction) -> int:
    """Bytes a vector global load brings a thread (scalars such as the per-tensor scale: 0)."""
    if not instruction.opcode.startswith("LDG"):
        return 0
    width = re.search(r"\.(64|128)\b", instruction.opcode)
    return int(width.group(1)) // 8 if width else 0


def elements_in(instructions: list[Instruction], role: Role, element_bytes: int) -> float:
    """Elements of x these instructions handle, a thread."""
    if role.counts_stores:
        return 16 * sum(i.opcode == PACKED_STORE for i in instructions) / role.packed_stores_a_block
    return sum(load_bytes(i) for i in instructions) / element_bytes


def main_path_runs(path: list[Instruction], role: Role, element_bytes: int, kernel: str) -> dict[int, float]:
    """How often a thread runs each instruction (by address) in one pass: every instruction once,
    then the loops again until the role's elements are handled, the one doing most a trip (an
    unrolled loop) in whole trips first, a remainder loop the rest; a wait loop (NANOSLEEP) not
    at all."""
    bodies = loops(path)
    waiting = {i.address for body in bodies if any(i.opcode == "NANOSLEEP" for i in body) for i in body}
    once = [i for i in path if i.address not in waiting]
    working = sorted(
        (body for body in bodies if elements_in(body, role, element_bytes) > 0),
        key=lambda body: elements_in(body, role, element_bytes), reverse=True,
    )
    handled = elements_in(once, role, element_bytes)
    # The code must agree with the configuration read from the backend, or the counts mean nothing.
    if handled > role.elements or (not working and handled != role.elements):
        raise ToolError(
            f"{kernel} ({role.name}): the code handles {handled:g} elements a thread, the configuration "
            f"{role.elements}; the kernel's shape changed, update scripts/sass_stats.py"
        )
    runs, left = {i.address: 1.0 for i in once}, role.elements - handled
    for n, body in enumerate(working):
        per_trip = elements_in(body, role, element_bytes)
        trips = left / per_trip if n == len(working) - 1 else left // per_trip
        for i in body:
            runs[i.address] += trips
        left -= trips * per_trip
    return runs


# Hopper's 16-lane pipes, which take two cycles a warp instruction where the issue takes one:
# logic, shifts, integer adds, compares, selects and min/max (float ones too) on the ALU pipe;
# integer multiply-adds (ptxas also moves, shifts and adds with IMAD) on the FMA-heavy pipe.
ALU_OPCODES = frozenset(
    "LOP3 SHF IADD3 VIADD ISETP FSETP PLOP3 FMNMX IMNMX VIMNMX VIMNMX3 SEL FSEL LEA PRMT BMSK SGXT IABS MOV".split()
)
IMAD_OPCODES = frozenset(("IMAD", "IMUL"))


def pipe(opcode: str) -> str:
    """"alu", "imad", "uniform" (the scalar datapath, U-prefixed) or "other"."""
    base = opcode.split(".")[0]
    if base.startswith("U"):
        return "uniform"
    return "alu" if base in ALU_OPCODES else "imad" if base in IMAD_OPCODES else "other"


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


def variant_rows(variant: Variant, arch: int, dtype: str, element_bytes: int, cuobjdump_tool: str, keep: Path) -> list[dict]:
    """Compile, keep the files, count: a row a role."""
    asm = compile_variant(variant, arch)
    cubin = keep / f"{variant.name}_{dtype}.cubin"
    cubin.write_bytes(asm["cubin"])
    sass = cuobjdump(cuobjdump_tool, "--dump-sass", cubin)
    used = resources(cuobjdump(cuobjdump_tool, "-res-usage", cubin))
    (keep / f"{variant.name}_{dtype}.sass").write_text(sass)
    (keep / f"{variant.name}_{dtype}.ptx").write_text(asm["ptx"])
    instructions = parse_sass(sass)
    rows = []
    paths = role_paths(main_path(instructions), variant.roles)
    for role in variant.roles:
        path = paths[role.name]
        runs = main_path_runs(path, role, element_bytes, variant.name)
        by_pipe = Counter()
        for i in path:
            by_pipe[pipe(i.opcode)] += runs.get(i.address, 0)
        count = sum(runs.values())
        rows.append({
            "kernel": variant.kernel, "mode": variant.mode, "dtype": dtype, "role": role.name, "config": variant.config,
            "registers": used["reg"], "stack_bytes": used["stack"], "local_bytes": used["local"],
            "sass_instructions": len(instructions), "main_path_instructions": round(count, 1),
            "elements_per_thread": role.elements, "instructions_per_element": round(count / role.elements, 3),
            "alu_per_element": round(by_pipe["alu"] / role.elements, 3), "imad_per_element": round(by_pipe["imad"] / role.elements, 3),
        })
    return rows


HEADERS = {
    "kernel": "kernel", "mode": "mode", "dtype": "dtype", "role": "role", "config": "config (default)",
    "registers": "regs", "stack_bytes": "stack B", "local_bytes": "local B", "sass_instructions": "SASS",
    "main_path_instructions": "main path", "elements_per_thread": "elements/thread", "instructions_per_element": "instr/element",
    "alu_per_element": "ALU/element", "imad_per_element": "IMAD/element",
}


def table(rows: list[dict], arch: int) -> str:
    from tabulate import tabulate

    body = tabulate([[row[key] for key in HEADERS] for row in rows], headers=list(HEADERS.values()), floatfmt="g")
    return f"sm_{arch}, compiled by Triton with its bundled ptxas (no GPU used)\n{body}"


class OneLineParser(argparse.ArgumentParser):
    """argparse, its usage errors in one line (the repository's rule) rather than usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability as one number (default 90, Hopper)")
    parser.add_argument("--kernel", action="extend", nargs="+", choices=KERNELS, help="kernels to compile (default: all)")
    parser.add_argument("--mode", action="extend", nargs="+", choices=names.MODES, help="rounding modes (default: both)")
    parser.add_argument("--dtype", choices=names.FLOAT_DTYPES, default="bf16", help="input dtype (default bf16)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--keep", type=Path, help="write each kernel's KERNEL_MODE_DTYPE.ptx, .sass and .cubin into this directory")
    parser.add_argument("--check-finite", action="store_true", help="the quantize kernels with the NaN/Inf flag of a call given its scale")
    return parser.parse_args(argv)


def output_directory(keep: Path | None, scratch: str) -> Path:
    if keep is None:
        return Path(scratch)
    try:
        keep.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ToolError(f"{keep}: cannot create it ({error.strerror})") from None
    return keep


def run(args: argparse.Namespace) -> list[dict]:
    import tempfile

    _, cuobjdump_tool = nvidia_tools(args.arch)
    from nvfp4cli.api import FLOAT_DTYPES
    from nvfp4cli.kernels import triton_backend

    dtype = FLOAT_DTYPES[args.dtype]
    selected = variants(triton_backend, args.kernel or list(KERNELS), args.mode or list(names.MODES), dtype, args.check_finite)
    with tempfile.TemporaryDirectory() as scratch:
        keep = output_directory(args.keep, scratch)
        return [row for variant in selected for row in variant_rows(variant, args.arch, args.dtype, dtype.itemsize, cuobjdump_tool, keep)]


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        rows = run(args)
    except ToolError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # writing into --keep
        print(f"error: {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else table(rows, args.arch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
