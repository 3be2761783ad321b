"""What the server tells load balancers and the deployment about itself: the standard gRPC
health service (NOT_SERVING until a model is loaded, and while draining), and a signal
that the served model changed (the replica report goes out at once, not at its next
interval)."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from server.served_model import ServingModel
from shared.proto.recserve.v1 import admin_pb2, recommender_pb2

RECOMMENDER = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"].full_name
MODEL_ADMIN = admin_pb2.DESCRIPTOR.services_by_name["ModelAdmin"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServingHealth:
    def __init__(self) -> None:
        self.servicer = health.aio.HealthServicer()
        self.draining = False
        self.changed = asyncio.Event()
        """Set when the served model or the draining changed; the deployment's report
        loop clears it."""
        self._updates: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for service in ("", RECOMMENDER):
            await self.servicer.set(service, NOT_SERVING)
        await self.servicer.set(MODEL_ADMIN, SERVING)

    def model_changed(self, model: ServingModel | None) -> None:
        """The registry's on_change: SERVING once a model is served (unless draining)."""
        status = SERVING if model is not None and not self.draining else NOT_SERVING
        for service in ("", RECOMMENDER):
            task = asyncio.ensure_future(self.servicer.set(service, status))
            self._updates.add(task)
            task.add_done_callback(self._updates.discard)
        self.changed.set()

    async def drain(self) -> None:
        """NOT_SERVING from now on: load balancers stop sending while calls are served."""
        self.draining = True
        for service in ("", RECOMMENDER):
            await self.servicer.set(service, NOT_SERVING)
        self.changed.set()
