"""Who may call what: named bearer tokens and client certificates with roles, deny by
default, and the rule that a server reachable from other hosts authenticates its callers.

Roles, each a superset of the one before:

    read   Recommend, RecommendBatch, SimilarItems
    write  Feedback, FeedbackStream        (and read)
    admin  every ModelAdmin method         (and read and write)

Authentication is configured once any token of any role is set, or a client CA (mTLS).
From then on every method needs a credential of its role or higher:

- a role with no tokens of its own is closed, not open;
- a method missing from ``METHOD_ROLES`` is refused (tests walk every method of every
  service, so an RPC added later cannot stay unmapped);
- ``anonymous_roles`` opens roles to callers without a credential, explicitly (and the
  server logs a warning at start-up);
- a client certificate verified against the client CA grants the role that
  ``client_cert_roles`` maps its subject's common name to (none by default).

Tokens have names: ``name=secret``, so that logs and audits say who called without ever
showing a secret (a bare secret is named ``<role>-<n>``). A caller sends only the secret:
``authorization: Bearer <secret>``. No credential, or an unknown one, gets
UNAUTHENTICATED; a credential of a lower role PERMISSION_DENIED. Secrets are compared in
constant time against every configured secret. Health checking and server reflection
are always open.

With no authentication configured at all every method is open: the embedded default,
which ``check_listen_safety`` keeps on loopback unless ``insecure`` says a trusted network
or a sidecar authenticates callers.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from shared.config import ServerSettings
from shared.wire.errors import InvalidArgument

Role = Literal["read", "write", "admin"]
ROLES: tuple[Role, ...] = ("read", "write", "admin")
RANK: dict[str, int] = {"read": 1, "write": 2, "admin": 3}
OPEN = "open"
"""The pseudo-role of methods anyone may call: health checking and reflection."""

_ADMIN_METHODS = (
    "ListModels", "GetModel", "GetModelDetails", "ActivateModel", "RollbackModel",
    "ListActivations", "PruneModels", "StartTraining", "GetTrainingOptions", "BuildEngine",
    "ListJobs",
    "GetJob", "CancelJob", "GetServerStats", "GetUserHistory", "ListItems",
    "SetItemAvailability", "UpsertItems", "SetTrafficSplit", "GetExperiment", "PromoteArm",
    "ListRuleSets", "PutRuleSet", "DeleteRuleSet", "DeleteUser", "ExportUser", "ListAuditEntries",
)  # fmt: skip
METHOD_ROLES: dict[str, str] = {
    "/recserve.v1.Recommender/Recommend": "read",
    "/recserve.v1.Recommender/RecommendBatch": "read",
    "/recserve.v1.Recommender/SimilarItems": "read",
    "/recserve.v1.Recommender/Feedback": "write",
    "/recserve.v1.Recommender/FeedbackStream": "write",
    **{f"/recserve.v1.ModelAdmin/{name}": "admin" for name in _ADMIN_METHODS},
    "/grpc.health.v1.Health/Check": OPEN,
    "/grpc.health.v1.Health/Watch": OPEN,
    "/grpc.health.v1.Health/List": OPEN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": OPEN,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": OPEN,
}
"""Every method the server serves and the role it needs; anything else is refused."""

ANONYMOUS = "anonymous"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True)
class NamedToken:
    name: str
    role: Role
    secret: bytes


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as the headers tell: a token's name and role, or
    ``anonymous`` (role None unless anonymous_roles grants one)."""

    name: str
    role: str | None
    offered_token: bool = False


@dataclass(frozen=True)
class Refusal:
    code: grpc.StatusCode
    message: str


def parse_token(entry: str, role: Role, index: int) -> NamedToken:
    """``name=secret`` (or a bare secret, named ``<role>-<index>``)."""
    name, sep, secret = entry.partition("=")
    if not sep:
        name, secret = f"{role}-{index}", entry
    field = f"server.{role}_tokens[{index - 1}]"
    if not _NAME.match(name):
        raise InvalidArgument(
            field, "has a name that is not 1-64 letters, digits or _.@- (form: name=secret)"
        )
    if len(secret) < 8:
        raise InvalidArgument(field, f"({name}) has a secret under 8 characters")
    return NamedToken(name, role, secret.encode())


def configured_tokens(settings: ServerSettings) -> list[NamedToken]:
    """Every token of every role, parsed; names are unique across roles."""
    entries: dict[Role, list[str]] = {
        "read": [t.get_secret_value() for t in settings.read_tokens],
        "write": [t.get_secret_value() for t in settings.write_tokens],
        "admin": [t.get_secret_value() for t in settings.admin_tokens],
    }
    if settings.admin_token is not None:
        entries["admin"].append(settings.admin_token.get_secret_value())
    tokens = [
        parse_token(entry, role, n)
        for role in ROLES
        for n, entry in enumerate(entries[role], start=1)
    ]
    names = [t.name for t in tokens]
    for name in names:
        if names.count(name) > 1:
            raise InvalidArgument("server.*_tokens", f"name the token {name!r} more than once")
    return tokens


def token_secret(entry: str) -> str:
    """The secret of a ``name=secret`` entry: what a client sends."""
    _, sep, secret = entry.partition("=")
    return secret if sep else entry


class AccessPolicy:
    """Decides from a call's headers (and, for mTLS, its verified certificate) whether
    it may proceed. No gRPC server state: the guard (server/guard.py) applies it."""

    def __init__(self, settings: ServerSettings) -> None:
        self._tokens = configured_tokens(settings)
        self.cert_roles: dict[str, str] = dict(settings.client_cert_roles)
        self.anonymous_roles = frozenset(settings.anonymous_roles)
        self.authenticated = bool(self._tokens) or settings.tls_client_ca is not None
        """Whether any authentication is configured (then everything is closed unless
        granted)."""

    def caller(self, metadata: Iterable[tuple[str, Any]] | None) -> Caller:
        """The caller the ``authorization`` header names (every secret is compared, in
        constant time, whichever matches)."""
        if not self.authenticated:
            return Caller(ANONYMOUS, "admin")  # nothing configured: open (loopback, --insecure)
        header = ""
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str):
                header = value
                break
        if not header.startswith("Bearer "):
            return Caller(ANONYMOUS, self._anonymous_role(), offered_token=bool(header))
        offered = header[7:].encode()
        found: NamedToken | None = None
        for token in self._tokens:
            if hmac.compare_digest(token.secret, offered):
                found = token
        if found is None:
            return Caller(ANONYMOUS, None, offered_token=True)
        return Caller(found.name, found.role, offered_token=True)

    def _anonymous_role(self) -> str | None:
        granted = [r for r in self.anonymous_roles if r in RANK]
        return max(granted, key=RANK.__getitem__) if granted else None

    def refusal(self, method: str, caller: Caller) -> Refusal | None:
        """None when ``caller`` may call ``method``, else why not."""
        needed = METHOD_ROLES.get(method)
        if needed is None:
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} is not in the server's role map: no caller may call it",
            )
        if needed == OPEN:
            return None
        if caller.role is None or (caller.name == ANONYMOUS and RANK[caller.role] < RANK[needed]):
            what = "an unknown token" if caller.offered_token else "no credential"
            return Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{method} needs the metadata 'authorization: Bearer <token>' with a token "
                f"of the {needed} role or higher (this call offered {what})",
            )
        if RANK[caller.role] < RANK[needed]:
            return Refusal(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} needs the {needed} role; {caller.name} has the {caller.role} role",
            )
        return None

    def certificate_caller(self, auth_context: Mapping[str, Iterable[bytes]]) -> Caller | None:
        """The caller a verified client certificate names, when client_cert_roles maps
        its common name to a role; None otherwise."""
        for name in auth_context.get("x509_common_name", ()):
            text = name.decode(errors="replace")
            role = self.cert_roles.get(text)
            if role is not None:
                return Caller(f"cert:{text}", role)
        return None

    def needs_certificate(self, method: str, caller: Caller) -> bool:
        """Whether a call refused on its headers may still be granted by its certificate
        (no token offered, and certificates can grant roles)."""
        return bool(self.cert_roles) and not caller.offered_token and method in METHOD_ROLES


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_safety(settings: ServerSettings, *, what: str = "server.host") -> None:
    """Refuses to listen beyond this machine without authentication (tokens, or client
    certificates mapped to roles), unless ``insecure`` says a trusted network or a sidecar
    does the job. TLS alone is not enough: encryption authenticates nobody."""
    if settings.insecure or is_loopback(settings.host):
        return
    tokens = bool(configured_tokens(settings))
    certificates = settings.tls_client_ca is not None and bool(settings.client_cert_roles)
    if not tokens and not certificates:
        raise InvalidArgument(
            what,
            f"is {settings.host}, reachable from other machines, with no authentication: "
            "anyone could write feedback and run ModelAdmin. Configure tokens "
            "(server.read_tokens, write_tokens, admin_tokens as name=secret) or client "
            "certificates (server.tls_client_ca with server.client_cert_roles), listen on "
            "127.0.0.1, or pass --insecure (RECSERVE_SERVER__INSECURE=true) if a trusted "
            "network or sidecar authenticates callers (TLS alone does not)",
        )


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from tls_cert/tls_key, requiring client certificates signed by
    tls_client_ca when it is set (mTLS); None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        if settings.tls_cert is not None or settings.tls_key is not None:
            raise InvalidArgument(
                "server.tls_cert", "and server.tls_key must be set together (PEM files)"
            )
        return None
    ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
