"""Framework-generic gRPC pieces: flat tensors, API-key auth, TLS, a server start helper.

These speak Viam's public API shapes (the generated protobuf and grpclib stubs that ship inside
``viam-sdk``) but know nothing of graphs, nodes or models: the machine server
(``pipeline.serve``) and the cloud both build on them. They need the ``serve`` extra
(``pip install 'edge-vision-pipeline[serve]'``); import the submodules directly::

    from pipeline.rpc.flat_tensors import from_flat_tensors, to_flat_tensors
    from pipeline.rpc.auth import ApiKeys, AuthService, TokenIssuer, install_auth_check
    from pipeline.rpc.tls import make_self_signed, server_ssl_context
    from pipeline.rpc.server import RpcServer, parse_endpoint
"""
