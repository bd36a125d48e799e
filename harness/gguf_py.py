"""gguf-py, llama.cpp's reader and writer of GGUF files, imported where a GGUF is read
(model headers, SmolLM2's tokenizer) or written (the random-weight speed models).

It is a dependency of the harness (pyproject.toml). On a machine without a package index
(the GPU machine of docs/measurements.md) llama.cpp's own ``gguf-py/`` on PYTHONPATH serves
as well, which is why it is looked up only when needed.
"""

from __future__ import annotations

from types import ModuleType

from harness.errors import ToolMissing


def load() -> ModuleType:
    """The ``gguf`` module; raises ToolMissing (exit 12) naming what to install when the
    running Python has none."""
    try:
        import gguf
    except ImportError as exc:
        raise ToolMissing(
            "the gguf Python package is missing: `pip install gguf`, or put llama.cpp's "
            "gguf-py/ (build/llama.cpp/gguf-py) on PYTHONPATH"
        ) from exc
    return gguf
