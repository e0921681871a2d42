"""The native gRPC front end: HTTP/2 and gRPC framing in C (libnghttp2 through Cython).

`petcd.api.native._h2` is the extension (sans-I/O: bytes in, batches of calls out);
`petcd.api.native.server.NativeServer` serves petcd's method table over asyncio with it.
Importing `server` raises ImportError where the extension was not built; petcd then falls back
to the grpcio front end with a warning.
"""
