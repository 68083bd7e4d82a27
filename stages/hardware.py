"""What the CPU is and whether it computes bfloat16 in hardware, from `/proc/cpuinfo`.

No TensorFlow here: the benchmark names its machine with this too.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# CPU flags of bfloat16 matrix or vector units (Intel AMX, AVX-512 BF16). Without them oneDNN
# emulates bfloat16, which is slower than float32.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpuinfo_field(name: str, cpuinfo: Path = CPUINFO) -> str | None:
    """The first value of a `/proc/cpuinfo` field (None where there is no such file: not Linux)."""
    if not cpuinfo.exists():
        return None
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    return cpuinfo_field("model name", cpuinfo) or platform.processor() or platform.machine()


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name with its family and model numbers. Hypervisors often shorten the name
    (three VMs, a Zen 1, a Zen 3 and a Zen 4, all say "AMD EPYC"), and CPUs that differ there train
    to different figures, so the numbers are what tell such runs apart."""
    family, model = cpuinfo_field("cpu family", cpuinfo), cpuinfo_field("model", cpuinfo)
    name = cpu_model(cpuinfo)
    return f"{name} (family {family}, model {model})" if family and model else name


def cpu_bf16_units(cpuinfo: Path = CPUINFO) -> list[str]:
    """Which of `BF16_FLAGS` the CPU has (empty: bfloat16 would be emulated)."""
    flags = (cpuinfo_field("flags", cpuinfo) or "").split()
    return [flag for flag in BF16_FLAGS if flag in flags]
