"""The grpc.aio server: thin servicers -> core -> batcher -> backend.

The CPU path (ONNX Runtime) never imports torch; tests/test_dependencies.py checks it.
"""
