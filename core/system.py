"""What the machine is doing: CPU and memory use, and each GPU's utilisation and memory.

CPU and memory come from ``/proc/stat`` and ``/proc/meminfo`` (Linux; elsewhere they are None).
GPUs come from NVML through nvidia-ml-py (``import pynvml``), an optional dependency
(``pip install 'heur[gpu]'``): without the package, or without a driver (a CPU box), ``gpus``
is empty and ``gpu_note`` says why; nothing raises. Standard library only otherwise, so the
module also runs as a script: ``python core/system.py`` prints one sample.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["Gpu", "Sample", "Sampler"]


@dataclass
class Gpu:
    index: int
    name: str
    util: Optional[float]  # percent of the last sample period a kernel ran
    mem_used: int  # bytes
    mem_total: int
    temperature: Optional[int] = None  # °C


@dataclass
class Sample:
    time: float
    cpu: Optional[float]  # percent of all cores since the previous sample (None on the first)
    cores: int
    mem_used: Optional[int]  # bytes (MemTotal - MemAvailable)
    mem_total: Optional[int]
    load: Optional[tuple[float, float, float]]
    gpus: list[Gpu] = field(default_factory=list)
    gpu_note: str = ""  # why there are no GPUs: no nvidia-ml-py, no driver, none found


def _cpu_times(path: str = "/proc/stat") -> Optional[tuple[int, int]]:
    """(busy, total) jiffies of all cores together, or None where /proc/stat is missing."""
    try:
        with open(path) as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    vals = [int(v) for v in first[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    total = sum(vals[:8])  # guest time is already inside user/nice
    return total - idle, total


def _meminfo(path: str = "/proc/meminfo") -> tuple[Optional[int], Optional[int]]:
    """(used, total) bytes: used = MemTotal - MemAvailable."""
    info: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    info[key] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    except (OSError, ValueError):
        return None, None
    total, avail = info.get("MemTotal"), info.get("MemAvailable")
    if total is None or avail is None:
        return None, total
    return total - avail, total


class Sampler:
    """Samples the machine; keep one and call :meth:`sample` every second or so (the CPU share is
    over the time between two calls). NVML is initialised once, on the first sample."""

    def __init__(self, proc_stat: str = "/proc/stat", proc_meminfo: str = "/proc/meminfo") -> None:
        self._stat, self._meminfo = proc_stat, proc_meminfo
        self._prev: Optional[tuple[int, int]] = None
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._note: Optional[str] = None  # set once NVML was tried

    def _init_nvml(self) -> None:
        try:
            import pynvml
        except ImportError:
            self._note = "GPUs: nvidia-ml-py is not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            n = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        except Exception as e:  # pynvml.NVMLError: no driver or library on a CPU box
            self._note = f"GPUs: none (NVML: {e})"
            return
        self._nvml = pynvml
        self._note = "" if self._handles else "GPUs: none (NVML found no device)"

    def _gpus(self) -> list[Gpu]:
        nv = self._nvml
        out = []
        for i, h in enumerate(self._handles):
            try:
                name = nv.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                try:
                    util: Optional[float] = float(nv.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:  # not supported on some devices (MIG slices)
                    util = None
                try:
                    temp: Optional[int] = int(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
                except Exception:
                    temp = None
                out.append(Gpu(i, name, util, int(mem.used), int(mem.total), temp))
            except Exception as e:  # a device that fell off the bus: say so, go on
                out.append(Gpu(i, f"unreadable ({e})", None, 0, 0))
        return out

    def sample(self) -> Sample:
        if self._note is None:
            self._init_nvml()
        now = self._read_cpu()
        cpu = None
        if now is not None and self._prev is not None and now[1] > self._prev[1]:
            cpu = 100.0 * (now[0] - self._prev[0]) / (now[1] - self._prev[1])
        self._prev = now
        used, total = _meminfo(self._meminfo)
        try:
            load: Optional[tuple[float, float, float]] = os.getloadavg()
        except (OSError, AttributeError):
            load = None
        return Sample(
            time=time.time(),
            cpu=cpu,
            cores=os.cpu_count() or 1,
            mem_used=used,
            mem_total=total,
            load=load,
            gpus=self._gpus() if self._nvml is not None else [],
            gpu_note=self._note or "",
        )

    def _read_cpu(self) -> Optional[tuple[int, int]]:
        return _cpu_times(self._stat)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None


if __name__ == "__main__":  # pragma: no cover - a look at one sample, on any machine
    s = Sampler()
    s.sample()
    time.sleep(0.5)
    print(s.sample())
