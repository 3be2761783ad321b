"""Registering the servicers so that malformed bytes are a client error.

gRPC's generated registration parses a request with the message class's FromString;
bytes that do not parse then end the call as UNKNOWN (unary) or INTERNAL (streaming),
as if the server had failed. Here every request is parsed by ``lenient`` instead: bytes
that do not parse arrive as a ``Malformed`` value, and the servicer decorator
(server/errors.py) answers INVALID_ARGUMENT naming the message type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass


@dataclass(frozen=True)
class Malformed:
    """A request whose bytes are not a valid ``message`` (the parser's ``error``)."""

    message: str
    error: str


def lenient(message_class: Any) -> Callable[[bytes], Any]:
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # DecodeError, invalid UTF-8 in a string field, ...
            return Malformed(name, str(exc) or type(exc).__name__)

    return parse


def add_servicer(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Registers ``servicer``'s methods for ``service`` with lenient request parsing."""
    handlers = {}
    for method in service.methods:
        if method.server_streaming:
            raise NotImplementedError(f"{method.full_name}: server streaming is not used")
        request = lenient(GetMessageClass(method.input_type))
        respond = GetMessageClass(method.output_type).SerializeToString
        make = (
            grpc.stream_unary_rpc_method_handler
            if method.client_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=request,
            response_serializer=respond,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
