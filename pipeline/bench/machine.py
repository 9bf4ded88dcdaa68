"""What machine a benchmark ran on: CPU, memory, OS, Python packages, and the board's identity.

``machine_info()`` is recorded once per bench; ``conditions()`` (temperatures, clocks,
throttling) is recorded at the start and at the end, because a board that heats up during a
run slows down and the figures mean little without it. Every file is read under a ``root``
folder (default ``/``), so tests describe a Raspberry Pi 5 or a Jetson Orin with a fake
system folder. Facts about the running interpreter (Python, package versions, ONNX Runtime's
execution providers, host name, architecture) always come from this process. Anything that
cannot be read is ``None``: a bench never fails because a board hides a file.

The Jetson module name comes from the board ids in the device tree's ``compatible`` list
(``nvidia,p3768-0000+p3767-0005`` is carrier + module; the module part number says which
Orin), because the ``model`` string is the carrier's marketing name and some images leave
it generic; the L4T release comes from ``/etc/nv_tegra_release``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.bench.boards import (
    ARM_PARTS,
    JETPACK_BY_L4T,
    JETSON_FAMILIES,
    JETSON_MODULES,
    NVIDIA_PARTS,
    TEGRA_CHIP_IDS,
    TEGRA_SOCS,
    THROTTLE_BITS,
)

__all__ = ["conditions", "cpu_times", "decode_throttled", "jetson_module_name", "machine_info"]

_PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "opencv": (
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python-headless",
        "opencv-contrib-python",
    ),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "ai-edge-litert": ("ai-edge-litert",),
    "tflite-runtime": ("tflite-runtime",),
    "pyzmq": ("pyzmq",),
    "edge-vision-pipeline": ("edge-vision-pipeline",),
}


def _read(root: Path, *candidates: str) -> str | None:
    """The text of the first readable file among ``candidates`` (paths relative to root)."""
    for rel in candidates:
        try:
            return (root / rel).read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
    return None


def _read_dt(root: Path, name: str) -> list[str]:
    """A device-tree string property: NUL-separated strings (``model``, ``compatible``)."""
    text = _read(root, f"proc/device-tree/{name}", f"sys/firmware/devicetree/base/{name}")
    if text is None:
        return []
    return [part.strip() for part in text.split("\0") if part.strip()]


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text.strip(), 0)
    except ValueError:
        return None


def _cpuinfo(root: Path) -> tuple[list[dict[str, str]], dict[str, str]]:
    """/proc/cpuinfo as one dict per processor, plus the machine-wide lines after them."""
    text = _read(root, "proc/cpuinfo") or ""
    processors: list[dict[str, str]] = []
    extra: dict[str, str] = {}
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" in fields:
            processors.append(fields)
        else:
            extra.update(fields)
    return processors, extra


def _cpu_model(processors: Sequence[dict[str, str]]) -> str | None:
    names: list[str] = []
    for proc in processors:
        name = proc.get("model name")
        if name is None and "CPU part" in proc:
            implementer = proc.get("CPU implementer", "").lower()
            part = proc["CPU part"].lower()
            table = NVIDIA_PARTS if implementer == "0x4e" else ARM_PARTS
            name = "ARM " + table[part] if part in table else f"ARM part {part}"
        if name:
            names.append(name)
    if not names:
        return None
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    if len(counts) == 1:
        return names[0]
    return " + ".join(f"{n}x {name}" for name, n in counts.items())  # big.LITTLE


def _meminfo_mb(root: Path) -> int | None:
    text = _read(root, "proc/meminfo") or ""
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) // 1024 if match else None


def _os_name(root: Path) -> str | None:
    text = _read(root, "etc/os-release", "usr/lib/os-release") or ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.MULTILINE)
    return match.group(1) if match else None


def _versions() -> tuple[dict[str, str | None], dict[str, str]]:
    versions: dict[str, str | None] = {}
    dists: dict[str, str] = {}
    for label, names in _PACKAGES.items():
        versions[label] = None
        for name in names:
            try:
                versions[label] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                continue
            dists[label] = name
            break
    if versions["opencv"] is None:
        # Jetson images ship OpenCV from apt, with no pip metadata.
        with contextlib.suppress(Exception):
            import cv2

            versions["opencv"] = str(cv2.__version__)
            dists["opencv"] = "system"
    return versions, dists


def _onnxruntime_providers() -> list[str] | None:
    try:
        import onnxruntime
    except Exception:  # not installed, or a broken install: either way, none to report
        return None
    try:
        return [str(p) for p in onnxruntime.get_available_providers()]
    except Exception:
        return None


def decode_throttled(value: int) -> dict[str, Any]:
    """The Raspberry Pi firmware's ``get_throttled`` word as named flags.

    Args:
        value: the word, e.g. ``0x50005``.

    Returns:
        ``{"raw": "0x50005", "flags": [...], "throttled_now": bool, "throttled_since_boot":
        bool}``; ``throttled_now`` covers under-voltage, frequency capping, throttling and
        the soft temperature limit as they are now.
    """
    flags = [name for bit, name in THROTTLE_BITS.items() if value & (1 << bit)]
    return {
        "raw": hex(value),
        "flags": flags,
        "throttled_now": bool(value & 0xF),
        "throttled_since_boot": bool(value & 0xF0000),
    }


def _throttling(root: Path) -> dict[str, Any] | None:
    text = _read(root, "sys/devices/platform/soc/soc:firmware/get_throttled")
    source = "sysfs"
    if text is None:
        for path in sorted(root.glob("sys/devices/platform/soc*/soc*:firmware/get_throttled")):
            text = _read(path.parent, path.name)
            if text is not None:
                break
    if text is None and root.resolve() == Path("/").resolve():
        tool = shutil.which("vcgencmd")
        if tool:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run(
                    [tool, "get_throttled"], capture_output=True, text=True, timeout=2
                ).stdout
                text = out.partition("=")[2] or None
                source = "vcgencmd"
    value = _int(text)
    if value is None:
        return None
    return {**decode_throttled(value), "source": source}


def _cpufreq(root: Path) -> dict[str, Any] | None:
    base = root / "sys/devices/system/cpu"
    cpus: list[dict[str, Any]] = []
    for path in sorted(base.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
        freq = path / "cpufreq"
        if not freq.is_dir():
            continue
        cur = _int(_read(freq, "scaling_cur_freq"))
        top = _int(_read(freq, "cpuinfo_max_freq"))
        governor = _read(freq, "scaling_governor")
        cpus.append(
            {
                "cpu": int(path.name[3:]),
                "governor": governor.strip() if governor else None,
                "cur_mhz": round(cur / 1000) if cur is not None else None,
                "max_mhz": round(top / 1000) if top is not None else None,
            }
        )
    if not cpus:
        return None
    governors = sorted({str(c["governor"]) for c in cpus if c["governor"]})
    return {"governor": ", ".join(governors) or None, "cpus": cpus}


def _thermal(root: Path) -> list[dict[str, Any]]:
    zones = []
    base = root / "sys/class/thermal"
    for path in sorted(base.glob("thermal_zone[0-9]*"), key=lambda p: int(p.name[12:])):
        temp = _int(_read(path, "temp"))
        kind = _read(path, "type")
        zones.append(
            {
                "zone": path.name,
                "type": kind.strip() if kind else None,
                # millidegrees on every board this was written for
                "temp_c": round(temp / 1000, 1) if temp is not None else None,
            }
        )
    return zones


def jetson_module_name(compatible: Sequence[str]) -> str | None:
    """The Jetson module named by a device tree's ``compatible`` strings, if any.

    Args:
        compatible: e.g. ``["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005",
            "nvidia,tegra234"]``.

    Returns:
        e.g. ``"Jetson Orin Nano 8GB (developer kit module)"``, the family name when only
        the family is known, or None.
    """
    ids = []
    for entry in compatible:
        ids.extend(re.findall(r"p\d{4}-\d{4}", entry))
    for board in ids:
        if board in JETSON_MODULES:
            return JETSON_MODULES[board]
    for board in ids:
        family = JETSON_FAMILIES.get(board[:5])
        if family:
            return family
    return None


def _jetson(root: Path, model: str | None, compatible: list[str]) -> dict[str, Any] | None:
    release = _read(root, "etc/nv_tegra_release")
    is_nvidia = any(c.startswith("nvidia,") for c in compatible)
    if release is None and not is_nvidia:
        return None
    l4t = None
    if release:
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
        if match:
            revision = match.group(2)
            l4t = f"{match.group(1)}.{revision}" + (".0" if revision.count(".") == 0 else "")
    soc = next((c.split(",", 1)[1] for c in compatible if c.startswith("nvidia,tegra")), None)
    chip_id = _int(_read(root, "sys/module/tegra_fuse/parameters/tegra_chip_id"))
    if soc is None and chip_id is not None:
        soc = TEGRA_CHIP_IDS.get(chip_id)
    module = jetson_module_name(compatible)
    return {
        "model": model,
        "module": module,
        "soc": soc,
        "soc_name": TEGRA_SOCS.get(soc or ""),
        "chip_id": chip_id,
        "l4t": l4t,
        "jetpack": JETPACK_BY_L4T.get(l4t or ""),
        "release_line": release.strip().splitlines()[0] if release and release.strip() else None,
        "compatible": compatible,
        "power_mode": _jetson_power_mode(root),
    }


def _jetson_power_mode(root: Path) -> dict[str, Any] | None:
    """nvpmodel's current mode (``/var/lib/nvpmodel/status``) named from its config."""
    status = _read(root, "var/lib/nvpmodel/status")
    match = re.search(r"pmode:(\d+)", status or "")
    if not match:
        return None
    mode = int(match.group(1))
    config = _read(root, "etc/nvpmodel.conf") or ""
    names = {
        int(i): name
        for i, name in re.findall(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+)\s*>", config)
    }
    return {"id": mode, "name": names.get(mode)}


def _device(root: Path, cpu_extra: dict[str, str]) -> dict[str, Any]:
    dt_model = _read_dt(root, "model")
    model = dt_model[0] if dt_model else None
    compatible = _read_dt(root, "compatible")
    jetson = _jetson(root, model, compatible)
    pi: dict[str, Any] | None = None
    if (model or "").startswith("Raspberry Pi") or any(
        c.startswith("raspberrypi,") for c in compatible
    ):
        pi = {
            "model": model or cpu_extra.get("Model"),
            "revision": cpu_extra.get("Revision"),
            "compatible": compatible,
        }
    name: str | None
    if jetson is not None:
        kind = "jetson"
        name = model or (f"NVIDIA {jetson['module']}" if jetson["module"] else None)
    elif pi is not None:
        kind = "raspberry_pi"
        name = pi["model"]
    else:
        kind = "other"
        vendor = (_read(root, "sys/class/dmi/id/sys_vendor") or "").strip()
        product = (_read(root, "sys/class/dmi/id/product_name") or "").strip()
        name = model or " ".join(p for p in (vendor, product) if p) or None
    return {"kind": kind, "model": name, "raspberry_pi": pi, "jetson": jetson}


def cpu_times(root: str | Path = "/", cpus: Sequence[int] | None = None) -> tuple[int, int] | None:
    """Busy and total CPU time so far (clock ticks, ``/proc/stat``), to measure how busy the
    machine was between two readings, whoever kept it busy.

    Args:
        root: the folder system files are read under.
        cpus: the CPUs to count (e.g. those a bench is pinned to); None: all.

    Returns:
        ``(busy, total)``, or None where ``/proc/stat`` cannot be read.
    """
    text = _read(Path(root), "proc/stat")
    if text is None:
        return None
    wanted = {"cpu"} if cpus is None else {f"cpu{i}" for i in cpus}
    busy = total = 0
    found = False
    for line in text.splitlines():
        name, *values = line.split()
        if name not in wanted:
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        ticks = [int(v) for v in values[:8]] + [0] * max(0, 8 - len(values))
        idle = ticks[3] + ticks[4]
        busy += sum(ticks) - idle
        total += sum(ticks)
        found = True
    return (busy, total) if found else None


def conditions(root: str | Path = "/") -> dict[str, Any]:
    """What changes during a run: temperatures, CPU clocks and throttling, now.

    Args:
        root: the folder system files are read under (tests pass a fake one).

    Returns:
        ``{"thermal": [...], "cpufreq": {...} | None, "throttling": {...} | None}``.
    """
    base = Path(root)
    return {
        "thermal": _thermal(base),
        "cpufreq": _cpufreq(base),
        "throttling": _throttling(base),
    }


def machine_info(root: str | Path = "/") -> dict[str, Any]:
    """Everything about this machine that a benchmark result should carry.

    Args:
        root: the folder system files are read under (tests pass a fake one); facts about
            the interpreter (Python, packages, ONNX Runtime providers, host name,
            architecture) always describe this process.

    Returns:
        A JSON-ready dict: ``hostname``, ``arch``, ``os``, ``cpu`` (model, cores, the cores
        this process may use), ``memory_mb``, ``python``, ``packages`` (version or None),
        ``package_distributions``, ``onnxruntime_providers``, ``device`` (kind, model,
        Raspberry Pi or Jetson details) and the current ``conditions``.
    """
    base = Path(root)
    live = base.resolve() == Path("/").resolve()
    processors, extra = _cpuinfo(base)
    cores = len(processors) or (os.cpu_count() if live else None)
    usable = None
    if live and hasattr(os, "sched_getaffinity"):
        usable = len(os.sched_getaffinity(0))
    versions, dists = _versions()
    kernel = _read(base, "proc/sys/kernel/osrelease")
    return {
        "hostname": platform.node(),
        "arch": platform.machine(),
        "os": {
            "system": platform.system(),
            "name": _os_name(base),
            "kernel": kernel.strip() if kernel else (platform.release() if live else None),
        },
        "cpu": {
            "model": _cpu_model(processors) or (platform.processor() or None if live else None),
            "cores": cores,
            "usable_cores": usable,
        },
        "memory_mb": _meminfo_mb(base),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "packages": versions,
        "package_distributions": dists,
        "onnxruntime_providers": _onnxruntime_providers(),
        "device": _device(base, extra),
        "conditions": conditions(base),
    }
