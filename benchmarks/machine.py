"""The machine a benchmark runs on, and its load, worded the same way in every benchmark's report.

The benchmarks often run on shared machines, so each results file states the machine (CPU, logical CPUs,
torch and Python versions) and the load before and after the measurements; absolute times are read against
them. The scripts in ``benchmarks/`` import these helpers (``from machine import uptime``) instead of each
formatting its own.
"""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def cpu() -> str:
    """The processor's name (Linux: ``/proc/cpuinfo``'s model name) and the widest vector instructions torch uses
    on it (``AVX512``, ``AVX2``, ...: the same code rounds and runs differently with each), or the machine type
    (e.g. ``x86_64``) where the platform gives no name."""
    name = ""
    try:
        with open("/proc/cpuinfo") as info:
            name = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def _loadavg() -> tuple[float, float, float] | None:
    """The 1, 5 and 15 min load averages, or None where the operating system has none."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def load_average() -> str:
    """The 1 / 5 / 15 min load averages as ``"a / b / c"``, or ``"n/a"``."""
    load = _loadavg()
    return "n/a" if load is None else " / ".join(f"{x:.2f}" for x in load)


def uptime() -> str:
    """The ``uptime`` command's line; else ``"load average: a, b, c"``; else ``"n/a"``."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        load = _loadavg()
        return "n/a" if load is None else "load average: " + ", ".join(f"{x:.2f}" for x in load)


def describe(threads: int | None = None) -> str:
    """One line: CPU, logical CPUs, torch version (and its intra-op ``threads`` if given), Python version."""
    used = "" if threads is None else f" ({threads} intra-op thread{'' if threads == 1 else 's'})"
    return (f"{cpu()}, {os.cpu_count()} logical CPUs; torch {torch.__version__}{used}, "
            f"Python {platform.python_version()}")
