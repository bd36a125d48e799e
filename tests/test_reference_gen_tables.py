"""The generated headers are current, and their literals are the reference's numbers exactly."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reference import gen_tables

ARRAY = re.compile(r"static const (float|double) (\w+)\[(\d+)\] = \{(.*?)\};", re.S)


def parsed_header() -> dict[str, tuple[str, list[str]]]:
    text = (gen_tables.REPO / gen_tables.HEADER).read_text()
    return {
        name: (ctype, [lit.strip() for lit in body.split(",") if lit.strip()])
        for ctype, name, _, body in ARRAY.findall(text)
    }


def test_checked_in_header_is_current() -> None:
    assert gen_tables.main(["--check"]) == 0


@pytest.mark.parametrize("which", [gen_tables.HEADER, gen_tables.METAL_HEADER], ids=str)
def test_check_fails_on_a_changed_value(tmp_path: Path, which: Path) -> None:
    root = tmp_path / "root"
    assert gen_tables.main(["--root", str(root)]) == 0
    assert gen_tables.main(["--check", "--root", str(root)]) == 0
    copy = root / which
    text = copy.read_text()
    # The largest level: the Metal header writes magnitudes, so no sign in front of it.
    first = parsed_header()["tq_levels_b3_n128"][1][-1]
    assert first in text
    changed = first[:-2] + str((int(first[-2]) + 1) % 10) + "f"
    copy.write_text(text.replace(first, changed, 1))
    assert gen_tables.main(["--check", "--root", str(root)]) == 1
    copy.unlink()
    assert gen_tables.main(["--check", "--root", str(root)]) == 1


def test_literals_are_exactly_the_reference_values() -> None:
    header = parsed_header()
    tables = dict(gen_tables.tables())
    assert list(header) == list(tables)
    for name, values in tables.items():
        ctype, literals = header[name]
        assert len(literals) == len(values)
        if values.dtype == np.float32:
            assert ctype == "float" and all(lit.endswith("f") for lit in literals)
            # 9 significant digits sit far from any float32 rounding boundary, so going
            # through a double first gives the float the compiler reads.
            parsed = np.array([float(lit[:-1]) for lit in literals]).astype(np.float32)
        else:
            assert ctype == "double"
            parsed = np.array([float(lit) for lit in literals])
        np.testing.assert_array_equal(parsed, values)
    assert (
        f'#define TQ_TABLES_SHA256 "{gen_tables.tables_sha256()}"'
        in (gen_tables.REPO / gen_tables.HEADER).read_text()
    )


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on PATH")
def test_c_compiler_reads_the_same_bits(tmp_path: Path) -> None:
    tables = dict(gen_tables.tables())
    dumps = "\n".join(f"    dump({name}, sizeof {name});" for name in tables)
    program = tmp_path / "dump.c"
    program.write_text(
        '#include <stdio.h>\n#include "turboquant_tables.h"\n'
        "static void dump(const void *p, size_t n) {\n"
        '    for (size_t i = 0; i < n; i++) printf("%02x", ((const unsigned char *)p)[i]);\n'
        '    printf("\\n");\n}\n'
        f"int main(void) {{\n{dumps}\n    return 0;\n}}\n"
    )
    exe = tmp_path / "dump"
    include = (gen_tables.REPO / gen_tables.HEADER).parent
    subprocess.run(
        ["cc", "-std=c11", "-Wall", "-Werror", "-I", str(include),
         str(program), "-o", str(exe)],
        check=True,
    )  # fmt: skip
    lines = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split()
    for line, values in zip(lines, tables.values(), strict=True):
        assert bytes.fromhex(line) == values.astype(values.dtype.newbyteorder("<")).tobytes()
