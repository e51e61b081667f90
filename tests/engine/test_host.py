"""engine.runtime.host: reading the CPU's bf16 support from /proc/cpuinfo's flags."""

from __future__ import annotations

import pytest

from engine.runtime.host import cpu_has_native_bf16

ZEN4 = "fpu vme sse4_2 avx2 avx512f avx512bw avx512vl avx512_bf16 avx512_vnni"
SAPPHIRE_RAPIDS = "fpu sse4_2 avx2 avx512f avx512bw amx_bf16 amx_tile amx_int8"
SKYLAKE = "fpu sse4_2 avx2 avx512f avx512bw avx512vl avx512dq"


@pytest.mark.parametrize(
    ("flags", "native"), [(ZEN4, True), (SAPPHIRE_RAPIDS, True), (SKYLAKE, False)]
)
def test_bf16_support_follows_the_cpu_flags(tmp_path, flags, native):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_has_native_bf16(str(info)) is native


def test_unreadable_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_has_native_bf16(str(tmp_path / "absent")) is False
