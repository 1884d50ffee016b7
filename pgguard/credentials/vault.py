"""Just-in-time database credentials from Vault or OpenBao (the ``vault`` extra).

Each client session gets a database role from the database secrets engine
(``MOUNT/creds/ROLE``). The lease is renewed while the session lasts, revoked when it ends,
and when it can no longer be kept (max TTL reached, revoked, Vault unreachable until it
runs out) the session is ended by pgguard: revoking a lease does not end live database
sessions, so the gateway has to.

Every hvac call runs in a worker thread (``trio.to_thread.run_sync``) behind one
:class:`trio.CapacityLimiter` and under ``vault.timeout_s``; a slow Vault costs the session
that waits for it, never the event loop.

``vault.reuse``:

* ``"session"`` (default): one lease per client session, revoked when it ends.
* ``"user"``: one lease per (user, Vault role), handed to every session of that user for
  ``reuse_ttl_s`` after it was issued, refcounted, and revoked once no session uses it and
  that time is past (or at clean shutdown). Faster connects, but the database role outlives
  a single session and several sessions share one database identity.

Background work (renewing the gateway's own Vault token, revoking idle cached leases,
retrying revocations that failed) runs in :meth:`VaultCredentials.run`. A gateway may start
it in its nursery (``await nursery.start(vault.run)``); otherwise it is started lazily on the
first :meth:`~VaultCredentials.acquire` as a trio system task. :meth:`aclose` stops it.

Secrets (the Vault token, AppRole secret id, issued passwords, lease ids) are never logged
and never appear in client-facing messages.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import hvac
import hvac.exceptions
import requests
import trio

from ..config import ConnectionConfig, VaultConfig
from ..errors import CredentialsUnavailable
from .lease import Lease

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Concurrent hvac calls (worker threads) per gateway.
VAULT_THREADS = 16
#: Renew a lease or token when this fraction of its remaining life has passed.
RENEW_FRACTION = 0.5
#: Backoff bounds for retried renewals, logins and revocations.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 15.0
#: Least interval between two renewals/logins of the gateway's own token.
TOKEN_MIN_INTERVAL_S = 1.0
#: Longest text of a Vault error kept in a log line.
MAX_ERROR_TEXT = 240


class VaultCallError(Exception):
    """A Vault call failed. ``reason`` is safe to log: it never holds a secret.

    ``kind`` is one of ``unavailable`` (down, sealed, slow, 5xx), ``denied`` (401/403),
    ``missing`` (404), ``invalid`` (400: unknown role, lease not found) or ``config``
    (no token or an unreadable secret file).
    """

    def __init__(self, op: str, kind: str, reason: str):
        super().__init__(f"{op}: {kind}: {reason}")
        self.op = op
        self.kind = kind
        self.reason = reason


@dataclass(eq=False)
class _TokenInfo:
    token: str = field(repr=False)
    ttl: float  # seconds left; 0 = never expires
    full_ttl: float  # what a renewal should give back; less means capped
    renewable: bool
    method: str


@dataclass(eq=False)
class _VaultLease:
    """One lease as Vault sees it, possibly shared by several sessions."""

    lease_id: str = field(repr=False)
    username: str
    password: str = field(repr=False)
    role: str
    connection: str
    renewable: bool
    duration: float  # the increment asked for on renewal
    expires_at: float  # trio clock
    renew_at: float  # trio clock
    capped: bool = False  # max TTL reached: expires_at is final
    revoked: bool = False
    failures: int = 0
    retry_at: float = 0.0  # next revocation attempt, when a revocation failed
    key: tuple[str, str] | None = None  # (user, role) when shared (reuse = "user")
    reusable_until: float = math.inf
    leases: list[VaultLease] = field(default_factory=list, repr=False)
    dead: trio.Event = field(default_factory=trio.Event, repr=False)
    lock: trio.Lock = field(default_factory=trio.Lock, repr=False)


@dataclass
class VaultLease(Lease):
    """The :class:`Lease` a session holds; ``state`` is the Vault lease behind it."""

    state: _VaultLease | None = field(default=None, repr=False, compare=False)


def _read_secret(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        # The path is configuration, not a secret; the OS error says which problem.
        raise VaultCallError("login", "config",
                             f"cannot read {what} {path!r}: {exc.strerror}") from None


class VaultCredentials:
    """A :class:`~pgguard.credentials.lease.CredentialSource` backed by Vault/OpenBao.

    Args:
        cfg: the ``[vault]`` section.
        limiter: worker-thread limiter for hvac calls (one per gateway by default).
    """

    def __init__(self, cfg: VaultConfig, limiter: trio.CapacityLimiter | None = None):
        self.cfg = cfg
        self._limiter = limiter
        self._local = threading.local()
        self._token: _TokenInfo | None = None
        self._auth_generation = 0
        self._auth_lock: trio.Lock | None = None
        self._token_renew_at = math.inf
        self._token_failures = 0
        self._token_changed: trio.Event | None = None
        self._cache: dict[tuple[str, str], _VaultLease] = {}
        self._shared: set[_VaultLease] = set()
        self._key_locks: dict[tuple[str, str], trio.Lock] = {}
        self._pending: list[_VaultLease] = []
        self._janitor_wake: trio.Event | None = None
        self._bg_started = False
        self._bg_scope: trio.CancelScope | None = None
        self._closed = False

    # --- the CredentialSource protocol ----------------------------------------------

    async def acquire(self, conn: ConnectionConfig, role: str | None, user: str) -> Lease:
        """Credentials for a new session of *user* on *conn* under Vault role *role*.

        Args:
            conn: the connection the session is for (its name goes into errors).
            role: the database-secrets role named by the user's grant.
            user: the authenticated user (the cache key under ``reuse = "user"``).

        Returns:
            A :class:`VaultLease` with the database user and password.

        Raises:
            CredentialsUnavailable: Vault is down, sealed, slow, refuses, or the role is
                unknown; the message names only the connection.
        """
        unavailable = CredentialsUnavailable(
            f"pgguard: credentials unavailable for {conn.name}")
        if role is None or self._closed:
            raise unavailable
        self._ensure_background()
        try:
            # Shielded (every Vault call is bounded by timeout_s): a session cancelled
            # mid-issue, e.g. by its startup timeout, must not lose a lease Vault issued.
            with trio.CancelScope(shield=True):
                if self.cfg.reuse == "user":
                    st = await self._shared_lease(conn, role, user)
                else:
                    st = await self._issue(conn, role)
        except VaultCallError as exc:
            log.warning("event=vault_credentials_unavailable connection=%s role=%s user=%s "
                        "op=%s kind=%s error=%r", conn.name, role, user, exc.op, exc.kind,
                        exc.reason)
            raise unavailable from None
        lease = VaultLease(user=st.username, password=st.password, source="vault",
                           lease_id=st.lease_id, role=role,
                           expires_at=self._wall(st.expires_at), state=st)
        st.leases.append(lease)
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await self.release(lease)
            raise
        return lease

    async def keep_alive(self, lease: Lease) -> None:
        """Renew *lease* while the session lasts; set ``lease.expired`` and return when it
        can no longer be kept (max TTL reached, revoked, or unrenewable until expiry).

        Args:
            lease: a lease from :meth:`acquire`.
        """
        st = lease.state if isinstance(lease, VaultLease) else None
        if st is None:
            await trio.sleep_forever()
            return
        try:
            await self._maintain(st)
        except Exception:
            # A bug here must not outlive the credential: hold the session until the
            # lease's known expiry, then end it.
            log.exception("event=vault_keep_alive_crash role=%s db_user=%s",
                          st.role, st.username)
            await trio.sleep_until(st.expires_at)
            self._expire(st, "internal_error")
        lease.expired.set()

    async def release(self, lease: Lease) -> None:
        """The session ended: revoke its lease, or return it to the per-user cache.

        Args:
            lease: a lease from :meth:`acquire`.
        """
        st = lease.state if isinstance(lease, VaultLease) else None
        if st is None:
            return
        st.leases = [x for x in st.leases if x is not lease]
        if st.key is None:
            await self._revoke(st)
            return
        if st.leases:
            return
        if (self._closed or st.dead.is_set() or trio.current_time() >= st.reusable_until
                or self._cache.get(st.key) is not st):
            self._forget(st)
            await self._revoke(st)
        else:
            self._wake_janitor()

    async def aclose(self) -> None:
        """Clean shutdown: revoke every lease still held or cached, stop background work."""
        self._closed = True
        if self._bg_scope is not None:
            self._bg_scope.cancel()
        todo = list(self._shared) + list(self._pending)
        self._shared.clear()
        self._cache.clear()
        self._pending.clear()
        async with trio.open_nursery() as nursery:
            for st in todo:
                st.revoked = False  # pending ones get one more attempt
                nursery.start_soon(self._revoke, st, False)

    # --- background ---------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work until cancelled or :meth:`aclose`: renew the gateway's Vault
        token, revoke idle cached leases, retry failed revocations.

        Args:
            task_status: for ``nursery.start``; started at once (no Vault call first).
        """
        self._bg_started = True
        with trio.CancelScope() as scope:
            self._bg_scope = scope
            if self._closed:
                scope.cancel()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._token_loop)
                nursery.start_soon(self._janitor_loop)
                task_status.started()

    def _ensure_background(self) -> None:
        if self._bg_started:
            return
        self._bg_started = True
        trio.lowlevel.spawn_system_task(self._run_system, name="pgguard.credentials.vault.background")

    async def _run_system(self) -> None:
        # An exception escaping a system task would crash the whole trio run.
        try:
            await self.run()
        except Exception:
            log.exception("event=vault_background_crash")

    def _wake_janitor(self) -> None:
        if self._janitor_wake is not None:
            self._janitor_wake.set()

    async def _janitor_loop(self) -> None:
        while True:
            self._janitor_wake = wake = trio.Event()
            now = trio.current_time()
            deadline = math.inf
            for st in list(self._shared):
                if st.leases:
                    continue
                if st.dead.is_set() or now >= st.reusable_until or now >= st.expires_at:
                    self._forget(st)
                    await self._revoke(st)
                else:
                    deadline = min(deadline, st.reusable_until)
            for st in list(self._pending):
                if now >= st.expires_at:
                    # Vault has revoked it by now on its own.
                    self._pending.remove(st)
                elif now >= st.retry_at:
                    self._pending.remove(st)
                    st.revoked = False
                    await self._revoke(st)
                else:
                    deadline = min(deadline, st.retry_at)
            with trio.move_on_at(deadline):
                await wake.wait()

    async def _token_loop(self) -> None:
        while True:
            self._token_changed = changed = trio.Event()
            with trio.move_on_at(self._token_renew_at):
                await changed.wait()
            if changed.is_set():
                continue
            info = self._token
            generation = self._auth_generation
            try:
                if info is not None and info.renewable:
                    await self._renew_token(info)
                else:
                    await self._authenticate(stale=generation)
                self._token_failures = 0
            except VaultCallError as exc:
                self._token_failures += 1
                delay = min(RETRY_MAX_S, RETRY_MIN_S * 2 ** self._token_failures)
                self._token_renew_at = trio.current_time() + delay
                log.warning("event=vault_token_renew_failed kind=%s error=%r retry_in=%.1f",
                            exc.kind, exc.reason, delay)

    # --- Vault calls --------------------------------------------------------------

    def _client(self) -> hvac.Client:
        """This worker thread's hvac client (requests sessions are not shared across
        threads)."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = hvac.Client(url=self.cfg.url, verify=self.cfg.ca_file or True,
                                 timeout=self.cfg.timeout_s, namespace=self.cfg.namespace)
            self._local.client = client
        return client

    async def _in_thread(self, op: str, fn: Callable[[hvac.Client], T],
                         token: str | None) -> T:
        """Run ``fn(client)`` in a worker thread with *token*, under ``timeout_s``.

        Raises:
            VaultCallError: any failure, classified; never carries a secret.
        """
        def work() -> T:
            client = self._client()
            client.token = token
            return fn(client)

        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(VAULT_THREADS)
        try:
            with trio.fail_after(self.cfg.timeout_s):
                return await trio.to_thread.run_sync(work, limiter=self._limiter,
                                                     abandon_on_cancel=True)
        except trio.TooSlowError:
            raise VaultCallError(op, "unavailable",
                                 f"no answer within {self.cfg.timeout_s:g} s") from None
        except VaultCallError:
            raise
        except hvac.exceptions.VaultError as exc:
            raise VaultCallError(op, _kind(exc), self._scrub(exc)) from None
        except (requests.RequestException, OSError, ValueError) as exc:
            raise VaultCallError(op, "unavailable",
                                 f"{type(exc).__name__}: {self._scrub(exc)}") from None

    def _scrub(self, exc: BaseException) -> str:
        """The text of a Vault error, shortened, with anything secret we hold removed."""
        text = " ".join(str(exc).split())
        secrets_held = [self._token.token] if self._token else []
        secrets_held += [st.password for st in self._shared]
        secrets_held += [st.lease_id for st in self._shared]
        for secret in secrets_held:
            if secret:
                text = text.replace(secret, "***")
        return text[:MAX_ERROR_TEXT]

    async def _call(self, op: str, fn: Callable[[hvac.Client], T]) -> T:
        """Run *fn* with the gateway's token; on 401/403 log in again once and retry
        (the token file may have been rotated, an AppRole token may have expired)."""
        if self._token is None:
            await self._authenticate(stale=self._auth_generation)
        assert self._token is not None
        generation = self._auth_generation
        try:
            return await self._in_thread(op, fn, self._token.token)
        except VaultCallError as exc:
            if exc.kind != "denied":
                raise
        await self._authenticate(stale=generation)
        return await self._in_thread(op, fn, self._token.token)

    async def _authenticate(self, stale: int) -> None:
        """Log in (AppRole) or (re)read the token, unless someone already did since
        generation *stale*.

        Raises:
            VaultCallError: no token could be obtained.
        """
        if self._auth_lock is None:
            self._auth_lock = trio.Lock()
        async with self._auth_lock:
            if self._auth_generation != stale and self._token is not None:
                return
            info = await self._in_thread("login", self._login_sync, None)
            now = trio.current_time()
            self._token = info
            self._auth_generation += 1
            self._schedule_token(now, info.ttl)
            log.info("event=vault_login method=%s ttl=%.0f renewable=%s",
                     info.method, info.ttl, info.renewable)

    def _login_sync(self, client: hvac.Client) -> _TokenInfo:
        cfg = self.cfg
        if cfg.role_id_file and cfg.secret_id_file:
            role_id = _read_secret(cfg.role_id_file, "role_id_file")
            secret_id = _read_secret(cfg.secret_id_file, "secret_id_file")
            auth = client.auth.approle.login(role_id=role_id, secret_id=secret_id,
                                             use_token=False,
                                             mount_point=cfg.approle_mount)["auth"]
            ttl = float(auth.get("lease_duration") or 0)
            return _TokenInfo(auth["client_token"], ttl, ttl, bool(auth.get("renewable")),
                              "approle")
        if cfg.token_file:
            token, method = _read_secret(cfg.token_file, "token_file"), "token_file"
        elif cfg.token_env:
            token, method = os.environ.get(cfg.token_env, "").strip(), "token_env"
        else:
            raise VaultCallError("login", "config", "no token_file, token_env or AppRole "
                                                    "files configured")
        if not token:
            raise VaultCallError("login", "config", f"{method} gives an empty token")
        client.token = token
        try:
            data = client.auth.token.lookup_self()["data"]
        except hvac.exceptions.Forbidden:
            # A token without the default policy cannot look itself up: use it as is,
            # unrenewed (a 403 on a real call makes us read it again).
            return _TokenInfo(token, 0.0, 0.0, False, method)
        ttl = float(data.get("ttl") or 0)
        full = float(data.get("period") or data.get("creation_ttl") or ttl)
        return _TokenInfo(token, ttl, full, bool(data.get("renewable")), method)

    def _schedule_token(self, now: float, ttl: float) -> None:
        if ttl > 0:
            self._token_renew_at = now + max(TOKEN_MIN_INTERVAL_S, ttl * RENEW_FRACTION)
        else:
            self._token_renew_at = math.inf
        if self._token_changed is not None:
            self._token_changed.set()

    async def _renew_token(self, info: _TokenInfo) -> None:
        now = trio.current_time()
        auth = (await self._in_thread("renew_token", lambda c: c.auth.token.renew_self(),
                                      info.token))["auth"]
        ttl = float(auth.get("lease_duration") or 0)
        if info is not self._token:
            return  # a new login happened meanwhile; it scheduled itself
        info.ttl = ttl
        if ttl < info.full_ttl - 1:
            # Explicit max TTL reached: from now on only a new login helps.
            info.renewable = False
            log.warning("event=vault_token_capped method=%s expires_in=%.0f",
                        info.method, ttl)
        self._schedule_token(now, ttl)
        log.debug("event=vault_token_renewed ttl=%.0f", ttl)

    # --- leases -------------------------------------------------------------------

    async def _issue(self, conn: ConnectionConfig, role: str) -> _VaultLease:
        mount = self.cfg.mount
        now = trio.current_time()
        resp = await self._call("creds", lambda c: c.secrets.database.generate_credentials(
            name=role, mount_point=mount))
        try:
            data = resp["data"]
            username, password = data["username"], data["password"]
            lease_id = resp.get("lease_id") or ""
            ttl = float(resp.get("lease_duration") or 0)
        except (KeyError, TypeError, ValueError):
            raise VaultCallError("creds", "invalid",
                                 "response has no username/password") from None
        expires_at = now + ttl if ttl > 0 else math.inf
        st = _VaultLease(lease_id=lease_id, username=username, password=password, role=role,
                         connection=conn.name, renewable=bool(resp.get("renewable")),
                         duration=ttl, expires_at=expires_at,
                         renew_at=now + ttl * RENEW_FRACTION if ttl > 0 else math.inf)
        log.info("event=vault_lease_issued connection=%s role=%s db_user=%s ttl=%.0f "
                 "renewable=%s", conn.name, role, username, ttl, st.renewable)
        return st

    async def _shared_lease(self, conn: ConnectionConfig, role: str,
                            user: str) -> _VaultLease:
        key = (user, role)
        lock = self._key_locks.setdefault(key, trio.Lock())
        # One issuance per key at a time, so concurrent first connects share one lease.
        async with lock:
            st = self._cache.get(key)
            now = trio.current_time()
            if st is not None:
                if (not st.dead.is_set() and not st.revoked and now < st.reusable_until
                        and st.expires_at - now > max(1.0, self.cfg.timeout_s)):
                    log.debug("event=vault_lease_reused connection=%s role=%s user=%s "
                              "db_user=%s sessions=%d", conn.name, role, user, st.username,
                              len(st.leases) + 1)
                    return st
                # Out of the cache; the janitor revokes it once its sessions are gone.
                del self._cache[key]
                self._wake_janitor()
            st = await self._issue(conn, role)
            st.key = key
            st.reusable_until = now + self.cfg.reuse_ttl_s
            self._cache[key] = st
            self._shared.add(st)
            self._wake_janitor()
            return st

    def _forget(self, st: _VaultLease) -> None:
        self._shared.discard(st)
        if st.key is not None and self._cache.get(st.key) is st:
            del self._cache[st.key]
            lock = self._key_locks.get(st.key)
            if lock is not None and not lock.locked():
                del self._key_locks[st.key]

    async def _maintain(self, st: _VaultLease) -> None:
        """Renew *st* until it dies; several sessions may run this for one shared lease
        (the first to wake renews, the others see the new expiry)."""
        while not st.dead.is_set():
            now = trio.current_time()
            if now >= st.expires_at:
                self._expire(st, "max_ttl" if st.capped else
                             "not_renewable" if not st.renewable else "renew_failed")
                return
            renewing = st.renewable and not st.capped
            wake = min(st.renew_at, st.expires_at) if renewing else st.expires_at
            with trio.move_on_at(wake):
                await st.dead.wait()
                return
            if not renewing:
                continue
            async with st.lock:
                if not st.dead.is_set() and trio.current_time() >= st.renew_at:
                    await self._renew(st)

    async def _renew(self, st: _VaultLease) -> None:
        now = trio.current_time()
        lease_id, increment = st.lease_id, max(1, int(st.duration))
        try:
            resp = await self._call("renew", lambda c: c.sys.renew_lease(
                lease_id=lease_id, increment=increment))
            ttl = float(resp.get("lease_duration") or 0)
        except VaultCallError as exc:
            if exc.kind == "invalid" and "not renewable" in exc.reason:
                st.renewable = False
                log.info("event=vault_lease_not_renewable role=%s db_user=%s", st.role,
                         st.username)
                return
            if exc.kind in ("invalid", "missing"):
                # Lease not found: it was revoked; the credential is gone.
                log.warning("event=vault_lease_lost role=%s db_user=%s error=%r", st.role,
                            st.username, exc.reason)
                self._expire(st, "revoked")
                return
            st.failures += 1
            left = st.expires_at - now
            delay = max(0.2, min(RETRY_MAX_S, RETRY_MIN_S * 2 ** st.failures, left / 2))
            st.renew_at = now + delay
            log.warning("event=vault_lease_renew_failed role=%s db_user=%s kind=%s error=%r "
                        "retry_in=%.1f expires_in=%.1f", st.role, st.username, exc.kind,
                        exc.reason, delay, left)
            return
        except (AttributeError, TypeError, ValueError):
            ttl = 0.0
        st.failures = 0
        if ttl <= 0:
            self._expire(st, "max_ttl")
            return
        st.expires_at = now + ttl  # measured from before the call: errs on the early side
        st.renew_at = now + ttl * RENEW_FRACTION
        if ttl < st.duration - 1:
            st.capped = True
            log.info("event=vault_lease_capped role=%s db_user=%s expires_in=%.0f",
                     st.role, st.username, ttl)
        else:
            log.debug("event=vault_lease_renewed role=%s db_user=%s ttl=%.0f", st.role,
                      st.username, ttl)
        wall = self._wall(st.expires_at)
        for lease in st.leases:
            lease.expires_at = wall

    def _expire(self, st: _VaultLease, reason: str) -> None:
        if st.dead.is_set():
            return
        log.warning("event=vault_lease_expired role=%s db_user=%s reason=%s sessions=%d",
                    st.role, st.username, reason, len(st.leases))
        self._mark_dead(st)

    def _mark_dead(self, st: _VaultLease) -> None:
        st.dead.set()
        for lease in st.leases:
            lease.expired.set()
        if st.key is not None and self._cache.get(st.key) is st:
            del self._cache[st.key]

    async def _revoke(self, st: _VaultLease, retry: bool = True) -> None:
        """Revoke *st* now; on failure keep it for the janitor to retry until it expires
        on its own."""
        if st.revoked:
            return
        st.revoked = True
        self._mark_dead(st)
        if not st.lease_id:
            return
        lease_id = st.lease_id
        try:
            await self._call("revoke", lambda c: c.sys.revoke_lease(lease_id=lease_id))
        except VaultCallError as exc:
            now = trio.current_time()
            keep = retry and not self._closed and now < st.expires_at and exc.kind not in (
                "invalid", "missing")
            log.warning("event=vault_revoke_failed role=%s db_user=%s kind=%s error=%r "
                        "will_retry=%s", st.role, st.username, exc.kind, exc.reason, keep)
            if keep:
                st.failures += 1
                st.retry_at = now + min(RETRY_MAX_S, RETRY_MIN_S * 2 ** st.failures)
                self._pending.append(st)
                self._wake_janitor()
            return
        log.info("event=vault_lease_revoked role=%s db_user=%s", st.role, st.username)

    @staticmethod
    def _wall(trio_deadline: float) -> float | None:
        if math.isinf(trio_deadline):
            return None
        return time.time() + (trio_deadline - trio.current_time())


def _kind(exc: hvac.exceptions.VaultError) -> str:
    if isinstance(exc, (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized)):
        return "denied"
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return "missing"
    if isinstance(exc, (hvac.exceptions.InvalidRequest, hvac.exceptions.ParamValidationError)):
        return "invalid"
    return "unavailable"  # sealed (VaultDown), 5xx, rate limited, unexpected


__all__ = ["VaultCredentials", "VaultLease", "VaultCallError"]
