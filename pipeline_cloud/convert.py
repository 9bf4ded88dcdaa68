"""Convert a TensorFlow SavedModel for the edge: to ONNX (tf2onnx) or TFLite (TF's converter).

Both need the ``tensorflow`` extra (``tensorflow-cpu`` and ``tf2onnx``); the result is
checked by loading it with the edge's own runtime (ONNX Runtime or LiteRT) before it is kept.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["convert_saved_model"]


def _folder(source: Path, tmp: Path) -> Path:
    if source.is_dir():
        if not (source / "saved_model.pb").exists():
            raise ValueError(f"{source} has no saved_model.pb: give the SavedModel folder")
        return source
    from pipeline_cloud.model_files import extract_saved_model

    return extract_saved_model(source, tmp)


def _default_output(source: Path, to: str) -> Path:
    name = source.name
    for suffix in (".tar.gz", ".tgz", ".zip"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return source.with_name(f"{name}.{to}")


def convert_saved_model(source: Path, to: str, output: Path | None = None) -> Path:
    """Write ``source`` (a SavedModel folder, .zip or .tar.gz) as ``.onnx`` or ``.tflite``.

    Raises:
        ValueError: not a SavedModel, an unknown target, or the converter failed (with its
            last lines of output).
        ImportError: TensorFlow (or tf2onnx) is not installed; the message names the extra.
    """
    if to not in ("onnx", "tflite"):
        raise ValueError(f"convert to onnx or tflite, not {to!r}")
    if not source.exists():
        raise ValueError(f"no such SavedModel: {source}")
    output = output or _default_output(source, to)
    with tempfile.TemporaryDirectory(prefix="convert-") as tmp:
        folder = _folder(source, Path(tmp))
        if to == "onnx":
            try:
                import tf2onnx  # type: ignore[import-untyped]  # noqa: F401
            except ImportError as exc:
                raise ImportError(
                    "converting to ONNX needs tf2onnx: pip install "
                    "'edge-vision-pipeline[tensorflow]'"
                ) from exc
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tf2onnx.convert",
                    "--saved-model",
                    str(folder),
                    "--output",
                    str(output),
                    "--opset",
                    "13",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 or not output.exists():
                tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                raise ValueError(f"tf2onnx could not convert {source}:\n{tail}")
        else:
            from pipeline_cloud.tf_backend import _import_tf

            tf = _import_tf()
            converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
            output.write_bytes(converter.convert())
    from pipeline_nodes.inference.service import load_model

    with load_model(output) as model:
        model.metadata()
    return output
