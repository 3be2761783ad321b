"""The HTTP/JSON door's OpenAPI 3.1 document, generated from the proto descriptors (never
written by hand, so it cannot drift from the messages): each route's request and response
schema, in the proto's JSON mapping (camelCase names, 64-bit integers as strings, enums
as their names), and the error body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "integer", "description": "the HTTP status"},
                "status": {"type": "string", "description": "the gRPC status name"},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "google.rpc.BadRequest with the field at fault",
                },
            },
        }
    },
}


def _field(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        _message(field.message_type, schemas)
        schema: dict[str, Any] = {"$ref": f"#/components/schemas/{field.message_type.full_name}"}
    elif field.type == FieldDescriptor.TYPE_ENUM:
        schema = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        schema = dict(SCALARS[field.type])
    repeated = getattr(field, "is_repeated", None)
    if repeated if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED:
        return {"type": "array", "items": schema}
    return schema


def _message(descriptor: Descriptor, schemas: dict[str, Any]) -> str:
    """Adds the message's schema (and those it refers to); returns its name."""
    name = str(descriptor.full_name)
    if name not in schemas:
        schemas[name] = {}  # placed first: a message that refers to itself stops here
        schemas[name] = {
            "type": "object",
            "properties": {f.json_name: _field(f, schemas) for f in descriptor.fields},
            "description": f"{name}; snake_case names are accepted too",
        }
    return name


def openapi_document(routes: Sequence[Any]) -> dict[str, Any]:
    """The document for ``routes`` (server/http.py's Route: path, method, request,
    response, summary)."""
    schemas: dict[str, Any] = {"Error": ERROR}
    paths: dict[str, Any] = {}
    for route in routes:
        request = _message(route.request.DESCRIPTOR, schemas)
        response = _message(route.response.DESCRIPTOR, schemas)
        paths[route.path] = {
            "post": {
                "summary": route.summary,
                "operationId": route.method.rsplit("/", 1)[-1],
                "description": f"The gRPC method {route.method.strip('/')}.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
                    },
                },
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{response}"}
                            }
                        },
                    },
                    "default": {
                        "description": "An error (the gRPC status mapped to HTTP)",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                    },
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "recserve HTTP/JSON API", "version": "v1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
