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


SPEC_ROW = re.compile(
    r"^\| (turbo\d(?:_64)?) \| (\d+) \| `([0-9a-f]{8})` \| (?:`([0-9a-f]{16})`|-) \|$", re.M
)


def test_spec_numbers_are_the_header_numbers() -> None:
    """SPEC.md's hex tables, read back, are the C header's literals: every level's float32,
    every midpoint's double, and TQ_TABLES_SHA256 (issue 11: an implementer needs the bits)."""
    spec = (gen_tables.REPO / gen_tables.SPEC).read_text()
    header = parsed_header()
    rows = SPEC_ROW.findall(spec)
    assert len(rows) == sum(2 * (1 << b) for b in gen_tables.TABLE_BITS)  # both block sizes
    for name, k, level_hex, mid_hex in rows:
        bits, n = int(name[5]), 64 if name.endswith("_64") else 128
        levels = header[f"tq_levels_b{bits}_n{n}"][1]
        mids = header[f"tq_mid_b{bits}_n{n}"][1]
        level = np.uint32(int(level_hex, 16)).view(np.float32)
        assert level == np.float32(levels[int(k)].rstrip("f")), (name, k)
        if int(k) < len(mids):
            assert np.uint64(int(mid_hex, 16)).view(np.float64) == float(mids[int(k)]), (name, k)
        else:
            assert mid_hex == "" and int(k) == len(levels) - 1
    digest = re.search(
        r'#define TQ_TABLES_SHA256 "([0-9a-f]{64})"',
        (gen_tables.REPO / gen_tables.HEADER).read_text(),
    )
    assert digest and f"`TQ_TABLES_SHA256` = `{digest.group(1)}`" in spec


def test_spec_without_its_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="lacks the lines"):
        gen_tables.render_spec("# a spec with no generated section\n")


@pytest.mark.parametrize(
    "which", [gen_tables.HEADER, gen_tables.METAL_HEADER, gen_tables.SPEC], ids=str
)
def test_check_fails_on_a_changed_value(tmp_path: Path, which: Path) -> None:
    root = tmp_path / "root"
    assert gen_tables.main(["--root", str(root)]) == 0
    assert gen_tables.main(["--check", "--root", str(root)]) == 0
    copy = root / which
    text = copy.read_text()
    # The largest level: the Metal header writes magnitudes, so no sign in front of it;
    # SPEC.md writes its bits.
    first = parsed_header()["tq_levels_b3_n128"][1][-1]
    if which == gen_tables.SPEC:
        first = f"`{int(np.float32(first.rstrip('f')).view(np.uint32)):08x}`"
        changed = first[:-2] + ("0" if first[-2] != "0" else "1") + "`"
    else:
        changed = first[:-2] + str((int(first[-2]) + 1) % 10) + "f"
    assert first in text
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
