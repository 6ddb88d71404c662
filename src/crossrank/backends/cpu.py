"""The CPU's model and feature flags, read from /proc/cpuinfo, and what they mean for int8 kernels."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BFLOAT16_FLAGS",
    "INT8_DOT_PRODUCT_FLAGS",
    "bfloat16_instructions",
    "cpu_flags",
    "cpu_model",
    "int8_needs_7bit_weights",
]

# x86 instructions that multiply and sum uint8 x int8 into int32 in one step (VNNI, AMX).
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Instructions that compute with bfloat16 operands: x86's AVX-512-BF16, AMX-BF16 and AVX-NE-CONVERT, Arm's BF16.
BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "avx_ne_convert", "bf16"})
_X86 = frozenset({"x86_64", "amd64", "i386", "i686"})


def _cpuinfo(*prefixes: str) -> str | None:
    """The value of the first /proc/cpuinfo line starting with one of ``prefixes``; ``None`` where unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(prefixes):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``avx2``, ``amx_bf16``, ...) from /proc/cpuinfo; empty where unknown."""
    return set((_cpuinfo("flags", "Features") or "").split())


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, e.g. ``Intel(R) Xeon(R) Platinum 8480+``."""
    return _cpuinfo("model name")


def bfloat16_instructions(flags: set[str]) -> bool:
    """Whether the CPU has instructions for bfloat16 arithmetic (``BFLOAT16_FLAGS``); ``True`` where its flags are
    unknown. Without them torch converts every bfloat16 operand to float32 and back: 6-7x slower than float32 on
    an AVX2-only CPU (BENCHMARKS.md), never a gain worth timing."""
    return not flags or bool(flags & BFLOAT16_FLAGS)


def int8_needs_7bit_weights(flags: set[str], machine: str) -> bool:
    """Whether int8 weights must keep to 7 bits for onnxruntime's kernels on this CPU to be exact.

    Without VNNI, onnxruntime multiplies uint8 activations by int8 weights with AVX2's VPMADDUBSW,
    which adds two products into a saturating int16: 255 x 127 x 2 overflows, 255 x 63 x 2 does not.
    Measured on the real English model (AVX2-only CPU): Spearman 0.9918 to float32 and NDCG@10
    -0.76 points with 8-bit weights, 0.9929 and -0.28 with 7-bit ones. Other architectures' int8
    kernels do not saturate; an x86 CPU whose flags cannot be read is treated as one without VNNI.
    """
    return machine.lower() in _X86 and not flags & INT8_DOT_PRODUCT_FLAGS
