"""What the host CPU can do, for choosing settings (``veritas bench`` picks its precision here)."""

from __future__ import annotations


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (AVX512-BF16 or AMX-BF16; Linux).

    oneDNN then runs bf16 convolutions and matmuls natively: on the development CPU
    (AMD EPYC with AVX512-BF16, one thread) XceptionNet's forward + backward at batch 8
    took 115 ms per face in bf16 autocast against 412 ms in fp32, and Detect-ResNet50's
    forward 44 against 81 ms (``benchmarks/README.md``). Without them oneDNN emulates bf16
    with fp32 instructions, which is slower than fp32 itself. False where ``cpuinfo``
    cannot be read (other systems).
    """
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
