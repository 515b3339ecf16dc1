"""The machine a benchmark ran on, as a short file-name-safe tag (shared by the bench scripts)."""
from __future__ import annotations

import os
import platform


def cpu_tag() -> str:
    """`cpu<usable cores>-<CPU model>`, e.g. `cpu2-AMD_EPYC_7B13`: result files name the machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu{n}-" + "".join(c if c.isalnum() else "_" for c in cpu)[:40]
