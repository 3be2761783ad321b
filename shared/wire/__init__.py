"""The wire: domain errors and their gRPC status, and the stub generator (the generated
stubs stay in ``shared.proto``, the import path the README and clients use)."""
