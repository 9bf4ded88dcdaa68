"""The typed messages that travel on edges: Frame, Detections, Classifications, Tensors.

Every message carries the identity of the source frame it derives from: ``seq`` (stamped by
the source and carried forward by every node, the key that joins several inputs),
``t_capture_ns`` (``time.monotonic_ns()`` at capture, the origin of end-to-end latency) and
``source`` (the id of the source node). ``meta`` is free, msgpack-serialisable metadata
(for example the resize or letterbox a transform applied, so boxes can be mapped back).

A message is split on the wire into small fields (``wire_fields()``) and arrays
(``wire_arrays()``); the two are public, so a sink that records messages (jsonl) and a codec
see the same split. The codec in ``pipeline.transport`` puts the fields in the header and moves
the arrays through shared memory or as ZeroMQ frames; messages themselves know nothing about
transport.

Arrays received from another node are read-only views of shared memory. Copy before editing,
or allocate an output buffer with ``self.<port>.allocate(shape, dtype)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "Classifications",
    "Detections",
    "Frame",
    "Message",
    "Tensors",
    "message_type",
    "message_types",
]

M = TypeVar("M", bound="Message")

_REGISTRY: dict[str, type[Message]] = {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Message:
    """Base of every message: the identity of the source frame it belongs to.

    Attributes:
        seq: sequence number stamped by the source; joins several inputs.
        t_capture_ns: ``time.monotonic_ns()`` when the source captured the frame.
        source: id of the source node.
        meta: free metadata (msgpack-serialisable values only).
    """

    kind: ClassVar[str] = "message"

    seq: int = 0
    t_capture_ns: int = 0
    source: str = ""
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _REGISTRY[cls.kind] = cls

    def wire_arrays(self) -> dict[str, np.ndarray]:
        """Arrays that travel as buffers, by field name (a subclass with arrays overrides it)."""
        return {}

    def wire_fields(self) -> dict[str, Any]:
        """Small fields that travel in the header, msgpack-serialisable (a subclass with such
        fields overrides it)."""
        return {}

    @classmethod
    def _from_parts(
        cls: type[M], header: dict[str, Any], fields: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> M:
        values: dict[str, Any] = {**header, **fields, **arrays}
        return cls(**values)

    def derive(self, cls: type[M], **values: Any) -> M:
        """Build a message of type ``cls`` that belongs to the same source frame as this one."""
        values.setdefault("seq", self.seq)
        values.setdefault("t_capture_ns", self.t_capture_ns)
        values.setdefault("source", self.source)
        values.setdefault("meta", dict(self.meta))
        return cls(**values)

    def replace(self: M, **values: Any) -> M:
        """A copy with some fields replaced (arrays are not copied)."""
        return dataclasses.replace(self, **values)


def message_type(kind: str) -> type[Message]:
    """The message class registered under ``kind`` (``frame``, ``detections``, ...)."""
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown message kind {kind!r}; known: {sorted(_REGISTRY)}") from None


def message_types() -> dict[str, type[Message]]:
    """Every registered message class by kind."""
    return dict(_REGISTRY)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Frame(Message):
    """An image.

    Attributes:
        image: ``(H, W, C)`` or ``(H, W)`` uint8, BGR unless ``meta["color"]`` says otherwise.
    """

    kind: ClassVar[str] = "frame"

    image: np.ndarray

    def __post_init__(self) -> None:
        # every consumer reads shape[0] and shape[1]: refuse anything else at the door
        ndim = getattr(self.image, "ndim", None)
        if ndim not in (2, 3):
            raise ValueError(
                f"Frame.image must be an (H, W) or (H, W, C) array, got "
                f"{type(self.image).__name__} of {ndim} dimensions"
            )

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return {"image": self.image}


def _as_array(value: Any, dtype: npt.DTypeLike, shape_tail: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if arr.size == 0:
        return arr.reshape((0, *shape_tail))
    return arr


@dataclasses.dataclass(frozen=True, kw_only=True)
class Detections(Message):
    """Objects found in one frame.

    Attributes:
        xyxy: ``(N, 4)`` float32, box corners (x_min, y_min, x_max, y_max) normalised to 0..1
            of the source image, origin at the top-left.
        confidence: ``(N,)`` float32 in 0..1.
        class_id: ``(N,)`` int32. Given ``class_names`` alone, the ids number the distinct
            names in order of first appearance (pass ``class_id`` for a model's own ids).
        class_names: ``N`` label strings (default: the ids as strings).
        keypoints: ``(N, K, 2)`` float32 normalised x, y, or ``None``.
        image_wh: (width, height) in pixels of the image the boxes refer to; 0 when unknown.
    """

    kind: ClassVar[str] = "detections"

    xyxy: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))
    confidence: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    class_id: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
    class_names: Sequence[str] = ()
    keypoints: np.ndarray | None = None
    image_wh: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        xyxy = _as_array(self.xyxy, np.float32, (4,))
        n = len(xyxy)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"Detections.xyxy must have shape (N, 4), got {xyxy.shape}")
        confidence = _as_array(self.confidence, np.float32, ())
        class_id = _as_array(self.class_id, np.int32, ())
        names = tuple(str(s) for s in self.class_names)
        if not names and n:
            names = tuple(str(int(i)) for i in class_id)
        if not len(class_id) and n and len(names) == n:
            # names only: ids number the distinct names in order of first appearance
            first: dict[str, int] = {}
            class_id = np.array([first.setdefault(s, len(first)) for s in names], np.int32)
        for label, size, what in (
            ("confidence", len(confidence), "one score in 0..1 per box"),
            ("class_id", len(class_id), "one int per box, or class_names alone"),
            ("class_names", len(names), "one label per box, or class_id alone"),
        ):
            if size != n:
                raise ValueError(
                    f"Detections.{label} has {size} entries for {n} boxes: pass {label}=[...] "
                    f"with {what}"
                )
        keypoints = self.keypoints
        if keypoints is not None:
            keypoints = np.asarray(keypoints, np.float32)
            if keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 2:
                raise ValueError(
                    f"Detections.keypoints must have shape (N, K, 2), got {keypoints.shape}"
                )
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "class_id", class_id)
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "keypoints", keypoints)
        object.__setattr__(self, "image_wh", (int(self.image_wh[0]), int(self.image_wh[1])))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __iter__(self) -> Iterator[tuple[np.ndarray, float, int, str]]:
        for i in range(len(self)):
            yield (
                self.xyxy[i],
                float(self.confidence[i]),
                int(self.class_id[i]),
                self.class_names[i],
            )

    def where(self, mask: np.ndarray) -> Detections:
        """The detections where the boolean ``mask`` of shape ``(N,)`` is true."""
        mask = np.asarray(mask, bool)
        idx = np.flatnonzero(mask)
        return dataclasses.replace(
            self,
            xyxy=self.xyxy[idx],
            confidence=self.confidence[idx],
            class_id=self.class_id[idx],
            class_names=tuple(self.class_names[int(i)] for i in idx),
            keypoints=None if self.keypoints is None else self.keypoints[idx],
        )

    def pixels(self, image_wh: tuple[int, int] | None = None) -> np.ndarray:
        """Boxes in pixels of an image of ``image_wh`` (default: ``self.image_wh``), float32."""
        w, h = image_wh if image_wh is not None else self.image_wh
        if not w or not h:
            raise ValueError("Detections.pixels() needs image_wh: the image size is unknown")
        return self.xyxy * np.array([w, h, w, h], np.float32)

    def wire_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"xyxy": self.xyxy, "confidence": self.confidence, "class_id": self.class_id}
        if self.keypoints is not None:
            arrays["keypoints"] = self.keypoints
        return arrays

    def wire_fields(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "image_wh": list(self.image_wh)}

    @classmethod
    def _from_parts(
        cls, header: dict[str, Any], fields: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> Detections:
        return cls(
            **header,
            class_names=tuple(fields.get("class_names", ())),
            image_wh=tuple(fields.get("image_wh", (0, 0))),
            xyxy=arrays["xyxy"],
            confidence=arrays["confidence"],
            class_id=arrays["class_id"],
            keypoints=arrays.get("keypoints"),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Classifications(Message):
    """Top-k labels for one frame, highest confidence first.

    Attributes:
        class_names: ``K`` label strings.
        confidence: ``(K,)`` float32 in 0..1.
        class_id: ``(K,)`` int32.
    """

    kind: ClassVar[str] = "classifications"

    class_names: Sequence[str] = ()
    confidence: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    class_id: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        names = tuple(str(s) for s in self.class_names)
        confidence = _as_array(self.confidence, np.float32, ())
        class_id = _as_array(self.class_id, np.int32, ())
        if not (len(names) == len(confidence) == len(class_id)):
            raise ValueError(
                f"Classifications fields differ in length: {len(names)} names, "
                f"{len(confidence)} confidences, {len(class_id)} class ids"
            )
        object.__setattr__(self, "class_names", names)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "class_id", class_id)

    def __len__(self) -> int:
        return len(self.class_names)

    def top(self) -> tuple[str, float] | None:
        """The best label and its confidence, or ``None`` when empty."""
        if not len(self):
            return None
        return self.class_names[0], float(self.confidence[0])

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return {"confidence": self.confidence, "class_id": self.class_id}

    def wire_fields(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tensors(Message):
    """An ordered name -> ndarray map: raw model inputs or outputs."""

    kind: ClassVar[str] = "tensors"

    tensors: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def __len__(self) -> int:
        return len(self.tensors)

    def wire_arrays(self) -> dict[str, np.ndarray]:
        return dict(self.tensors)

    def wire_fields(self) -> dict[str, Any]:
        return {"order": list(self.tensors)}

    @classmethod
    def _from_parts(
        cls, header: dict[str, Any], fields: dict[str, Any], arrays: dict[str, np.ndarray]
    ) -> Tensors:
        order = fields.get("order", list(arrays))
        return cls(**header, tensors={name: arrays[name] for name in order})
