"""OIDC identity: verify the JWT a client sends as its password.

A client proves who it is with a short-lived OIDC token (a JWT) from the configured
issuer. :class:`TokenVerifier` checks it and returns an :class:`Identity` (user, groups),
or raises :class:`~pgguard.errors.InvalidToken` (SQLSTATE 28P01) saying why, or
:class:`~pgguard.errors.NotPermitted` (28000) when the token belongs to someone else.

The checks, in order:

1. The password looks like a compact JWS (three base64url parts, bounded size).
2. The header's ``alg`` is one of ``identity.algorithms``. ``none`` and every HMAC
   algorithm are refused before any key is looked at: HS256 "signed" with the issuer's
   *public* key is the classic key-confusion forgery.
3. The signing key is found by ``kid`` in the issuer's JWKS (discovered from
   ``issuer`` + ``/.well-known/openid-configuration``, or ``identity.jwks_url``), and its
   key type (and curve) fits the algorithm.
4. The signature verifies; ``exp`` is required, ``exp``/``nbf`` honoured with
   ``identity.leeway_s``; ``iss`` equals ``identity.issuer`` and ``aud`` contains
   ``identity.audience`` when those are configured.
5. The ``identity.user_claim`` equals the user named in the startup message.

The JWKS is cached for ``identity.jwks_cache_s``. A token with an unknown ``kid``
triggers one refetch (key rotation), at most once per ``min_refresh_interval_s``, so a
stream of garbage tokens cannot make the gateway hammer the identity provider. When the
cache has expired and the provider cannot be reached, verification fails closed.

Error messages never contain the token or any part of it; nothing here logs it.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import trio

from .config import IdentityConfig
from .errors import InvalidToken, NotPermitted

log = logging.getLogger(__name__)

#: Longest password we try to parse as a token; real ID tokens are a few KiB.
MAX_TOKEN_BYTES = 16 * 1024
#: Largest discovery document or JWKS we read.
MAX_DOCUMENT_BYTES = 1024 * 1024
#: After a failed fetch, callers fail fast for this long instead of each retrying.
RETRY_AFTER_FAILURE_S = 1.0

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Algorithm names we may echo in an error message: registered JWS names only, so a
# forged header cannot smuggle arbitrary text into the client's error.
_KNOWN_ALGS = frozenset({
    "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
    "PS512", "ES256", "ES256K", "ES384", "ES512", "EdDSA", "Ed25519", "Ed448"})
# Which JWK key type (and curve) each asymmetric algorithm needs.
_KEY_TYPES: dict[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})), "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

UNAVAILABLE = "pgguard: cannot verify token: identity provider unavailable"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token belongs to.

    Attributes:
        user: the user claim (equal to the connection's user).
        groups: the group names from the groups claim, in token order.
        issuer: the ``iss`` claim.
        expires_at: ``exp``, epoch seconds.
        subject: the ``sub`` claim.
    """

    user: str
    groups: tuple[str, ...]
    issuer: str | None
    expires_at: float | None
    subject: str | None


class _ProviderUnavailable(Exception):
    """The discovery document or the JWKS could not be fetched or understood."""


class _KeyCache:
    """The issuer's public keys, fetched over HTTP(S) and cached; thread-safe.

    One lock serializes fetches, so concurrent verifications that find the cache stale
    share one fetch instead of each starting their own.
    """

    def __init__(self, cfg: IdentityConfig, min_refresh_interval_s: float,
                 clock: Callable[[], float]):
        self._cfg = cfg
        self._min_refresh = min_refresh_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str | None, list[dict[str, Any]]] | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._failed = False
        self.fetches = 0
        context = ssl.create_default_context(cafile=cfg.ca_file) if cfg.ca_file else None
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _HttpOnlyRedirects())

    def find(self, kid: str | None, alg: str) -> dict[str, Any]:
        """The JWK that signed a token with this *kid* and *alg*.

        Raises:
            InvalidToken: no such key (even after one refresh), or provider unavailable.
        """
        # Fast path without the lock: a known key in a fresh cache must not wait behind
        # a refresh that some other (perhaps garbage) token started.
        keys, fetched_at = self._keys, self._fetched_at
        if keys is not None and self._clock() - fetched_at < self._cfg.jwks_cache_s:
            jwk = _select(keys, kid, alg)
            if jwk is not None:
                return jwk
        if not self._lock.acquire(timeout=self._cfg.fetch_timeout_s):
            raise InvalidToken(UNAVAILABLE)
        try:
            now = self._clock()
            refreshed = False
            if self._keys is None or now - self._fetched_at >= self._cfg.jwks_cache_s:
                self._refresh(now)
                refreshed = True
            assert self._keys is not None
            jwk = _select(self._keys, kid, alg)
            if (jwk is None and not refreshed
                    and now - self._attempted_at >= self._min_refresh):
                # Unknown kid: the issuer may have rotated its keys since we fetched.
                log.info("jwks_refresh reason=unknown_kid")
                self._refresh(now)
                jwk = _select(self._keys, kid, alg)
        finally:
            self._lock.release()
        if jwk is None:
            raise InvalidToken("pgguard: token signing key not found")
        return jwk

    def _refresh(self, now: float) -> None:
        if self._failed and now - self._attempted_at < RETRY_AFTER_FAILURE_S:
            raise InvalidToken(UNAVAILABLE)
        self._attempted_at = now
        self.fetches += 1
        try:
            keys = self._fetch()
        except _ProviderUnavailable as exc:
            self._failed = True
            log.warning("jwks_fetch_failed issuer=%s error=%s", self._cfg.issuer, exc)
            raise InvalidToken(UNAVAILABLE) from None
        self._failed = False
        self._keys = keys
        self._fetched_at = self._clock()
        log.info("jwks_fetched issuer=%s keys=%d", self._cfg.issuer,
                 sum(len(v) for v in keys.values()))

    def _fetch(self) -> dict[str | None, list[dict[str, Any]]]:
        # One deadline for discovery and JWKS together, so a refresh never takes longer
        # than fetch_timeout_s however the time is split.
        deadline = time.monotonic() + self._cfg.fetch_timeout_s
        url = self._cfg.jwks_url
        if not url:
            if not self._cfg.issuer:
                raise _ProviderUnavailable("neither identity.issuer nor identity.jwks_url "
                                           "is configured")
            discovery = self._get_json(
                self._cfg.issuer.rstrip("/") + "/.well-known/openid-configuration",
                deadline)
            url = discovery.get("jwks_uri")
            if not isinstance(url, str) or not url:
                raise _ProviderUnavailable("discovery document has no jwks_uri")
        document = self._get_json(url, deadline)
        raw_keys = document.get("keys")
        if not isinstance(raw_keys, list):
            raise _ProviderUnavailable(f"{url}: not a JWKS (no 'keys' list)")
        keys: dict[str | None, list[dict[str, Any]]] = {}
        for raw in raw_keys:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            kid = raw.get("kid")
            if kid is not None and not isinstance(kid, str):
                continue
            keys.setdefault(kid, []).append(raw)
        return keys

    def _get_json(self, url: str, deadline: float) -> dict[str, Any]:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise _ProviderUnavailable(f"{url}: only http and https URLs are fetched")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _ProviderUnavailable(f"{url}: timed out")
        request = urllib.request.Request(
            url, headers={"Accept": "application/json", "User-Agent": "pgguard"})
        try:
            with self._opener.open(request, timeout=remaining) as resp:
                body = resp.read(MAX_DOCUMENT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise _ProviderUnavailable(f"{url}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            # URLError, timeouts, TLS failures and refused connections are all OSErrors.
            reason = getattr(exc, "reason", None) or exc
            raise _ProviderUnavailable(f"{url}: {reason}") from None
        if len(body) > MAX_DOCUMENT_BYTES:
            raise _ProviderUnavailable(f"{url}: document larger than "
                                       f"{MAX_DOCUMENT_BYTES} bytes")
        try:
            document = json.loads(body)
        except ValueError:
            raise _ProviderUnavailable(f"{url}: not JSON") from None
        if not isinstance(document, dict):
            raise _ProviderUnavailable(f"{url}: not a JSON object")
        return document


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) URLs only (urllib would also follow ftp://)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, "redirect to a non-HTTP URL",
                                         headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _select(keys: dict[str | None, list[dict[str, Any]]], kid: str | None,
            alg: str) -> dict[str, Any] | None:
    """The published key for *kid* that fits *alg*, or None."""
    if kid is not None:
        candidates = keys.get(kid, [])
    else:
        # No kid: acceptable only when exactly one published key could have signed it.
        candidates = [k for group in keys.values() for k in group]
    usable = [k for k in candidates if _key_fits(k, alg)]
    if kid is None and len(usable) != 1:
        return None
    return usable[0] if usable else None


def _key_fits(jwk: dict[str, Any], alg: str) -> bool:
    """Whether a JWK may verify signatures made with *alg* (type, curve, its own alg)."""
    kty, curves = _KEY_TYPES[alg]
    if jwk.get("kty") != kty:
        return False
    if curves is not None and jwk.get("crv") not in curves:
        return False
    declared = jwk.get("alg")
    return declared is None or declared == alg


def _claim(payload: dict[str, Any], name: str) -> Any:
    """The claim *name*, or a nested one by dotted path (``realm_access.roles``)."""
    if name in payload:
        return payload[name]
    value: Any = payload
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _groups(value: Any, claim: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(g, str) for g in value):
        return tuple(value)
    # Fail closed: groups grant access, so a claim we cannot read is not "no groups".
    raise InvalidToken(f"pgguard: token claim '{claim}' must be a string or a list of "
                       "strings")


def _shown(value: str, limit: int = 64) -> str:
    """A claim value fit for an error message: printable and bounded."""
    text = value if value.isprintable() else value.encode("unicode_escape").decode()
    return text if len(text) <= limit else text[:limit] + "..."


# trio renamed to_thread.run_sync's `cancellable` to `abandon_on_cancel` in 0.23.
_ABANDON_KW = ("abandon_on_cancel"
               if "abandon_on_cancel" in inspect.signature(trio.to_thread.run_sync).parameters
               else "cancellable")


class TokenVerifier:
    """Verifies OIDC tokens against one issuer; share one instance per configuration.

    Args:
        cfg: the ``[identity]`` configuration.
        min_refresh_interval_s: least time between two JWKS fetches caused by tokens
            with an unknown ``kid``.
        max_concurrency: verifications running in worker threads at once.
        clock: monotonic clock for the cache (tests may pass their own).
    """

    def __init__(self, cfg: IdentityConfig, *, min_refresh_interval_s: float = 10.0,
                 max_concurrency: int = 8, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self._algorithms = frozenset(cfg.algorithms)
        self._keys = _KeyCache(cfg, min_refresh_interval_s, clock)
        self._limiter = trio.CapacityLimiter(max_concurrency)
        if isinstance(cfg.audience, str):
            self._audience: str | list[str] | None = cfg.audience
        else:
            self._audience = list(cfg.audience) if cfg.audience else None

    @property
    def jwks_fetches(self) -> int:
        """How many times the discovery document / JWKS fetch was attempted."""
        return self._keys.fetches

    async def verify(self, token: str, user: str) -> Identity:
        """Verify *token* for the connection user *user* without blocking trio.

        Runs :meth:`verify_sync` in a worker thread (it may fetch the JWKS), bounded by
        ``fetch_timeout_s + 1`` seconds.

        Args:
            token: the password the client sent.
            user: the user named in the startup message.

        Returns:
            The verified identity.

        Raises:
            InvalidToken: the token is not acceptable, or cannot be verified in time.
            NotPermitted: the token belongs to another user.
        """
        try:
            with trio.fail_after(self.cfg.fetch_timeout_s + 1):
                return await trio.to_thread.run_sync(
                    self.verify_sync, token, user, limiter=self._limiter,
                    **{_ABANDON_KW: True})
        except trio.TooSlowError:
            log.warning("token_verify_timeout user=%s", _shown(user))
            raise InvalidToken(UNAVAILABLE) from None

    def verify_sync(self, token: str, user: str) -> Identity:
        """Verify *token* for the connection user *user*; blocking.

        Args:
            token: the password the client sent.
            user: the user named in the startup message.

        Returns:
            The verified identity.

        Raises:
            InvalidToken: malformed, badly signed, expired, not yet valid, wrong issuer
                or audience, disallowed algorithm, unknown key, provider unavailable.
            NotPermitted: the token's user claim is not *user*.
        """
        try:
            return self._verify(token, user)
        except (InvalidToken, NotPermitted) as exc:
            log.info("token_rejected user=%s reason=%s", _shown(user), exc.message)
            raise

    def _verify(self, token: str, user: str) -> Identity:
        if (not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES
                or not _COMPACT_JWS.fullmatch(token)):
            raise InvalidToken("pgguard: password is not a valid token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("pgguard: password is not a valid token") from None
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise InvalidToken("pgguard: password is not a valid token")
        if alg not in self._algorithms or alg not in _KEY_TYPES:
            # Decided on the header alone: no key is ever used with none or HS*.
            shown = f" {alg!r}" if alg in _KNOWN_ALGS or alg.lower() == "none" else ""
            raise InvalidToken(f"pgguard: token algorithm{shown} is not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("pgguard: password is not a valid token")
        jwk = self._keys.find(kid, alg)
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except jwt.PyJWTError as exc:
            log.warning("jwks_bad_key issuer=%s error=%s", self.cfg.issuer, exc)
            raise InvalidToken("pgguard: token signing key not found") from None
        payload = self._decode(token, key, alg)
        return self._identity(payload, user)

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        options: dict[str, Any] = {"require": ["exp"],
                                   "verify_aud": self._audience is not None}
        try:
            return jwt.decode(token, key, algorithms=[alg], audience=self._audience,
                              issuer=self.cfg.issuer, leeway=self.cfg.leeway_s,
                              options=options)
        except jwt.ExpiredSignatureError:
            raise InvalidToken("pgguard: token expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("pgguard: token is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("pgguard: token signature is invalid") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("pgguard: token has the wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("pgguard: token issuer is wrong") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise InvalidToken("pgguard: token has the wrong audience") from None
            if exc.claim == "iss":
                raise InvalidToken("pgguard: token issuer is wrong") from None
            raise InvalidToken(f"pgguard: token has no '{exc.claim}' claim") from None
        except jwt.DecodeError:
            raise InvalidToken("pgguard: password is not a valid token") from None
        except jwt.PyJWTError as exc:
            # pyjwt's own messages name claims, never values; keep ours generic anyway.
            log.info("token_invalid kind=%s", type(exc).__name__)
            raise InvalidToken("pgguard: token is invalid") from None

    def _identity(self, payload: dict[str, Any], user: str) -> Identity:
        cfg = self.cfg
        claimed = _claim(payload, cfg.user_claim)
        if not isinstance(claimed, str) or not claimed:
            raise InvalidToken(f"pgguard: token has no '{cfg.user_claim}' claim")
        if claimed != user:
            raise NotPermitted(f"pgguard: token user '{_shown(claimed)}' does not match "
                               f"the connection user '{_shown(user)}'")
        groups = _groups(_claim(payload, cfg.groups_claim), cfg.groups_claim)
        exp = payload.get("exp")
        iss = payload.get("iss")
        sub = payload.get("sub")
        return Identity(
            user=claimed,
            groups=groups,
            issuer=iss if isinstance(iss, str) else None,
            expires_at=float(exp) if isinstance(exp, int | float) else None,
            subject=sub if isinstance(sub, str) else None,
        )
