"""Celery workers: training, evaluation, ONNX export and TensorRT engine builds.

Tasks in worker.tasks only handle ids, retries and time limits, then call the plain
functions in worker.pipeline. torch is imported inside the modules that need it
(shared.model.sasrec, worker.training, worker.export), never at package import.
"""
