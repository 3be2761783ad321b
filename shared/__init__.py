"""Code every part of recserve shares: settings, storage, bundle format, metrics.

`shared` never imports `server`, `worker` or `tui` (tests/test_dependencies.py
enforces it), and imports nothing heavy (torch, tensorrt, textual) at import time.
"""
