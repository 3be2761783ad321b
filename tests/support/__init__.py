"""Test helpers: real processes (server, worker, console) and their plumbing."""
