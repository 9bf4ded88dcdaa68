"""A self-hosted ML data platform that speaks Viam's public app API.

``pipeline cloud serve`` runs a gRPC server (grpclib, the protobuf stubs of ``viam-sdk``)
that keeps uploaded data and a model registry per organisation and runs inference on uploaded
data in a pool of worker processes. Viam's own ``DataClient`` works against it. The pieces:

- :mod:`pipeline_cloud.db`: tables (SQLAlchemy 2; SQLite by default, PostgreSQL on request),
  migrated by Alembic;
- :mod:`pipeline_cloud.blobs`: the blob folder (images, model files), fsynced writes;
- :mod:`pipeline_cloud.store`: everything a request does, scoped to the caller's organisation;
- :mod:`pipeline_cloud.registry`: model files checked on upload, conversion for the edge;
- :mod:`pipeline_cloud.inference`: the worker pool that runs models like the graph's nodes;
- :mod:`pipeline_cloud.server`: the gRPC services;
- :mod:`pipeline_cloud.client` and :mod:`pipeline_cloud.cli`: the command line.
"""
