"""The Metal glue of patches/0006, checked without a Mac.

No Metal compiler runs here, so these tests check what can be checked from the patched
sources: every kernel the host side can ask for a turbo type exists, with the template
arguments its name promises; every kernel source is a library kind; and the embedded
library's concatenation (the CMake rule, replayed) inlines the TurboQuant headers and leaves
no include behind. The math itself is checked bit for bit by parity (the shim).
"""

from __future__ import annotations

import re
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

from harness.config import REPO_ROOT, Paths

TURBO_BLOCK = {f"turbo{b}": 128 for b in (2, 3, 4, 5)} | {f"turbo{b}_64": 64 for b in (2, 3, 4, 5)}
HOST_NAME = re.compile(
    r'template \[\[host_name\("(\w+)"\)\]\]\s+kernel\s+\w+\s+(\w+)<(.*?)>;\n', re.S
)
TURBO_HEADERS = ["turboquant_metal_tables.h", "turboquant_metal.h", "turboquant_metal_ggml.h"]


@pytest.fixture(scope="module")
def metal_dir() -> Path:
    """ggml-metal of the work checkout with the patch series applied."""
    subprocess.run(
        [sys.executable, "-m", "harness", "patches", "apply"], check=True, capture_output=True
    )
    return Paths.default().checkout / "ggml" / "src" / "ggml-metal"


@pytest.fixture(scope="module")
def instantiations(metal_dir: Path) -> dict[str, str]:
    """host name -> template arguments, over every kernel source."""
    found: dict[str, str] = {}
    for source in sorted((metal_dir / "kernels").glob("*.metal")):
        for name, _, args in HOST_NAME.findall(source.read_text()):
            # (Upstream instantiates some names twice under #if; ours must be unique.)
            assert "turbo" not in name or name not in found, f"{name} instantiated twice"
            found[name] = " ".join(args.split())
    return found


def _turbo_args(type_name: str) -> tuple[str, str]:
    """What the template arguments must name for this type: its block and its <bits, n>."""
    return f"block_{type_name}", f"<{type_name[5]}, {TURBO_BLOCK[type_name]}>"


def _fa_vec_cases() -> list[tuple[str, str, int]]:
    """(K type, V type, head) that ggml_metal_device_supports_fa_turbo admits."""
    cases = []
    for head in (64, 128, 256):
        block = 64 if head == 64 else 128
        turbo = [t for t, b in TURBO_BLOCK.items() if b == block]
        cases += [(k, v, head) for k, v in product(["f16", "q8_0", *turbo], turbo)]
    return cases


def test_every_turbo_kernel_the_host_asks_for_exists(instantiations: dict[str, str]) -> None:
    for t in TURBO_BLOCK:
        block, bits_n = _turbo_args(t)
        expected = {
            f"kernel_get_rows_{t}": "dequantize_turbo",
            f"kernel_cpy_f32_{t}": "quantize_turbo",
            f"kernel_cpy_{t}_f32": "dequantize_turbo",
            f"kernel_cpy_{t}_f16": "dequantize_turbo",
            f"kernel_set_rows_f32_i32_{t}": "quantize_turbo",
            f"kernel_set_rows_f32_i64_{t}": "quantize_turbo",
            f"kernel_flash_attn_ext_kv_{t}_f16": "dequantize_turbo",
        }
        for name, fn in expected.items():
            assert name in instantiations, f"no Metal kernel {name}"
            args = instantiations[name]
            assert f"{block}," in args and f"{fn}{bits_n}" in args, f"{name}: {args}"
        assert ("half4x4" in instantiations[f"kernel_cpy_{t}_f16"]) and (
            "float4x4" in instantiations[f"kernel_cpy_{t}_f32"]
        )


def test_flash_attention_vec_kernels_cover_the_supported_pairs(
    instantiations: dict[str, str],
) -> None:
    names = set()
    for k, v, head in _fa_vec_cases():
        pair = k if k == v else f"{k}_{v}"
        name = f"kernel_flash_attn_ext_vec_{pair}_dk{head}_dv{head}"
        names.add(name)
        assert name in instantiations, f"no Metal kernel {name}"
        args = [a.strip() for a in re.split(r",(?![^<]*>)", instantiations[name])]
        # FA_TYPES, K block, nl_k, deq_k, V block, nl_v, deq_v, DK, DV, NE
        k_block, k_nl, k_deq, v_block, v_nl, v_deq, dk, dv = args[1:9]
        assert (int(dk), int(dv)) == (head, head)
        block, bits_n = _turbo_args(v)
        assert (v_block, v_deq) == (block, f"dequantize_turbo_t4{bits_n}")
        assert int(v_nl) == TURBO_BLOCK[v] // 4
        if k in TURBO_BLOCK:
            block, bits_n = _turbo_args(k)
            assert (k_block, int(k_nl), k_deq) == (
                block,
                TURBO_BLOCK[k] // 4,
                f"dequantize_turbo_t4{bits_n}",
            )
        else:
            assert (k_block, k_nl) == {"f16": ("half4", "1"), "q8_0": ("block_q8_0", "8")}[k]
        # The baseline NE of ggml-metal-tuning.cpp (the host asks for the baseline for turbo).
        assert int(args[9]) == {64: 2, 128: 1, 256: 1}[head]
    turbo_vec = {n for n in instantiations if n.startswith("kernel_flash_attn_ext_vec_")}
    turbo_vec = {n for n in turbo_vec if "turbo" in n}
    assert turbo_vec == names, "instantiated turbo vec kernels the host never asks for"


def test_host_admits_exactly_the_instantiated_flash_attention_cases(metal_dir: Path) -> None:
    device = (metal_dir / "ggml-metal-device.m").read_text()
    body = device[device.index("static bool ggml_metal_device_supports_fa_turbo") :]
    body = body[: body.index("\n}\n")]
    # The rule the vec test enumerates: V turbo, K f16/q8_0/turbo, block 64 at head 64 and
    # 128 at heads 128 and 256.
    assert "!ggml_metal_type_is_turbo(tv)" in body
    assert "tk != GGML_TYPE_F16 && tk != GGML_TYPE_Q8_0 && !ggml_metal_type_is_turbo(tk)" in body
    assert "d == 64 ? 64 : (d == 128 || d == 256) ? 128 : 0" in body
    ops = (metal_dir / "ggml-metal-ops.cpp").read_text()
    assert "use_sparse || is_turbo" in ops  # baseline configuration for turbo


def test_every_kernel_source_is_a_library_kind(metal_dir: Path) -> None:
    cmake = (metal_dir / "CMakeLists.txt").read_text()
    sources = re.findall(r"^\s+kernels/(\w+)\.metal$", cmake, flags=re.M)
    assert "fa_vec_turbo" in sources and "quantize" in sources
    kinds = re.findall(
        r"^\s+X\(\w+,\s*(\w+)\)", (metal_dir / "ggml-metal-device.m").read_text(), flags=re.M
    )
    assert sorted(set(sources)) == sorted(kinds)


def _embed(metal_dir: Path, kind: str) -> str:
    """The embedded source of one kind, as the CMake rule of ggml-metal/CMakeLists.txt
    concatenates it (steps 1 and 2: headers this source includes, then the source, with the
    internal includes deleted)."""
    kernels = metal_dir / "kernels"
    src = (kernels / f"{kind}.metal").read_text()
    headers = [kernels / "common.h"]
    for include, files in (
        ("dequantize.h", [kernels / "dequantize.h"]),
        ("quantize.h", [kernels / "quantize.h"]),
        ("turboquant_metal_ggml.h", [REPO_ROOT / "kernels" / "metal" / h for h in TURBO_HEADERS]),
        ("fa_common.metal", [kernels / "fa_common.metal"]),
        ("fa_vec_common.metal", [kernels / "fa_vec_common.metal"]),
    ):
        if f'#include "{include}"' in src:
            headers += files
    text = "".join(h.read_text() for h in headers) + src
    drop = re.compile(
        r'^.*(#include "(common\.h|dequantize\.h|quantize\.h|fa_common\.metal|'
        r'fa_vec_common\.metal)"|#include "turboquant_metal|#pragma once).*\n',
        flags=re.M,
    )
    return drop.sub("", text)


@pytest.mark.parametrize("kind", ["quantize", "fa_aux", "fa_vec_turbo"])
def test_embedded_library_inlines_the_turbo_headers(metal_dir: Path, kind: str) -> None:
    cmake = (metal_dir / "CMakeLists.txt").read_text()
    assert '-e "/\\#include \\"turboquant_metal/d"' in cmake
    assert 'REGEX "#include \\"turboquant_metal_ggml\\\\.h\\""' in cmake
    text = _embed(metal_dir, kind)
    left = re.findall(r'#include "([^"]+)"', text)
    # ggml-common.h (an #else branch) and ggml-metal-impl.h are steps 3 and 4 of the rule.
    assert set(left) <= {"ggml-common.h", "ggml-metal-impl.h"}, left
    # Each header comes once, before its first use.
    for marker in ("TURBOQUANT_METAL_TABLES_H", "TURBOQUANT_METAL_H", "TURBOQUANT_METAL_GGML_H"):
        assert text.count(f"#define {marker}\n") == 1
    assert text.index("inline float tq_metal_level(") < text.index("inline void tq_dequantize_4(")
    assert text.index("struct block_tq") < text.index("block_turbo3")
    assert text.index("#define TURBOQUANT_METAL_GGML_H") < text.index("[[host_name(")


KERNEL_TEMPLATE = re.compile(r"template\s*<((?:[^<>]|<[^<>]*>)*)>\s*kernel void (\w+)\(", re.S)
# What the turbo instantiations need besides turboquant_metal_ggml.h, with upstream's
# signatures (the test checks they are still upstream's): half vectors that take a float4
# and accept float elements, as MSL's do, and the K types a turbo V may come with.
PRELUDE = """
#include "shim/metal_shim.h"
struct half_elem { float f; half_elem &operator=(float x) { f = x; return *this; } };
struct half4 {
    half_elem v[4];
    half4() = default;
    explicit half4(float4 x) : v{{x[0]}, {x[1]}, {x[2]}, {x[3]}} {}
    half_elem &operator[](int i) { return v[i]; }
};
struct half4x4 { half4 c[4]; half4 &operator[](int i) { return c[i]; } };
struct block_q8_0 { half d; signed char qs[32]; };
template <typename type4>
void dequantize_f16_t4(device const half4 * src, short il, thread type4 & reg) {}
template <typename type4>
void dequantize_q8_0_t4(device const block_q8_0 *xb, short il, thread type4 & reg) {}
#define OP_FLASH_ATTN_EXT_VEC_NQPSG 1
#define OP_FLASH_ATTN_EXT_VEC_NCPSG 32
#include "turboquant_metal_ggml.h"
"""


def test_turbo_instantiations_compile_against_the_kernel_templates(
    metal_dir: Path, tmp_path: Path
) -> None:
    """Each turbo host_name line, replayed as a C++ explicit instantiation of a function with
    the kernel template's own parameter list (read from the patched sources), compiled with
    the adapters through the shim: the block types exist, the argument count and kinds fit,
    and each adapter converts to the function-pointer type the template asks for (its
    type4/type4x4 deduced as half4, float4x4, ...), which instantiates the adapter's body."""
    kernels = metal_dir / "kernels"
    dequantize = (kernels / "dequantize.h").read_text()
    for signature in (
        "void dequantize_f16_t4(device const half4 * src, short il, thread type4 & reg)",
        "void dequantize_q8_0_t4(device const block_q8_0 *xb, short il, thread type4 & reg)",
    ):
        assert signature in dequantize
    heads: dict[str, str] = {}
    lines = []
    for source in sorted(kernels.glob("*.metal")):
        text = re.sub(r"//[^\n]*", "", source.read_text())
        for params, name in KERNEL_TEMPLATE.findall(text):
            heads[name] = " ".join(params.split())
        macro = re.search(r"#define FA_TYPES \\\n(?:.*\\\n)*.*\n", text)
        for host, kernel, args in HOST_NAME.findall(text):
            if "turbo" in host:
                lines.append((source.name, macro.group(0) if macro else "", kernel, args))
    assert len(lines) == 7 * len(TURBO_BLOCK) + len(_fa_vec_cases())
    used = sorted({kernel for _, _, kernel, _ in lines})
    assert set(used) <= set(heads), set(used) - set(heads)
    program = [PRELUDE]
    program += [f"template <{heads[k]}> void {k}() {{}}" for k in used]
    for source, macro, kernel, args in lines:
        program.append(f'#line 1 "{source}"\n{macro}template void {kernel}<{args}>();')
        program.append("#undef FA_TYPES")
    unit = tmp_path / "instantiations.cpp"
    unit.write_text("\n".join(program) + "\n")
    out = subprocess.run(
        ["g++", "-std=c++17", "-fsyntax-only", "-Wno-unused-parameter",
         "-I", str(REPO_ROOT / "kernels" / "metal"), str(unit)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
