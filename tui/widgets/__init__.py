"""Panes of the console. Each owns its gRPC calls, made in workers."""
