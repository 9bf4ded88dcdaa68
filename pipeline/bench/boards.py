"""Tables that name boards and chips from what Linux shows: ARM CPU part ids, Jetson module
board ids, Tegra SoCs and chip ids, L4T to JetPack releases, and the Raspberry Pi firmware's
throttle bits. Facts only; ``pipeline.bench.machine`` reads the files and looks them up here.
"""

from __future__ import annotations

__all__ = [
    "ARM_PARTS",
    "JETPACK_BY_L4T",
    "JETSON_FAMILIES",
    "JETSON_MODULES",
    "NVIDIA_PARTS",
    "TEGRA_CHIP_IDS",
    "TEGRA_SOCS",
    "THROTTLE_BITS",
]

# ARM "CPU part" ids (implementer 0x41) as /proc/cpuinfo shows them on ARM boards, which
# have no "model name" line.
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2",
    "0xd4b": "Cortex-A78C",
    "0xd80": "Cortex-A520",
    "0xd81": "Cortex-A720",
}
NVIDIA_PARTS = {"0x003": "Denver 2", "0x004": "Carmel"}

# Jetson modules by board id (the module part of the device tree's compatible list).
JETSON_MODULES = {
    "p3767-0000": "Jetson Orin NX 16GB",
    "p3767-0001": "Jetson Orin NX 8GB",
    "p3767-0003": "Jetson Orin Nano 8GB",
    "p3767-0004": "Jetson Orin Nano 4GB",
    "p3767-0005": "Jetson Orin Nano 8GB (developer kit module)",
    "p3701-0000": "Jetson AGX Orin (developer kit module)",
    "p3701-0002": "Jetson IGX Orin (developer kit module)",
    "p3701-0004": "Jetson AGX Orin 32GB",
    "p3701-0005": "Jetson AGX Orin 64GB",
    "p3701-0008": "Jetson AGX Orin Industrial",
    "p3668-0000": "Jetson Xavier NX (developer kit module)",
    "p3668-0001": "Jetson Xavier NX",
    "p3668-0003": "Jetson Xavier NX 16GB",
    "p2888-0001": "Jetson AGX Xavier 16GB",
    "p2888-0004": "Jetson AGX Xavier 32GB",
    "p2888-0005": "Jetson AGX Xavier 64GB",
    "p2888-0006": "Jetson AGX Xavier 8GB",
    "p2888-0008": "Jetson AGX Xavier Industrial",
    "p3448-0000": "Jetson Nano (developer kit module)",
    "p3448-0002": "Jetson Nano",
    "p3448-0003": "Jetson Nano 2GB",
    "p3636-0001": "Jetson TX2 NX",
    "p3489-0000": "Jetson TX2i",
    "p3489-0888": "Jetson TX2 4GB",
    "p3310-1000": "Jetson TX2",
    "p2180-1000": "Jetson TX1",
}
# When the exact module id is unknown, the family is still worth naming.
JETSON_FAMILIES = {
    "p3767": "Jetson Orin NX/Nano",
    "p3701": "Jetson AGX Orin",
    "p3668": "Jetson Xavier NX",
    "p2888": "Jetson AGX Xavier",
    "p3448": "Jetson Nano",
    "p3310": "Jetson TX2",
}
TEGRA_SOCS = {
    "tegra234": "Orin",
    "tegra194": "Xavier",
    "tegra186": "Parker (TX2)",
    "tegra210": "TX1 / Nano",
}
# /sys/module/tegra_fuse/parameters/tegra_chip_id prints the chip id byte in decimal.
TEGRA_CHIP_IDS = {35: "tegra234", 25: "tegra194", 24: "tegra186", 33: "tegra210"}
JETPACK_BY_L4T = {
    "36.4.4": "6.2.1",
    "36.4.3": "6.2",
    "36.4.0": "6.1",
    "36.3.0": "6.0",
    "35.6.0": "5.1.4",
    "35.5.0": "5.1.3",
    "35.4.1": "5.1.2",
    "35.3.1": "5.1.1",
    "35.2.1": "5.1",
    "32.7.4": "4.6.4",
    "32.7.3": "4.6.3",
    "32.7.2": "4.6.2",
    "32.7.1": "4.6.1",
    "32.6.1": "4.6",
}
# Raspberry Pi firmware's get_throttled bits.
THROTTLE_BITS = {
    0: "under_voltage",
    1: "arm_frequency_capped",
    2: "throttled",
    3: "soft_temperature_limit",
    16: "under_voltage_occurred",
    17: "arm_frequency_capping_occurred",
    18: "throttling_occurred",
    19: "soft_temperature_limit_occurred",
}
