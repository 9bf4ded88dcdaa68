"""``pipeline call`` (call a served graph without the Viam SDK) and ``pipeline serve-cert``.

::

    pipeline call 127.0.0.1:8081 faces detections --camera camera
    pipeline call 127.0.0.1:8081 faces detections --image photo.jpg --json
    pipeline call 127.0.0.1:8081 faces infer --input input=photo.jpg
    pipeline call 127.0.0.1:8081 faces metadata
    pipeline call 127.0.0.1:8081 camera image --out frame.jpg
    pipeline call /tmp/faces.sock faces capture --camera camera --out frame.jpg

Methods: ``detections``, ``classifications`` (``--n``), ``capture`` (image + detections +
classifications of one frame), ``properties`` (vision); ``infer``, ``metadata`` (ML model);
``image``, ``camera-properties`` (camera); ``resources`` (RESOURCE is ignored). An address is
``HOST:PORT`` (plain HTTP/2), ``https://HOST:PORT`` (TLS; certificates of local hosts are not
verified unless ``--cacert`` is given) or a Unix socket path. With ``--api-key-file`` (the
first key is used) the call authenticates as the Viam SDK does. Exit codes: 0 done, 1 the
server refused (its status and message are printed), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["call", "register_call", "register_serve_cert"]

METHODS = {
    "detections": "vision",
    "classifications": "vision",
    "capture": "vision",
    "properties": "vision",
    "infer": "mlmodel",
    "metadata": "mlmodel",
    "image": "camera",
    "camera-properties": "camera",
    "resources": "robot",
}


def register_call(sub: Any) -> None:
    p = sub.add_parser(
        "call",
        help="call a served graph's vision, ML model or camera API (no Viam SDK needed)",
        description=__doc__.split("::")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("address", help="HOST:PORT, https://HOST:PORT or a Unix socket path")
    p.add_argument("resource", help="the node id (resource name)")
    p.add_argument("method", choices=sorted(METHODS), help="the API method to call")
    p.add_argument("--camera", default="", help="camera (source node) for *FromCamera calls")
    p.add_argument("--image", metavar="FILE", help="an image file to send (JPEG/PNG)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="an infer input: a .npy array, or an image resized and cast to the input's shape",
    )
    p.add_argument("--n", type=int, default=5, help="classifications: how many (default 5)")
    p.add_argument("--out", metavar="FILE", help="image/capture: write the image here")
    p.add_argument("--png", action="store_true", help="image: ask for PNG instead of JPEG")
    p.add_argument("--api-key-file", metavar="FILE", help='"KEY_ID KEY" lines; the first is used')
    p.add_argument("--cacert", metavar="FILE", help="verify the server's TLS certificate with it")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_call)


def register_serve_cert(sub: Any) -> None:
    p = sub.add_parser(
        "serve-cert", help="make a self-signed TLS certificate and key for serving locally"
    )
    p.add_argument("--cert", default="certs/cert.pem", help="certificate file to write")
    p.add_argument("--key", default="certs/key.pem", help="private key file to write (mode 0600)")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        help="a host name or IP the certificate is for (repeatable; default localhost, "
        "127.0.0.1, ::1)",
    )
    p.add_argument("--days", type=int, default=365)
    p.set_defaults(func=_cmd_serve_cert)


def _cmd_serve_cert(args: argparse.Namespace) -> int:
    from pipeline.rpc.tls import DEFAULT_HOSTS, make_self_signed

    try:
        make_self_signed(args.cert, args.key, hosts=args.host or DEFAULT_HOSTS, days=args.days)
    except (OSError, ValueError) as exc:
        print(f"pipeline serve-cert: {exc}", file=sys.stderr)
        return 2
    print(f"certificate: {args.cert}\nkey:         {args.key}")
    print(
        f"serve with:  pipeline run GRAPH --serve 127.0.0.1:8081 --tls-cert {args.cert} "
        f"--tls-key {args.key}"
    )
    return 0


def _cmd_call(args: argparse.Namespace) -> int:
    from grpclib import GRPCError

    try:
        result = asyncio.run(call(args))
    except GRPCError as exc:
        print(f"pipeline call: {exc.status.name}: {exc.message}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError) as exc:
        print(f"pipeline call: cannot reach {args.address}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"pipeline call: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(_human(args.method, result))
    return 0


async def _channel(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    from grpclib.client import Channel

    from pipeline.rpc.server import is_loopback, parse_endpoint
    from pipeline.rpc.tls import client_ssl_context

    address = args.address
    tls = address.startswith("https://")
    endpoint = parse_endpoint(address.removeprefix("https://").removeprefix("http://"))
    if endpoint.path is not None:
        channel = Channel(path=endpoint.path)
    else:
        ssl = None
        if tls:
            host = endpoint.host or ""
            ssl = client_ssl_context(args.cacert, verify=bool(args.cacert) or not is_loopback(host))
        channel = Channel(endpoint.host, endpoint.port, ssl=ssl)
    metadata: dict[str, str] = {}
    if args.api_key_file:
        from viam.gen.proto.rpc.v1 import auth_grpc, auth_pb2

        key_id, key = _first_key(args.api_key_file)
        reply = await auth_grpc.AuthServiceStub(channel).Authenticate(
            auth_pb2.AuthenticateRequest(
                entity=key_id, credentials=auth_pb2.Credentials(type="api-key", payload=key)
            ),
            timeout=args.timeout,
        )
        metadata["authorization"] = f"Bearer {reply.access_token}"
    return channel, metadata


def _first_key(path: str) -> tuple[str, str]:
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) == 2:
            return fields[0], fields[1]
    raise ValueError(f"{path}: no 'KEY_ID KEY' line")


def _detections(items: Any) -> list[dict[str, Any]]:
    return [
        {
            "class_name": d.class_name,
            "confidence": round(d.confidence, 6),
            "x_min": d.x_min,
            "y_min": d.y_min,
            "x_max": d.x_max,
            "y_max": d.y_max,
            "x_min_normalized": d.x_min_normalized,
            "y_min_normalized": d.y_min_normalized,
            "x_max_normalized": d.x_max_normalized,
            "y_max_normalized": d.y_max_normalized,
        }
        for d in items
    ]


def _classifications(items: Any) -> list[dict[str, Any]]:
    return [{"class_name": c.class_name, "confidence": round(c.confidence, 6)} for c in items]


def _image_request(path: str) -> dict[str, Any]:
    from pipeline.serve.images import decode_image

    data = Path(path).read_bytes()
    image = decode_image(data)
    return {"image": data, "width": image.shape[1], "height": image.shape[0]}


async def call(args: argparse.Namespace) -> Any:
    """Make the call; returns a JSON-able result."""
    from google.protobuf.json_format import MessageToDict
    from viam.gen.component.camera.v1 import camera_grpc, camera_pb2
    from viam.gen.robot.v1 import robot_grpc, robot_pb2
    from viam.gen.service.mlmodel.v1 import mlmodel_grpc, mlmodel_pb2
    from viam.gen.service.vision.v1 import vision_grpc, vision_pb2

    from pipeline.rpc.flat_tensors import from_flat_tensors, to_flat_tensors

    channel, md = await _channel(args)
    kw = {"timeout": args.timeout, "metadata": md}
    name, method = args.resource, args.method
    try:
        if method == "resources":
            reply = await robot_grpc.RobotServiceStub(channel).ResourceNames(
                robot_pb2.ResourceNamesRequest(), **kw
            )
            return [f"{r.namespace}:{r.type}:{r.subtype}/{r.name}" for r in reply.resources]
        if METHODS[method] == "vision":
            vision = vision_grpc.VisionServiceStub(channel)
            if method == "properties":
                reply = await vision.GetProperties(vision_pb2.GetPropertiesRequest(name=name), **kw)
                return MessageToDict(reply, preserving_proto_field_name=True)
            if method == "detections":
                if args.image:
                    reply = await vision.GetDetections(
                        vision_pb2.GetDetectionsRequest(
                            name=name, mime_type="image/jpeg", **_image_request(args.image)
                        ),
                        **kw,
                    )
                else:
                    reply = await vision.GetDetectionsFromCamera(
                        vision_pb2.GetDetectionsFromCameraRequest(
                            name=name, camera_name=args.camera
                        ),
                        **kw,
                    )
                return _detections(reply.detections)
            if method == "classifications":
                if args.image:
                    reply = await vision.GetClassifications(
                        vision_pb2.GetClassificationsRequest(
                            name=name,
                            n=args.n,
                            mime_type="image/jpeg",
                            **_image_request(args.image),
                        ),
                        **kw,
                    )
                else:
                    reply = await vision.GetClassificationsFromCamera(
                        vision_pb2.GetClassificationsFromCameraRequest(
                            name=name, camera_name=args.camera, n=args.n
                        ),
                        **kw,
                    )
                return _classifications(reply.classifications)
            properties = await vision.GetProperties(
                vision_pb2.GetPropertiesRequest(name=name), **kw
            )
            reply = await vision.CaptureAllFromCamera(
                vision_pb2.CaptureAllFromCameraRequest(
                    name=name,
                    camera_name=args.camera,
                    return_image=True,
                    return_detections=properties.detections_supported,
                    return_classifications=properties.classifications_supported,
                ),
                **kw,
            )
            if args.out:
                Path(args.out).write_bytes(reply.image.image)
            return {
                "frame": MessageToDict(reply.extra),
                "image": {"mime_type": reply.image.mime_type, "bytes": len(reply.image.image)},
                "detections": _detections(reply.detections),
                "classifications": _classifications(reply.classifications),
            }
        if METHODS[method] == "mlmodel":
            model = mlmodel_grpc.MLModelServiceStub(channel)
            meta = await model.Metadata(mlmodel_pb2.MetadataRequest(name=name), **kw)
            if method == "metadata":
                return MessageToDict(meta.metadata, preserving_proto_field_name=True)
            inputs = _infer_inputs(args.input, meta.metadata)
            reply = await model.Infer(
                mlmodel_pb2.InferRequest(name=name, input_tensors=to_flat_tensors(inputs)), **kw
            )
            outputs = from_flat_tensors(reply.output_tensors)
            return {
                k: {
                    "dtype": str(v.dtype),
                    "shape": list(v.shape),
                    "values": v.reshape(-1)[:8].tolist(),
                    "min": float(v.min()) if v.size else None,
                    "max": float(v.max()) if v.size else None,
                }
                for k, v in outputs.items()
            }
        camera = camera_grpc.CameraServiceStub(channel)
        if method == "camera-properties":
            reply = await camera.GetProperties(camera_pb2.GetPropertiesRequest(name=name), **kw)
            return MessageToDict(reply, preserving_proto_field_name=True)
        from google.protobuf import struct_pb2

        extra = struct_pb2.Struct()
        if args.png:
            extra.update({"mime_type": "image/png"})
        reply = await camera.GetImages(camera_pb2.GetImagesRequest(name=name, extra=extra), **kw)
        image = reply.images[0]
        if args.out:
            Path(args.out).write_bytes(image.image)
        return {
            "source_name": image.source_name,
            "mime_type": image.mime_type,
            "bytes": len(image.image),
            "written_to": args.out,
        }
    finally:
        channel.close()


def _infer_inputs(specs: list[str], metadata: Any) -> dict[str, np.ndarray]:
    wanted = {t.name: t for t in metadata.input_info}
    if not specs:
        raise ValueError(
            "infer needs --input NAME=FILE; the model's inputs: "
            + ", ".join(f"{t.name} {t.data_type} {list(t.shape)}" for t in metadata.input_info)
        )
    inputs: dict[str, np.ndarray] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not file:
            raise ValueError(f"--input {spec!r}: expected NAME=FILE")
        if file.endswith(".npy"):
            inputs[name] = np.load(file, allow_pickle=False)
            continue
        info = wanted.get(name)
        if info is None:
            raise ValueError(
                f"--input {name!r}: the model has no such input; it has {list(wanted)}"
            )
        inputs[name] = _image_tensor(file, info)
    return inputs


def _image_tensor(path: str, info: Any) -> np.ndarray:
    """An image file as the input tensor: RGB, resized to its H and W (NHWC or NCHW),
    uint8 as is, floats scaled to 0..1."""
    import cv2

    from pipeline.serve.images import decode_image

    shape = list(info.shape)
    if len(shape) != 4:
        raise ValueError(f"input {info.name!r} has shape {shape}: give a .npy file instead")
    nchw = shape[1] in (1, 3) and shape[3] not in (1, 3)
    h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    image = decode_image(Path(path).read_bytes())
    if h > 0 and w > 0:
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    rgb = image[..., ::-1]
    array = rgb.astype(info.data_type)
    if info.data_type.startswith("float"):
        array = array / np.array(255, info.data_type)
    array = array[None]
    if nchw:
        array = array.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(array)


def _human(method: str, result: Any) -> str:
    if method in ("detections",):
        if not result:
            return "no detections"
        return "\n".join(
            f"{d['class_name']:<16} {d['confidence']:.3f}  "
            f"({d['x_min']}, {d['y_min']}) - ({d['x_max']}, {d['y_max']}) px"
            for d in result
        )
    if method == "classifications":
        return "\n".join(f"{c['class_name']:<24} {c['confidence']:.3f}" for c in result) or (
            "no classifications"
        )
    if method == "resources":
        return "\n".join(result)
    return json.dumps(result, indent=2)
