"""The operator API on business rules: named rule sets, listed, put and deleted (a part
of AdminService, server/admin.py). A change is recorded with the rule set, in one
transaction, and every replica loads the rule sets again when it hears of it
(server/invalidation.py); this replica does so before answering."""

from __future__ import annotations

from sqlmodel import Session

from server.admin_base import AdminBase
from shared.model.rules import MAX_RULE_SETS, RuleSet, check_name, check_rule_set
from shared.storage import rule_store
from shared.telemetry import caller_name
from shared.wire.errors import FailedPrecondition, NotFound


class RulesAdmin(AdminBase):
    async def list_rule_sets(self) -> list[RuleSet]:
        return await self._db(rule_store.list_rule_sets)

    async def put_rule_set(self, rule_set: RuleSet) -> RuleSet:
        """Checks every field, then creates or replaces the set (at most MAX_RULE_SETS)."""
        check_rule_set(rule_set)
        by = caller_name.get() or "anonymous"

        def put(session: Session) -> RuleSet:
            existing = {r.name for r in rule_store.list_rule_sets(session)}
            if rule_set.name not in existing and len(existing) >= MAX_RULE_SETS:
                raise FailedPrecondition(
                    f"there are {len(existing)} rule sets, the most a server keeps "
                    f"({MAX_RULE_SETS}): delete one first, or put its rules in an existing set"
                )
            stored, _ = rule_store.put_rule_set(session, rule_set=rule_set, by=by, origin="")
            return stored

        stored = await self._db(put)
        await self.rules.reload()
        return stored

    async def delete_rule_set(self, name: str) -> None:
        check_name("name", name)
        deleted = await self._db(lambda s: rule_store.delete_rule_set(s, name=name, origin=""))
        if not deleted:
            raise NotFound(f"no rule set is named {name!r}")
        await self.rules.reload()
