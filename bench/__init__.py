"""Benchmarks and load generation (`recserve bench ...`): quality, serving, ingest, GPU.

They run the product as an operator would (real server processes, real clients) and
print a table and write JSON. Nothing in server/, worker/ or shared/ imports them.
"""
