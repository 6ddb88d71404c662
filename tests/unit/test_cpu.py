"""Which CPUs need 7-bit int8 weights: x86 without an int8 dot-product instruction (VNNI, AMX)."""

from __future__ import annotations

import platform

import pytest

from crossrank.backends.cpu import cpu_flags, cpu_model, int8_needs_7bit_weights


@pytest.mark.parametrize(
    ("flags", "machine", "seven_bit"),
    [
        ({"avx2", "fma"}, "x86_64", True),  # AVX2-only: VPMADDUBSW saturates
        ({"avx2", "avx512f", "avx512bw"}, "x86_64", True),  # AVX-512 without VNNI: same instruction
        ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", False),
        ({"avx2", "avx_vnni"}, "x86_64", False),  # Alder Lake and later client CPUs
        ({"avx2", "avx512_vnni", "amx_tile", "amx_int8"}, "x86_64", False),
        ({"avx2"}, "AMD64", True),  # Windows spells it so
        (set(), "x86_64", True),  # flags unknown: assume no VNNI
        ({"asimd", "asimddp"}, "aarch64", False),
        (set(), "arm64", False),
    ],
)
def test_int8_needs_7bit_weights(flags: set[str], machine: str, seven_bit: bool) -> None:
    assert int8_needs_7bit_weights(flags, machine) is seven_bit


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/cpuinfo")
def test_this_cpu_is_read_from_proc_cpuinfo() -> None:
    flags = cpu_flags()
    assert flags, "no flags line in /proc/cpuinfo"
    if platform.machine() == "x86_64":
        assert "sse2" in flags  # every x86-64 CPU has it
        assert cpu_model()
