"""Experiment arms: which arm a user falls in, by a stable hash of the user id."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

from server.served_model import ServingModel


@dataclass(frozen=True)
class Arm:
    """A version serving a share of users (or, as the shadow, also ranking a share of
    requests)."""

    version: int
    weight: float
    model: ServingModel

    @property
    def name(self) -> str:
        return arm_name(self.version)


def arm_name(version: int) -> str:
    """How impressions and online metrics name the arm that serves ``version``."""
    return f"v{version}"


def user_bucket(user_id: str) -> float:
    """A user's fixed place in [0, 1): a hash of the id, the same on every replica."""
    digest = hashlib.blake2b(user_id.encode(), digest_size=8, person=b"recserve-ab").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def pick_arm(arms: Sequence[Arm], user_id: str) -> Arm:
    """The arm a user belongs to: arms own consecutive slices of [0, 1) sized by their
    normalised weights, in the order given."""
    total = sum(arm.weight for arm in arms)
    point = user_bucket(user_id) * total
    for arm in arms:
        point -= arm.weight
        if point < 0:
            return arm
    return arms[-1]


def with_model(
    arms: list[Arm], shadow: Arm | None, old: ServingModel, new: ServingModel
) -> tuple[list[Arm], Arm | None]:
    """The arms and shadow with ``old`` replaced by ``new`` (the same version, extended)."""
    arms = [replace(arm, model=new) if arm.model is old else arm for arm in arms]
    if shadow is not None and shadow.model is old:
        shadow = replace(shadow, model=new)
    return arms, shadow
