"""The request pipeline: small typed stages from a request to its answer (see
docs/architecture.md, "The request path")."""
