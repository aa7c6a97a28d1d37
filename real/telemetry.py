"""GPU telemetry through NVML (nvidia-ml-py), optional: without it every reading is NaN.

Energy comes from the board's cumulative energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
millijoules since driver load), read before and after a timed loop; clocks are read right after
the loop, while the GPU is still at its working clock.
"""

from __future__ import annotations

import math

try:
    import pynvml
except ImportError:  # CPU machines, or no nvidia-ml-py
    pynvml = None


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
        try:
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
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
