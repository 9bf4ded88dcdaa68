"""The ``camera`` source: live frames from a device or a stream URL (see ``CameraSource``).

Modules by job: :mod:`.node` (the node), :mod:`.params`, :mod:`.capture` (what ``device``
names, opening with a timeout), :mod:`.grabber` (the thread that keeps the newest frame and
reconnects) and :mod:`.diagnosis` (why a camera did not open; URLs without passwords).
"""

from pipeline_nodes.sources.camera.diagnosis import redact_url
from pipeline_nodes.sources.camera.node import CameraSource
from pipeline_nodes.sources.camera.params import CameraParams

__all__ = ["CameraParams", "CameraSource", "redact_url"]
