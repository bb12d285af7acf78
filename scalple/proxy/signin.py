"""A person signing in to Scalple itself (proxy_auth): SCRAM with the client, then the upstream
sign-in as the shared role, answered by the proxy. Bytes in, bytes out."""

from __future__ import annotations

import logging

from scalple.proxy import codec, people
from scalple.proxy.codec import ProtocolViolation

log = logging.getLogger("scalple.proxy")


class SignIn:
    """One person's sign-in: `first`, then `answer` for each SASL message, then `upstream`."""

    def __init__(self, name: str, verifier: people.Verifier, role: str, password: str) -> None:
        self.name = name
        self._exchange: people.ServerExchange | None = people.ServerExchange(verifier)
        self._login: people.UpstreamLogin | None = people.UpstreamLogin(role, password)
        self.role = role

    @staticmethod
    def request() -> bytes:
        """AuthenticationSASL: the mechanisms we offer."""
        mechanisms = people.MECHANISM.encode() + b"\x00\x00"
        return codec.message(b"R", (10).to_bytes(4, "big") + mechanisms)

    @property
    def signed_in(self) -> bool:
        return self._exchange is None

    @property
    def upstream_pending(self) -> bool:
        """The upstream's own sign-in is still ours to answer."""
        return self._login is not None

    def answer(self, mtype: int, body: bytes | None) -> bytes:
        """The reply to one SASLInitialResponse or SASLResponse; after the final one the
        person is signed in and the upstream may be reached."""
        exchange = self._exchange
        if exchange is None or mtype != codec.PASSWORD or body is None:
            raise ProtocolViolation("expected a SASL response during sign-in")
        try:
            if not exchange.started:
                mechanism, pos = codec.cstring(body, 0)
                if mechanism != people.MECHANISM:
                    raise people.AuthFailed(f"unsupported SASL mechanism {mechanism!r}")
                length = int.from_bytes(body[pos : pos + 4], "big", signed=True)
                first = body[pos + 4 : pos + 4 + max(length, 0)].decode()
                reply = (11).to_bytes(4, "big") + exchange.first(first).encode()
                return codec.message(b"R", reply)
            final = exchange.final(body.decode())
        except (people.AuthFailed, UnicodeDecodeError) as exc:
            log.warning("sign-in of %r failed: %s", self.name, exc)
            raise ProtocolViolation(
                f'password authentication failed for user "{self.name}"', "28P01"
            ) from None
        self._exchange = None
        return codec.message(b"R", (12).to_bytes(4, "big") + final.encode())

    def upstream(self, body: bytes) -> tuple[bytes | None, bytes | None]:
        """An Authentication request from the upstream: (what the client sees of it, our
        answer to the upstream). The client sees only AuthenticationOk."""
        login = self._login
        assert login is not None
        code = int.from_bytes(body[:4], "big")
        if code == 0:
            self._login = None
            return None, None  # AuthenticationOk: the client expects it after SASLFinal
        try:
            answer = login.answer(code, body[4:])
        except people.AuthFailed as exc:
            raise ProtocolViolation(
                f"cannot sign in upstream as {self.role!r}: {exc}", "28000"
            ) from None
        return b"", codec.message(b"p", answer) if answer is not None else None
