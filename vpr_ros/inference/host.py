"""
What this CPU is, for cache keys of host-specific artefacts and for benchmark headers.

Compiled kernels (torch AOTInductor packages) and measured backend choices are only valid
on the CPU they were made on: its model name and its vector/matrix instruction sets.
"""

from __future__ import annotations

import platform
from functools import lru_cache

# Instruction sets that decide which kernels run fast: bf16 (AVX512-BF16, AMX-BF16),
# int8 dot products (AVX512-VNNI, AVX-VNNI, AMX-INT8).
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """First processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """Return the CPU's model name, e.g. 'AMD EPYC 9654 96-Core Processor'."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_speed_flags() -> list[str]:
    """Return those of SPEED_FLAGS this CPU has."""
    flags = set(_cpuinfo().get("flags", "").split())
    return [flag for flag in SPEED_FLAGS if flag in flags]


def cpu_key() -> dict:
    """Return the fields a host-specific cache entry is keyed by."""
    return {"cpu_model": cpu_model(), "cpu_flags": cpu_speed_flags()}
