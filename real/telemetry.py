"""GPU telemetry through NVML (nvidia-ml-py), optional: without it every reading is NaN.

Energy comes from the board's cumulative energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
millijoules since driver load), read before and after a timed loop; clocks are read right after
the loop, while the GPU is still at its working clock.

NVML numbers the GPUs of the host whatever CUDA_VISIBLE_DEVICES says, while torch's device i is
the i-th GPU that variable lists: `nvml_handle_spec` maps one to the other (before 2026-11-26
09:30 UTC the harness read NVML device i, so a run under CUDA_VISIBLE_DEVICES=3 recorded GPU 0's
clocks and power).
"""

from __future__ import annotations

import math
import os

try:
    import pynvml
except ImportError:  # CPU machines, or no nvidia-ml-py
    pynvml = None


def nvml_handle_spec(device_index: int, visible: str | None) -> tuple[str, int | str]:
    """("index", i) or ("uuid", "GPU-...") of the GPU that CUDA device `device_index` is, given
    CUDA_VISIBLE_DEVICES (None or empty: all GPUs in NVML's order).
    E.g. (0, "3") -> ("index", 3); (1, "2,5") -> ("index", 5); (0, "GPU-ab12") -> ("uuid", "GPU-ab12");
    (0, None) -> ("index", 0)."""
    entries = [v.strip() for v in (visible or "").split(",") if v.strip()]
    if not entries or device_index >= len(entries):
        return "index", device_index
    entry = entries[device_index]
    return ("index", int(entry)) if entry.isdigit() else ("uuid", entry)


class Telemetry:
    """NVML readings of one GPU: by `pci_bus_id` ('00000000:08:00.0', the CUDA device's, which
    names the same board whatever CUDA_VISIBLE_DEVICES renumbers) when given and found, else by
    NVML index `device_index`."""

    def __init__(self, device_index: int = 0, pci_bus_id: str | None = None):
        self.handle = None
        if pynvml is None:
            return
        try:
            pynvml.nvmlInit()
        except Exception:  # no driver / no GPU: NVMLError subclasses
            return
        if pci_bus_id:
            try:
                self.handle = pynvml.nvmlDeviceGetHandleByPciBusId(pci_bus_id.encode())
                return
            except Exception:
                pass
        try:  # the board CUDA device `device_index` is under CUDA_VISIBLE_DEVICES
            kind, key = nvml_handle_spec(device_index, os.environ.get("CUDA_VISIBLE_DEVICES"))
            self.handle = (pynvml.nvmlDeviceGetHandleByIndex(key) if kind == "index"
                           else pynvml.nvmlDeviceGetHandleByUUID(key))
        except Exception:
            self.handle = None

    @property
    def available(self) -> bool:
        return self.handle is not None

    def _read(self, fn, *args, scale=1.0) -> float:
        if self.handle is None:
            return math.nan
        try:
            return float(fn(self.handle, *args)) * scale
        except Exception:
            return math.nan

    def energy_j(self) -> float:
        return self._read(pynvml.nvmlDeviceGetTotalEnergyConsumption, scale=1e-3) if pynvml else math.nan

    def power_w(self) -> float:
        return self._read(pynvml.nvmlDeviceGetPowerUsage, scale=1e-3) if pynvml else math.nan

    def sm_clock_mhz(self) -> float:
        return self._read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM) if pynvml else math.nan

    def mem_clock_mhz(self) -> float:
        return self._read(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM) if pynvml else math.nan

    def temperature_c(self) -> float:
        return self._read(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU) if pynvml else math.nan

    def performance_state(self) -> float:
        """The GPU's performance state (0 = P0, the highest), NaN where unreadable."""
        return self._read(pynvml.nvmlDeviceGetPerformanceState) if pynvml else math.nan

    def clock_event_reasons(self) -> float:
        """NVML's bitmask of why the clocks are where they are (idle, application setting, power
        cap, thermal...: nvmlClocksEventReason*; the older name 'throttle reasons'), NaN where unreadable."""
        if pynvml is None:
            return math.nan
        fn = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            pynvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        return self._read(fn) if fn else math.nan

    def static_info(self) -> dict:
        """Name, driver, limits and max clocks, for env.json."""
        if self.handle is None:
            return {}
        info = {}
        for key, fn, args, scale in [
            ("power_limit_w", pynvml.nvmlDeviceGetEnforcedPowerLimit, (), 1e-3),
            ("max_sm_clock_mhz", pynvml.nvmlDeviceGetMaxClockInfo, (pynvml.NVML_CLOCK_SM,), 1.0),
            ("max_mem_clock_mhz", pynvml.nvmlDeviceGetMaxClockInfo, (pynvml.NVML_CLOCK_MEM,), 1.0),
            ("temperature_c", pynvml.nvmlDeviceGetTemperature, (pynvml.NVML_TEMPERATURE_GPU,), 1.0),
        ]:
            info[key] = self._read(fn, *args, scale=scale)
        try:
            info["nvml_name"] = pynvml.nvmlDeviceGetName(self.handle)
            info["driver_version"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception:
            pass
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}
