"""Machine description: a Raspberry Pi 5 and a Jetson Orin Nano from fake system folders."""

from __future__ import annotations

import json
import platform
import shutil

import pytest

from pipeline.bench.machine import (
    conditions,
    cpu_times,
    decode_throttled,
    jetson_module_name,
    machine_info,
)
from tests.pipeline.bench.helpers import FIXTURES


def test_pi5_folder_reads_as_a_raspberry_pi_5():
    info = machine_info(FIXTURES / "pi5")
    device = info["device"]
    assert device["kind"] == "raspberry_pi"
    assert device["model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert device["raspberry_pi"]["revision"] == "d04170"
    assert device["raspberry_pi"]["compatible"] == ["raspberrypi,5-model-b", "brcm,bcm2712"]
    assert device["jetson"] is None
    assert info["cpu"]["model"] == "ARM Cortex-A76"
    assert info["cpu"]["cores"] == 4
    assert info["memory_mb"] == 8052
    assert info["os"]["name"] == "Debian GNU/Linux 12 (bookworm)"
    assert info["os"]["kernel"] == "6.6.51+rpt-rpi-2712"
    freq = info["conditions"]["cpufreq"]
    assert freq["governor"] == "ondemand"
    assert freq["cpus"][0] == {"cpu": 0, "governor": "ondemand", "cur_mhz": 1500, "max_mhz": 2400}
    assert len(freq["cpus"]) == 4
    assert info["conditions"]["thermal"] == [
        {"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": pytest.approx(51.35, abs=0.06)}
    ]
    throttling = info["conditions"]["throttling"]
    assert throttling["raw"] == "0x0"
    assert throttling["flags"] == []
    assert throttling["throttled_now"] is False
    assert throttling["source"] == "sysfs"


def test_orin_folder_reads_as_a_jetson_orin_nano():
    info = machine_info(FIXTURES / "jetson_orin")
    device = info["device"]
    assert device["kind"] == "jetson"
    assert device["model"] == "NVIDIA Jetson Orin Nano Developer Kit"
    assert device["raspberry_pi"] is None
    jetson = device["jetson"]
    assert jetson["module"] == "Jetson Orin Nano 8GB (developer kit module)"
    assert jetson["soc"] == "tegra234"
    assert jetson["soc_name"] == "Orin"
    assert jetson["chip_id"] == 35
    assert jetson["l4t"] == "36.3.0"
    assert jetson["jetpack"] == "6.0"
    assert jetson["release_line"].startswith("# R36 (release), REVISION: 3.0")
    assert jetson["power_mode"] == {"id": 0, "name": "15W"}
    assert info["cpu"] == {"model": "ARM Cortex-A78AE", "cores": 6, "usable_cores": None}
    assert info["memory_mb"] == 7441
    assert info["os"]["name"] == "Ubuntu 22.04.4 LTS"
    assert info["os"]["kernel"] == "5.15.136-tegra"
    cond = info["conditions"]
    assert cond["cpufreq"]["governor"] == "schedutil"
    assert {c["max_mhz"] for c in cond["cpufreq"]["cpus"]} == {1510}
    zones = {z["type"]: z["temp_c"] for z in cond["thermal"]}
    assert len(zones) == 9
    assert zones["tj-thermal"] == pytest.approx(48.5, abs=0.05)
    assert cond["throttling"] is None  # a Jetson has no firmware throttle word


def test_jetson_without_a_model_string_is_named_from_its_compatible_list(tmp_path):
    root = tmp_path / "orin"
    shutil.copytree(FIXTURES / "jetson_orin", root)
    (root / "sys/firmware/devicetree/base/model").unlink()
    (root / "sys/module/tegra_fuse/parameters/tegra_chip_id").unlink()
    device = machine_info(root)["device"]
    assert device["model"] == "NVIDIA Jetson Orin Nano 8GB (developer kit module)"
    assert device["jetson"]["soc"] == "tegra234"  # from the compatible list alone


def test_tegra_chip_id_names_the_soc_when_the_compatible_list_does_not(tmp_path):
    root = tmp_path / "orin"
    shutil.copytree(FIXTURES / "jetson_orin", root)
    (root / "sys/firmware/devicetree/base/compatible").write_bytes(b"nvidia,p3768-0000\x00")
    jetson = machine_info(root)["device"]["jetson"]
    assert jetson["soc"] == "tegra234"
    assert jetson["module"] is None


@pytest.mark.parametrize(
    ("compatible", "expected"),
    [
        # carrier + module, then module, then SoC: the module id decides
        (
            ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
            "Jetson Orin Nano 8GB (developer kit module)",
        ),
        (["nvidia,p3768-0000+p3767-0000", "nvidia,tegra234"], "Jetson Orin NX 16GB"),
        (["nvidia,p3737-0000+p3701-0005", "nvidia,tegra234"], "Jetson AGX Orin 64GB"),
        (["nvidia,p3509-0000+p3668-0001", "nvidia,tegra194"], "Jetson Xavier NX"),
        (
            ["nvidia,p3449-0000-b00+p3448-0000-b00", "nvidia,tegra210"],
            "Jetson Nano (developer kit module)",
        ),
        # an Orin module id this table does not know yet: the family
        (["nvidia,p3768-0000+p3767-0099", "nvidia,tegra234"], "Jetson Orin NX/Nano"),
        # not a Jetson
        (["raspberrypi,5-model-b", "brcm,bcm2712"], None),
        ([], None),
    ],
)
def test_jetson_module_name_from_compatible(compatible, expected):
    assert jetson_module_name(compatible) == expected


@pytest.mark.parametrize(
    ("word", "flags", "now", "since_boot"),
    [
        (0x0, [], False, False),
        # under-voltage and throttled now, and both have occurred since boot
        (
            0x50005,
            ["under_voltage", "throttled", "under_voltage_occurred", "throttling_occurred"],
            True,
            True,
        ),
        # the soft temperature limit was hit earlier, nothing now
        (0x80000, ["soft_temperature_limit_occurred"], False, True),
    ],
)
def test_decode_throttled(word, flags, now, since_boot):
    decoded = decode_throttled(word)
    assert decoded["raw"] == hex(word)
    assert decoded["flags"] == flags
    assert decoded["throttled_now"] is now
    assert decoded["throttled_since_boot"] is since_boot


def test_a_pi_5_reporting_throttling_is_decoded(tmp_path):
    root = tmp_path / "pi"
    shutil.copytree(FIXTURES / "pi5", root)
    (root / "sys/devices/platform/soc/soc:firmware/get_throttled").write_text("0x50005\n")
    assert conditions(root)["throttling"]["throttled_now"] is True


def test_cpu_times_sum_the_chosen_cpus():
    root = FIXTURES / "pi5"
    assert cpu_times(root) == (
        52013 + 120 + 20114 + 812,
        52013 + 120 + 20114 + 1843212 + 1201 + 812,
    )
    two = cpu_times(root, [0, 1])
    assert two is not None
    busy01, total01 = two
    assert busy01 == 13211 + 30 + 5122 + 402 + 12933 + 28 + 4987 + 140
    assert total01 > busy01
    assert cpu_times(root, [7]) is None


def test_an_empty_folder_gives_nones_without_failing(tmp_path):
    info = machine_info(tmp_path)
    assert info["device"] == {"kind": "other", "model": None, "raspberry_pi": None, "jetson": None}
    assert info["cpu"]["model"] is None
    assert info["memory_mb"] is None
    assert info["conditions"] == {"thermal": [], "cpufreq": None, "throttling": None}
    assert cpu_times(tmp_path) is None


def test_this_machine_is_described_without_error():
    info = machine_info()
    json.dumps(info)  # a result file must be able to hold it
    assert info["hostname"] == platform.node()
    assert info["python"]["version"] == platform.python_version()
    assert info["packages"]["numpy"] is not None
    assert info["cpu"]["cores"] >= 1
    assert 1 <= info["cpu"]["usable_cores"] <= info["cpu"]["cores"]
    assert info["device"]["kind"] in ("raspberry_pi", "jetson", "other")
    if info["packages"]["onnxruntime"] is not None:
        assert "CPUExecutionProvider" in info["onnxruntime_providers"]
