"""Provider adapters (pure: verify, parse and normalize, render) and the HTTP ingress.

The provider modules are sans-I/O: bytes and headers in, `CancelRequested` events or
an immediate `Response` out; outcomes in, `Response` out. The I/O lives in
`adapters.http_app` (ASGI) and `adapters.bus` (Kafka request/reply).
"""
