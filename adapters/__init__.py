"""Provider adapters (pure: verify, parse and normalize, render) and the HTTP ingress.

The provider modules are sans-I/O: bytes, headers and the receive time in, the cancels
to publish (`contract.CancelFields`) with their typed answer, or an immediate `Response`,
out; outcomes in, `Response` out. The I/O lives in `adapters.http_app` (which stamps the
envelope on the cancels) and `adapters.bus` (Kafka request/reply).
"""
