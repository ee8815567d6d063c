"""
What machine this runs on: CPU model, the vector extensions that decide backend speed, cores, GPU.

Benchmarks print it beside every speed figure and caches key compiled artefacts and backend
choices on it, because the same model runs at very different speeds on hosts with and without
bf16/VNNI/AMX units.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from functools import lru_cache

# The extensions that change which CPU backend/precision is fastest.
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@lru_cache(maxsize=1)
def _cpuinfo() -> list[tuple[str, str]]:
    try:
        with open("/proc/cpuinfo") as f:
            return [
                (name.strip(), value.strip())
                for name, _, value in (line.partition(":") for line in f)
            ]
    except OSError:
        return []


def cpu_model() -> str:
    """Return the CPU model name, or the platform's processor string where /proc is absent."""
    for name, value in _cpuinfo():
        if name == "model name":
            return value
    return platform.processor() or "unknown CPU"


def cpu_flags() -> tuple[str, ...]:
    """Return those of SPEED_FLAGS that this CPU has."""
    flags: set[str] = set()
    for name, value in _cpuinfo():
        if name == "flags":
            flags = set(value.split())
            break
    return tuple(f for f in SPEED_FLAGS if f in flags)


def physical_core_count() -> int:
    """Physical cores this process may run on (hyper-threads share a core's vector units)."""
    allowed = os.sched_getaffinity(0)
    cores: set[tuple[str, str]] = set()
    cpu = physical = None
    for name, value in _cpuinfo():
        if name == "processor":
            cpu, physical = int(value), "0"
        elif name == "physical id":
            physical = value
        elif name == "core id" and cpu in allowed:
            cores.add((physical, value))
    return max(1, min(len(cores) or len(allowed), len(allowed)))


def gpu() -> str | None:
    """Return the NVIDIA GPU names, or None where there is none (nvidia-smi, no CUDA import)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return ", ".join(out.splitlines()) or None


def describe() -> str:
    """One line for benchmark output: CPU, flags, cores, GPU."""
    flags = " ".join(cpu_flags()) or "none of " + "/".join(SPEED_FLAGS)
    return (
        f"{cpu_model()}; {len(os.sched_getaffinity(0))} CPUs usable"
        f" ({physical_core_count()} physical cores); flags: {flags}; GPU: {gpu() or 'none'}"
    )
