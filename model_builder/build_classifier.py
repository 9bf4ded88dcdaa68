"""Train the small face / not-face classifier and export it to ONNX and TFLite, without TensorFlow.

The data is scikit-image's bundled ``lfw_subset()`` (200 grey 25x25 crops: the first 100 are
faces, the last 100 are not). A seeded, stratified split keeps 70 + 70 images for training
and 30 + 30 for testing. The model is a softmax regression in numpy (float64, full-batch
gradient descent, L2, horizontally flipped copies of the training images added), trained on
standardised pixels. Training is deterministic for a given numpy build.

Export bakes the standardisation into the weights: ``logits = x @ W' + b'`` with
``x`` the raw 0..255 pixels, ``W' = W / (255 * std)`` and ``b' = b - (mean / std) @ W``.
Both files therefore take the same input and give the same output:

* input ``image``: float32 ``[N, 25, 25, 1]`` (``[1, 25, 25, 1]`` in TFLite), grey 0..255;
* output ``probability``: float32 ``[N, 2]`` softmax over ``["not_face", "face"]``.

The ONNX graph is ``Reshape -> Gemm -> Softmax`` (opset 13), written with ``onnx.helper``.
The TFLite file is ``RESHAPE -> FULLY_CONNECTED -> SOFTMAX``, written with the flatbuffers
object API shipped in ``ai_edge_litert/schema_py_generated.py`` (file identifier ``TFL3``),
with constant buffers 16-byte aligned. A ``face_classifier.split.json`` file records the seed,
the train/test indices into ``lfw_subset()`` and the accuracies, so tests can re-measure the
exported models on images that were not trained on.

Run ``python -m model_builder.build_classifier [DIR]`` to train, print the
accuracies and write the three files into ``DIR`` (default: the models directory). The usual
way is ``pipeline models fetch face_classifier face_classifier_tflite``, which builds them
when missing and records them in the manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = [
    "LABELS",
    "SPLIT_FILE",
    "TrainedClassifier",
    "build_classifier",
    "export_onnx",
    "export_tflite",
    "load_lfw_subset",
    "stratified_split",
    "train_classifier",
]

LABELS = ("not_face", "face")
IMAGE_SIZE = 25
SPLIT_FILE = "face_classifier.split.json"
SEED = 0
TEST_PER_CLASS = 30
_EPOCHS = 500
_LEARNING_RATE = 0.5
_L2 = 1e-2


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    """A trained classifier with its standardisation folded into the weights.

    Attributes:
        weights: float32 ``[625, 2]`` applied to raw 0..255 pixels (row-major 25x25).
        bias: float32 ``[2]``.
        train_indices: indices into ``lfw_subset()`` used for training.
        test_indices: held-out indices.
        train_accuracy: accuracy of the exported (float32, folded) weights on the train split.
        test_accuracy: the same on the test split.
        seed: the split seed.
    """

    weights: np.ndarray
    bias: np.ndarray
    train_indices: np.ndarray
    test_indices: np.ndarray
    train_accuracy: float
    test_accuracy: float
    seed: int

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities for ``images`` (``[N, 25, 25]`` or ``[N, 25, 25, 1]``, 0..255)."""
        x = np.asarray(images, np.float32).reshape(len(images), -1)
        logits = x @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        probabilities: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return probabilities


def load_lfw_subset() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-image's ``lfw_subset`` as 0..255 float32 images and labels (1 = face).

    Returns:
        ``(images [200, 25, 25], labels [200])``.
    """
    from skimage import data

    images = data.lfw_subset().astype(np.float32) * np.float32(255.0)  # type: ignore[no-untyped-call]
    labels = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    return images, labels


def stratified_split(
    labels: np.ndarray, test_per_class: int = TEST_PER_CLASS, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices per class with a seeded permutation.

    Args:
        labels: class of each sample.
        test_per_class: how many samples of each class go to the test split.
        seed: seed of ``numpy.random.default_rng``.

    Returns:
        ``(train_indices, test_indices)``, each sorted.
    """
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        test.extend(idx[:test_per_class].tolist())
        train.extend(idx[test_per_class:].tolist())
    return np.array(sorted(train)), np.array(sorted(test))


def _accuracy(weights: np.ndarray, bias: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    logits = x.reshape(len(x), -1).astype(np.float32) @ weights + bias
    return float(np.mean(logits.argmax(axis=1) == y))


def train_classifier(seed: int = SEED) -> TrainedClassifier:
    """Train the softmax regression on the seeded split of ``lfw_subset``.

    Args:
        seed: seed of the train/test split.

    Returns:
        The trained classifier, weights folded for raw 0..255 input, with its accuracies.
    """
    images, labels = load_lfw_subset()
    train_idx, test_idx = stratified_split(labels, seed=seed)
    x = images[train_idx].astype(np.float64) / 255.0
    y = labels[train_idx]
    x = np.concatenate([x, x[:, :, ::-1]])  # horizontal flips
    y = np.concatenate([y, y])
    features = x.reshape(len(x), -1)
    mean = features.mean(axis=0)
    std = features.std(axis=0) + 1e-6
    z = (features - mean) / std
    targets = np.eye(len(LABELS))[y]
    w = np.zeros((z.shape[1], len(LABELS)))
    b = np.zeros(len(LABELS))
    for _ in range(_EPOCHS):
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = (p - targets) / len(z)
        w -= _LEARNING_RATE * (z.T @ grad + _L2 * w)
        b -= _LEARNING_RATE * grad.sum(axis=0)
    folded_w = (w / (255.0 * std)[:, None]).astype(np.float32)
    folded_b = (b - (mean / std) @ w).astype(np.float32)
    return TrainedClassifier(
        weights=folded_w,
        bias=folded_b,
        train_indices=train_idx,
        test_indices=test_idx,
        train_accuracy=_accuracy(folded_w, folded_b, images[train_idx], labels[train_idx]),
        test_accuracy=_accuracy(folded_w, folded_b, images[test_idx], labels[test_idx]),
        seed=seed,
    )


_DOC = (
    "Face / not-face softmax regression trained on scikit-image lfw_subset (seeded 140/60 "
    "split). Input image float32 [N,25,25,1] grey 0..255; output probability [N,2] over "
    "not_face, face."
)


def export_onnx(model: TrainedClassifier, path: Path) -> None:
    """Write the classifier as ONNX (``Reshape -> Gemm -> Softmax``, opset 13).

    Args:
        model: the trained classifier.
        path: the ``.onnx`` file to write.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    pixels = IMAGE_SIZE * IMAGE_SIZE
    inits = [
        numpy_helper.from_array(np.array([-1, pixels], np.int64), "flat_shape"),
        numpy_helper.from_array(model.weights, "dense/W"),
        numpy_helper.from_array(model.bias, "dense/B"),
    ]
    nodes = [
        helper.make_node("Reshape", ["image", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "dense/W", "dense/B"], ["logits"], name="dense"),
        helper.make_node("Softmax", ["logits"], ["probability"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "face_classifier",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, ["N", IMAGE_SIZE, IMAGE_SIZE, 1]
            )
        ],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", len(LABELS)])],
        initializer=inits,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        # The builder's first home: kept, so the file (and its sha256) stays the one the
        # catalog's reference hash was measured on.
        producer_name="nodes.inference.models.build_classifier",
        producer_version="1",
        doc_string=_DOC,
    )
    onnx_model.ir_version = 7
    helper.set_model_props(onnx_model, {"labels": ",".join(LABELS)})
    onnx.checker.check_model(onnx_model)
    Path(path).write_bytes(onnx_model.SerializeToString())


def export_tflite(model: TrainedClassifier, path: Path) -> None:
    """Write the classifier as TFLite (``RESHAPE -> FULLY_CONNECTED -> SOFTMAX``).

    Uses the flatbuffers object API from ``ai_edge_litert.schema_py_generated``; no
    TensorFlow is needed.

    Args:
        model: the trained classifier.
        path: the ``.tflite`` file to write.
    """
    from model_builder.tflite_writer import TFLiteWriter

    pixels = IMAGE_SIZE * IMAGE_SIZE
    w = TFLiteWriter()
    image = w.tensor("image", [1, IMAGE_SIZE, IMAGE_SIZE, 1])
    shape = w.constant("flat_shape", np.array([-1, pixels], np.int32))
    flat = w.tensor("flat", [1, pixels])
    weights = w.constant("dense/W", model.weights.T)  # FULLY_CONNECTED wants [out, in]
    bias = w.constant("dense/B", model.bias)
    logits = w.tensor("logits", [1, len(LABELS)])
    probability = w.tensor("probability", [1, len(LABELS)])
    w.op("RESHAPE", [image, shape], [flat], w.options("ReshapeOptions", newShape=[-1, pixels]))
    w.op("FULLY_CONNECTED", [flat, weights, bias], [logits], w.options("FullyConnectedOptions"))
    w.op("SOFTMAX", [logits], [probability], w.options("SoftmaxOptions", beta=1.0))
    Path(path).write_bytes(w.serialize([image], [probability], _DOC))


def build_classifier(
    onnx_path: Path | None = None,
    tflite_path: Path | None = None,
    split_path: Path | None = None,
    log: Callable[[str], object] = print,
) -> TrainedClassifier:
    """Train the classifier and write the requested files.

    Args:
        onnx_path: where to write the ONNX model, or ``None`` to skip it.
        tflite_path: where to write the TFLite model, or ``None`` to skip it.
        split_path: where to write the split/accuracy JSON, or ``None`` to skip it.
        log: receives one progress line.

    Returns:
        The trained classifier.
    """
    model = train_classifier()
    log(
        f"face_classifier: trained on {len(model.train_indices)} images (+ flips), "
        f"train accuracy {model.train_accuracy:.3f}, "
        f"test accuracy {model.test_accuracy:.3f} on {len(model.test_indices)} held-out images"
    )
    if onnx_path is not None:
        export_onnx(model, onnx_path)
    if tflite_path is not None:
        export_tflite(model, tflite_path)
    if split_path is not None:
        split = {
            "dataset": "skimage.data.lfw_subset (first 100 faces, last 100 non-faces)",
            "labels": list(LABELS),
            "seed": model.seed,
            "train_indices": model.train_indices.tolist(),
            "test_indices": model.test_indices.tolist(),
            "train_accuracy": model.train_accuracy,
            "test_accuracy": model.test_accuracy,
        }
        Path(split_path).write_text(json.dumps(split, indent=1) + "\n")
    return model


def main(argv: list[str] | None = None) -> int:
    """Build ``face_classifier.onnx``, ``face_classifier.tflite`` and the split file.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code (0).
    """
    from pipeline_nodes.inference.models.store import default_models_dir

    parser = argparse.ArgumentParser(
        prog="python -m model_builder.build_classifier", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dir", nargs="?", type=Path, help="output folder (default: models dir)")
    args = parser.parse_args(argv)
    out = args.dir or default_models_dir()
    out.mkdir(parents=True, exist_ok=True)
    build_classifier(out / "face_classifier.onnx", out / "face_classifier.tflite", out / SPLIT_FILE)
    print(f"wrote {out / 'face_classifier.onnx'}, {out / 'face_classifier.tflite'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
