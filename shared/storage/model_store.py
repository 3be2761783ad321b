"""Model versions: registration, activation (one active version), rollback and pruning."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text, update
from sqlmodel import Session, col, select

from shared.storage import experiment_store
from shared.storage.tables import (
    ModelActivation,
    ModelStatus,
    ModelVersion,
    as_utc,
    utcnow,
)
from shared.wire.errors import FailedPrecondition, NotFound


def create_model_version(session: Session, *, model: ModelVersion) -> ModelVersion:
    session.add(model)
    session.flush()
    return model


def get_model_version(session: Session, *, version: int) -> ModelVersion:
    model = session.get(ModelVersion, version)
    if model is None:
        raise NotFound(
            f"model version {version} does not exist; ListModels shows the existing ones"
        )
    return model


def list_model_versions(session: Session, *, limit: int) -> list[ModelVersion]:
    return list(
        session.exec(select(ModelVersion).order_by(col(ModelVersion.version).desc()).limit(limit))
    )


def get_active_model(session: Session) -> ModelVersion | None:
    return session.exec(
        select(ModelVersion)
        .where(ModelVersion.status == ModelStatus.ACTIVE)
        .order_by(col(ModelVersion.activated_at).desc())
    ).first()


def servable_models(session: Session) -> list[ModelVersion]:
    """Versions with a bundle that may be served (active, ready, retired), newest first."""
    return list(
        session.exec(
            select(ModelVersion)
            .where(
                col(ModelVersion.status).in_(
                    [ModelStatus.ACTIVE, ModelStatus.READY, ModelStatus.RETIRED]
                )
            )
            .order_by(col(ModelVersion.version).desc())
        )
    )


ACTIVATABLE = (ModelStatus.READY, ModelStatus.ACTIVE, ModelStatus.RETIRED)


def check_activatable(model: ModelVersion) -> None:
    if model.status not in ACTIVATABLE:
        raise FailedPrecondition(
            f"model version {model.version} has status {model.status}; "
            "only ready or retired versions can be activated"
        )


MODELS_LOCK = 7_256_001

"""PostgreSQL advisory lock key of model-version status changes (activation, pruning)."""


def lock_models(session: Session) -> None:
    """Serialises changes of model-version status until the transaction ends: activations
    and pruning, on any replica or worker. PostgreSQL: a transaction-scoped advisory lock.
    SQLite: the database's write lock, taken by a first write before anything is read, so
    that what the transaction reads next is what it writes over."""
    session.flush()  # this transaction's own pending changes are kept, not expired
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MODELS_LOCK})
    else:
        connection.execute(text("UPDATE model_version SET status = status WHERE version = 0"))


ACTIVATION_GRACE = timedelta(minutes=10)

"""How long a begun activation keeps its version from pruning (a server that began one and
died must not pin the version forever)."""


def begin_activation(session: Session, *, version: int) -> ModelVersion:
    """Marks ``version`` as being activated (its bundle is being loaded), under
    lock_models: pruning then leaves it alone. Raises NotFound or FailedPrecondition."""
    lock_models(session)
    session.expire_all()
    model = get_model_version(session, version=version)
    check_activatable(model)
    model.activating_since = utcnow()
    session.add(model)
    session.flush()
    return model


def end_activation(session: Session, *, version: int) -> None:
    """An activation that did not complete: the version may be pruned again."""
    session.execute(
        update(ModelVersion)
        .where(col(ModelVersion.version) == version)
        .values(activating_since=None)
    )


def activate_model(session: Session, *, version: int, reason: str) -> ModelVersion:
    """Makes ``version`` the one active model; the previously active one becomes retired.
    The activation is recorded with the version it replaced and ``reason``. Runs under
    lock_models, so concurrent activations (and a prune) happen one after the other; the
    partial unique index on the active status is the database's own guarantee."""
    lock_models(session)
    session.expire_all()  # what was read before the lock may have changed
    model = get_model_version(session, version=version)
    check_activatable(model)
    previous = get_active_model(session)
    session.execute(
        update(ModelVersion)
        .where(col(ModelVersion.status) == ModelStatus.ACTIVE, col(ModelVersion.version) != version)
        .values(status=ModelStatus.RETIRED)
    )
    model.status = ModelStatus.ACTIVE
    model.activated_at = utcnow()
    model.activating_since = None
    session.add(model)
    if previous is None or previous.version != version:
        session.add(
            ModelActivation(
                version=version,
                previous_version=previous.version if previous else None,
                activated_at=model.activated_at,
                reason=reason[:256],
            )
        )
    session.flush()
    return model


def list_activations(
    session: Session, *, limit: int, version: int | None = None
) -> list[ModelActivation]:
    """Activations, newest first (only those of ``version`` when given)."""
    statement = select(ModelActivation)
    if version is not None:
        statement = statement.where(ModelActivation.version == version)
    return list(session.exec(statement.order_by(col(ModelActivation.id).desc()).limit(limit)).all())


def last_activation(session: Session, *, version: int) -> ModelActivation | None:
    found = list_activations(session, limit=1, version=version)
    return found[0] if found else None


def rollback_target(session: Session) -> int:
    """The version that was active before the active one. FailedPrecondition when there
    is none, or it can no longer be activated."""
    active = get_active_model(session)
    if active is None:
        raise FailedPrecondition("no model is active, so there is nothing to roll back")
    last = last_activation(session, version=int(active.version or 0))
    if last is None or not last.previous_version:
        raise FailedPrecondition(
            f"model version {active.version} replaced no other version; nothing to roll back to"
        )
    check_activatable(get_model_version(session, version=last.previous_version))
    return last.previous_version


def prune_candidates(session: Session, *, keep_ready: int) -> list[ModelVersion]:
    """Versions whose bundles the retention rule lets go: all but the active version, the
    one active before it, the versions of the traffic split and its shadow, and the newest
    ``keep_ready`` ready versions (failed ones too)."""
    keep: set[int] = {arm.version for arm in experiment_store.traffic_arms(session)}
    active = get_active_model(session)
    if active is not None:
        keep.add(int(active.version or 0))
        last = last_activation(session, version=int(active.version or 0))
        if last is not None and last.previous_version:
            keep.add(last.previous_version)
    ready = session.exec(
        select(ModelVersion.version)
        .where(ModelVersion.status == ModelStatus.READY)
        .order_by(col(ModelVersion.version).desc())
        .limit(keep_ready)
    ).all()
    keep.update(int(v or 0) for v in ready)
    candidates = session.exec(
        select(ModelVersion).where(
            col(ModelVersion.status).in_(
                [ModelStatus.READY, ModelStatus.RETIRED, ModelStatus.FAILED]
            )
        )
    ).all()
    horizon = utcnow() - ACTIVATION_GRACE
    return sorted(
        (
            m
            for m in candidates
            if int(m.version or 0) not in keep
            and (m.activating_since is None or as_utc(m.activating_since) < horizon)
        ),
        key=lambda m: int(m.version or 0),
    )


def claim_prune(session: Session, *, version: int, keep_ready: int) -> bool:
    """Marks ``version`` pruned if the retention rule still lets it go, under lock_models:
    a version activated (or made the rollback target) since the candidates were listed is
    kept. True when the caller may delete its bundle: the mark comes first, so an
    activation that follows finds the version pruned and refuses it."""
    lock_models(session)
    session.expire_all()
    if version not in {
        int(m.version or 0) for m in prune_candidates(session, keep_ready=keep_ready)
    }:
        return False
    session.execute(
        update(ModelVersion)
        .where(col(ModelVersion.version) == version)
        .values(status=ModelStatus.PRUNED, size_bytes=0)
    )
    return True
