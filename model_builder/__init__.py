"""Offline model building: what ``pipeline models fetch`` needs beyond copying a file.

Not used at run time: nodes load finished ``.onnx``/``.tflite`` files. This package turns a
pinned source into such a file: a pure-Python TF ``GraphDef`` reader (:mod:`.tf_graphdef`),
the SSDLite graph -> ONNX converter (:mod:`.convert_ssdlite`), ONNX -> TFLite for that graph
(:mod:`.ssdlite_tflite`) on a small flatbuffers writer (:mod:`.tflite_writer`), the face
classifier trainer (:mod:`.build_classifier`), and :class:`~.build.ModelBuilder`, which
``pipeline_nodes.inference.models.fetch`` calls for every catalog entry that is not a plain copy.
Heavy packages (``onnx``, ``ai_edge_litert``, ``skimage``) are imported only when used.
"""
