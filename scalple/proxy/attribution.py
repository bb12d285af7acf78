"""Who a statement is attributed to, and whether this client may say so.

The strongest source wins: a person signed in to Scalple, then the statement's comment, then
SET scalple.user (as the mirror holds it, by PostgreSQL's transaction rules), then the startup
option. Only trusted clients may assert an identity; `require_identity` refuses statements with
none, except those that touch no data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from scalple.proxy.commands import Command, Kind
from scalple.proxy.identity import GUC, Claim

Refusal = tuple[str, str, str | None]  # (SQLSTATE, message, hint)

UNATTRIBUTED_HINT: Final = (
    "attribute it with SET scalple.user = 'name', a /*user='name'*/ comment, "
    "or options=-c scalple.user=name in the connection string"
)
_NEEDS_NO_IDENTITY: Final = frozenset(
    {Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK, Kind.SAVEPOINT, Kind.RELEASE, Kind.ROLLBACK_TO,
     Kind.PREPARE_TX, Kind.DISCARD_ALL, Kind.RESET_ALL, Kind.IDENTITY, Kind.DEALLOCATE,
     Kind.CLOSE}
)  # fmt: skip


@dataclass(slots=True)
class Attribution:
    """One connection's standing: who it is, and what it may assert."""

    role: str
    client_addr: str
    may_assert: bool = False
    person: Claim | None = None  # signed in to scalple itself (proxy_auth)
    startup: Claim | None = None  # options=-c scalple.user=...
    require_identity: bool = False

    def claim(self, comment: Claim | None, set_claim: Claim | None) -> Claim | None:
        """The claim a statement runs under: person, comment, SET, startup option."""
        if self.person is not None:
            return self.person
        for claim in (comment, set_claim, self.startup):
            if claim is not None and claim.actor:
                return claim
        return None

    def may_claim(self, how: str) -> Refusal | None:
        """A refusal when this client may not assert an identity by `how`."""
        if self.may_assert:
            return None
        if self.person is not None:
            why = f"{self.person.actor!r} signed in to scalple and may not assert another identity"
        else:
            why = f"role {self.role!r} from {self.client_addr} may not assert an identity"
        return ("42501", f"scalple: {why} ({how})", None)

    def unattributed(self, command: Command, claim: Claim | None) -> Refusal | None:
        """`require_identity`: a statement that may touch data needs someone to answer for it."""
        if not self.require_identity or claim is not None or command.kind in _NEEDS_NO_IDENTITY:
            return None
        return (
            "28000",
            "scalple: statement refused: it carries no identity and this proxy requires one",
            UNATTRIBUTED_HINT,
        )


def set_syntax_refusal() -> Refusal:
    return ("42601", f"scalple: use SET [LOCAL] {GUC} = 'name' or RESET {GUC}", None)
