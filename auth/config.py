"""``AuthConfig``: the providers a database accepts tokens from, and a cache of
verified tokens.

``AuthConfig`` implements the engine's identity-provider protocol:
``Engine.open(..., auth=AuthConfig(...))`` and ``engine.query(..., auth=token)``
give functions ``ctx.auth.get_user_identity()``; ``seconds_left(token)`` lets
the engine end a subscription when its token expires.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from .claims import _RESEND, _expired, _number, parse_unverified
from .errors import AuthError, MalformedToken, MissingClaim, NoProviderMatches
from .identity import UserIdentity, _show
from .providers import _Provider

__all__ = ["MAX_TOKEN_LENGTH", "AuthConfig"]

#: AuthConfig's default cap on a token's length, in characters: 16 KiB.
MAX_TOKEN_LENGTH = 16 * 1024


class AuthConfig:
    """The providers a database accepts tokens from (Convex's ``auth.config.ts``).

    ``max_token_length`` (16 KiB by default) caps the tokens it looks at: a longer
    one is a :class:`MalformedToken` before any parsing or cache lookup.

    Example::

        auth_config = AuthConfig(providers=[
            ClerkProvider(issuer="https://example.clerk.accounts.dev"),
        ])
        identity = auth_config.verify(token)
    """

    #: Verified tokens kept (a client sends the same token with every call until it
    #: expires); when full, the oldest is forgotten.
    cache_size = 1024

    def __init__(
        self, providers: Iterable[_Provider], *, max_token_length: int = MAX_TOKEN_LENGTH
    ) -> None:
        if isinstance(providers, _Provider):
            raise TypeError(
                "AuthConfig(providers=...) takes a list of providers, got one "
                f"{type(providers).__name__}: write providers=[provider]"
            )
        self.providers = list(providers)
        for provider in self.providers:
            # A list of issuer URLs was accepted, then every verify() failed with
            # "'str' object has no attribute '_version'".
            if not isinstance(provider, _Provider):
                hint = (
                    f": write ClerkProvider(issuer={provider!r}) (or CustomJwtProvider)"
                    if isinstance(provider, str)
                    else ""
                )
                raise TypeError(
                    "AuthConfig(providers=[...]) takes ClerkProvider and CustomJwtProvider "
                    f"objects, got {type(provider).__name__}{hint}"
                )
        #: Longer tokens are a MalformedToken before any parsing (Clerk's fit a 4 KB cookie).
        self.max_token_length = max_token_length
        #: token -> (identity, exp, leeway, the provider's clock)
        self._verified: dict[str, tuple[UserIdentity, float, float, Callable[[], float]]] = {}
        #: The providers (and their versions) the cached verifications were made with.
        self._cached_with: list[tuple[_Provider, int]] = []
        #: Counts configuration changes: a verification is cached only if none happened
        #: while it ran (it was then made with the configuration the cache is for).
        self._generation = 0
        #: Guards _verified, _cached_with and _generation (never held while verifying).
        self._cache_lock = threading.Lock()

    @property
    def max_token_length(self) -> int:
        """The longest token looked at, in characters (a longer one is a
        :class:`MalformedToken` before any parsing): a positive int.

        Checked when built or assigned: ``None`` or a str made every verification a
        TypeError, and a NaN let every length through.
        """
        return self._max_token_length

    @max_token_length.setter
    def max_token_length(self, length: int) -> None:
        fix = f"Fix: max_token_length={MAX_TOKEN_LENGTH} (16 KiB, the default), or leave it out."
        if isinstance(length, bool) or not isinstance(length, int):
            raise TypeError(
                f"max_token_length takes a number of characters: expected an int; found "
                f"{type(length).__name__} {_show(length)}. {fix}"
            )
        if length < 1:
            raise ValueError(
                f"max_token_length takes a number of characters: expected an int of at "
                f"least 1; found {_show(length)}, which refuses every token as too long. {fix}"
            )
        self._max_token_length = length

    #: Verifications started again when the configuration changed while they ran; after
    #: that many the last one is returned (made with a configuration current during the
    #: call) without being cached.
    _RETRIES = 3

    def _unchanged(self, providers: tuple[_Provider, ...]) -> bool:
        """True if ``providers`` and their settings are those the cache was made with.
        Cost: one comparison per provider; takes no lock."""
        cached_with = self._cached_with  # replaced whole, never changed in place
        if len(providers) != len(cached_with):
            return False
        for provider, (seen, version) in zip(providers, cached_with, strict=True):
            if provider is not seen or provider._version != version:
                return False
        return True

    def _config_changed(self, providers: tuple[_Provider, ...]) -> bool:
        """True if the provider list or a provider's settings changed since the cached
        verifications were made (then they are dropped, the new settings noted and the
        generation counted up). ``providers`` is the caller's snapshot of
        ``self.providers`` (another thread may change the list in place meanwhile).
        Called with ``_cache_lock`` held.
        Cost: one comparison per provider."""
        if self._unchanged(providers):
            return False
        self._verified.clear()
        self._cached_with = [(p, p._version) for p in providers]
        self._generation += 1
        return True

    def verify(self, token: str) -> UserIdentity:
        """The identity of ``token``, or an :class:`AuthError` (never a partial identity).

        Cost: a signature check (~150 µs for RS256) the first time; a dictionary
        lookup and an expiry check (with the provider's clock and leeway) while
        the same token is reused and the providers are unchanged (assigning to a
        provider's attribute, or changing ``providers``, verifies cached tokens
        again). The identity returned for a token is shared by every call with
        it: its ``claims`` are read-only.
        """
        return self._entry(token)[0]

    def seconds_left(self, token: str) -> float:
        """Seconds until ``token`` stops verifying: its ``exp`` plus its provider's
        ``leeway``, minus now on the provider's clock. Always positive.

        The engine ends a subscription made with ``auth=token`` when this runs out,
        as Convex ends a session whose token expired. Raises what :meth:`verify`
        raises, so :class:`TokenExpired` once no time is left; for a token past its
        ``exp`` that is no longer cached (forgotten by a full cache or a configuration
        change), the TokenExpired is decided from its ``exp`` without a key lookup, so
        the subscription worker never waits for the issuer to end it.
        Cost: that of :meth:`verify` (a dictionary lookup for a cached token).

        Example::

            auth_config.seconds_left(token)   # 42.3
        """
        self._refuse_expired_uncached(token)
        _, expires, leeway, clock = self._entry(token)
        now = clock()
        left = expires + leeway - now
        if left <= 0:
            raise _expired(expires, now, leeway)
        return left

    def _refuse_expired_uncached(self, token: str) -> None:
        """TokenExpired for a token not (or no longer) cached whose ``exp``, read without
        verifying, is past on the clock of the provider it routes to; else nothing, and
        :meth:`_entry` verifies it.

        A subscription's token forgotten by a full cache or a configuration change
        would otherwise be verified from scratch at its deadline, fetching stale keys on
        the subscription worker (stalling every subscription while the issuer answers).
        An expired token is refused either way, so its signature need not be checked
        first (its ``exp`` is no secret). Cost: parsing the token when not cached.
        """
        if not isinstance(token, str) or len(token) > self.max_token_length:
            return
        if token in self._verified and self._unchanged(tuple(self.providers)):
            return  # the cache answers, also TokenExpired
        try:
            _, claims = parse_unverified(token)
            provider = next((p for p in tuple(self.providers) if p.matches(claims)), None)
            expires = None if provider is None else _number(claims, "exp")
        except AuthError:
            return  # verifying says what is wrong with it
        if provider is None or expires is None:
            return
        now = provider._clock()
        if expires <= now - provider.leeway:
            raise _expired(expires, now, provider.leeway)

    def _entry(self, token: str) -> tuple[UserIdentity, float, float, Callable[[], float]]:
        """The cache entry of ``token``: (identity, exp, leeway, clock), verified if needed.

        A cached entry serves only while the configuration is the one it was verified
        with: a change of the provider list or of a provider's settings drops them all.
        Once its token has expired, the entry gives :class:`TokenExpired` at once: the
        signature was checked, so verifying again (a key fetch, perhaps, on the thread
        that ends subscriptions) could only end the same way, or with a worse error
        (``UnknownKey`` once the key rotated away).
        A verification during which the configuration changed is not cached; it is made
        again with the new configuration (up to ``_RETRIES`` times).
        """
        if isinstance(token, str) and len(token) > self.max_token_length:
            raise MalformedToken(
                f"Token too long: expected at most {self.max_token_length} characters "
                f"(AuthConfig.max_token_length); found {len(token)}. Fix: send the token as "
                "minted (a Clerk session token fits a 4 KB cookie); if your issuer mints "
                "bigger tokens, raise max_token_length."
            )
        providers = tuple(self.providers)
        # The common case without the lock: a cached token, the configuration unchanged.
        # Reading _cached_with then _verified without the lock is safe: a change clears
        # _verified only after it is visible here, so an entry read now was made with
        # the configuration just compared (the call takes effect before the change).
        if self._unchanged(providers):
            cached = self._verified.get(token) if isinstance(token, str) else None
            if cached is not None:
                return _unexpired(cached)
        for _attempt in range(self._RETRIES + 1):
            providers = tuple(self.providers)  # one snapshot for the check and the routing
            with self._cache_lock:
                self._config_changed(providers)
                generation = self._generation
                cached = self._verified.get(token) if isinstance(token, str) else None
            if cached is not None:
                return _unexpired(cached)
            identity, expires, provider = self._verify(token, providers)
            entry = (identity, expires, provider.leeway, provider._clock)
            with self._cache_lock:
                self._config_changed(tuple(self.providers))
                if self._generation == generation:
                    while self._verified and len(self._verified) >= self.cache_size:
                        # Full: forget the oldest verification (the first to expire, as
                        # tokens live alike), not all of them: a clear made every live
                        # token (and every subscription's expiry check) verify again.
                        del self._verified[next(iter(self._verified))]
                    self._verified[token] = entry
                    return entry
            # The configuration changed while verifying: the result may not hold for the
            # new one (a provider removed or restricted), so verify again with it.
        return entry

    def _verify(
        self, token: str, providers: tuple[_Provider, ...] | None = None
    ) -> tuple[UserIdentity, float, _Provider]:
        """Route ``token`` to the first of ``providers`` (a snapshot of ``self.providers``
        by default) that matches it and verify it there."""
        if providers is None:
            providers = tuple(self.providers)
        _, claims = parse_unverified(token)
        iss = claims.get("iss")
        if iss is None:
            raise MissingClaim(
                "Missing issuer claim ('iss') in the token: expected the issuer's URL; found "
                "none. Fix: have the issuer set iss (Convex routes tokens by it)."
            )
        if not isinstance(iss, str):
            raise MalformedToken(
                f"Invalid claim 'iss': expected a string; found {_show(iss)}. {_RESEND}"
            )
        for provider in providers:
            if provider.matches(claims):
                identity = provider.verify(token)
                return identity, float(claims["exp"]), provider
        raise NoProviderMatches(
            "No auth provider found matching the given token. Check that your JWT's issuer and "
            f"audience match one of your configured providers: {list(providers)}. Expected iss "
            "and aud of one of them; found iss "
            f"{_show(iss)}, aud {_show(claims.get('aud'))}. Fix: configure a provider with this "
            "issuer and application id, or send a token minted for one of them."
        )


def _unexpired(
    entry: tuple[UserIdentity, float, float, Callable[[], float]],
) -> tuple[UserIdentity, float, float, Callable[[], float]]:
    """A cache entry (identity, exp, leeway, clock), or TokenExpired once its token
    has expired on its provider's clock."""
    _, expires, leeway, clock = entry
    now = clock()
    if now < expires + leeway:
        return entry
    raise _expired(expires, now, leeway)
