"""Instructions per trip of the innermost loops of a CUDA kernel, from its disassembly.

A static count of the SASS one loop trip issues (warp instructions; a predicated-off one
still issues, a branch not taken is not skipped in the count), for comparing variants of
the flash-attention decode kernel without a GPU: ``nvdisasm -c KERNEL.cubin`` (nvdisasm from
the CUDA toolkit or the ``nvidia-cuda-nvdisasm`` wheel) writes lines such as
``/*0a40*/  @!P2 LDGSTS.E.BYPASS.128 [R69], desc[UR14][R64.64] ;`` and labels ``.L_x_14:``;
a loop is a backward branch to a label, innermost when it holds no other. Loops with
branches inside count every path, so the count bounds a trip from above. Numbers in
docs/measurements.md (2026-12-01) come from this over ``nvcc -cubin -arch=sm_90`` of one
kernel instance.

Usage: ``python kernels/cuda/tools/sass_loops.py KERNEL.sass`` prints, per innermost loop,
its first and last instruction index, its instruction count and its ten most frequent
opcodes. Raises OSError when the file cannot be read.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_LABEL = re.compile(r"\s*(\.L_x_\d+):")
_INSTR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH = re.compile(r"BRA\s+(?:`\()?(\.L_x_\d+)")
_PREDICATE = re.compile(r"^@!?U?P\w+\s+")


def innermost_loops(sass: str) -> list[tuple[int, int, list[str]]]:
    """The innermost loops of one disassembly: (first index, last index, instructions),
    indices counting instructions from the start of the text, in order of appearance."""
    instructions: list[str] = []
    labels: dict[str, int] = {}
    for line in sass.splitlines():
        if m := _LABEL.match(line):
            labels[m.group(1)] = len(instructions)
        elif m := _INSTR.match(line):
            instructions.append(m.group(2))
    loops = []
    for i, text in enumerate(instructions):
        m = _BRANCH.search(text)
        if m and labels.get(m.group(1), i + 1) <= i:
            loops.append((labels[m.group(1)], i))

    def holds_another(s: int, e: int) -> bool:
        return any(s <= a and b <= e and (a, b) != (s, e) for a, b in loops)

    return [(s, e, instructions[s : e + 1]) for s, e in loops if not holds_another(s, e)]


def opcodes(instructions: list[str]) -> Counter[str]:
    """How often each opcode (with its modifiers, without the predicate) occurs."""
    return Counter(_PREDICATE.sub("", t).split()[0] for t in instructions)


def main(argv: list[str]) -> int:
    """Print every innermost loop of the disassembly named in argv[1]; 2 without one."""
    if len(argv) != 2:
        print("usage: sass_loops.py KERNEL.sass (from nvdisasm -c)", file=sys.stderr)
        return 2
    for first, last, body in innermost_loops(Path(argv[1]).read_text()):
        top = ", ".join(f"{op} {n}" for op, n in opcodes(body).most_common(10))
        print(f"loop {first}-{last}: {len(body)} instructions ({top})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
