"""llama.cpp, loaded the way assay loads it: the OpenAI-compatible server and in-process models.

llama.cpp's CPU backend places weights in "extra" buffer types when the CPU offers them (AMX
tiles, repacked layouts). On a CPU with AMX (Intel Sapphire Rapids and later) the AMX matrix
multiply of llama-cpp-python 0.3.36 crashes the process (SIGSEGV) as soon as a batch holds more
than one token, i.e. on every real prompt (upstream: ggml-org/llama.cpp#20824; reproduced here on
SmolLM2-135M Q4_1). The plain CPU buffers are correct on every CPU, and a 135M-parameter model
loses little without the repacked layouts, so every llama.cpp model assay loads uses them, unless
``ASSAY_LLAMA_EXTRA_BUFFERS=1`` asks for llama.cpp's default.

``python -m assay.evaluate.llama_server ARGS`` is ``python -m llama_cpp.server ARGS`` with that
setting applied.
"""

from __future__ import annotations

import os
import runpy

_applied = False


def use_plain_buffers() -> None:
    """Make llama.cpp's default model parameters load weights into plain CPU buffers (idempotent)."""
    global _applied
    if _applied or os.environ.get("ASSAY_LLAMA_EXTRA_BUFFERS") == "1":
        return
    import llama_cpp.llama_cpp as lib

    default_params = lib.llama_model_default_params

    def plain_buffer_params():
        params = default_params()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = plain_buffer_params  # what llama_cpp.Llama calls
    _applied = True


def main() -> None:
    use_plain_buffers()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
