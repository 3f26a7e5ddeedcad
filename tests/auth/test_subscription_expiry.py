"""A subscription made with a token ends when the token expires, as Convex ends the
session with TokenExpired (research §1.6: crates/sync/src/state.rs)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import auth
from engine import Engine, QueryCtx, query
from tests.auth.conftest import ISSUER, Signer


@query(args={})
def me(ctx: QueryCtx) -> Any:
    identity = ctx.auth.get_user_identity()
    return None if identity is None else identity.subject


@pytest.fixture
def config(rsa_signer: Signer) -> auth.AuthConfig:
    return auth.AuthConfig(
        providers=[auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]}, leeway=0.0)]
    )


@pytest.fixture
def engine(db_path: Path, config: auth.AuthConfig) -> Iterator[Engine]:
    with Engine.open(db_path, durability="none", auth=config) as handle:
        yield handle


def test_seconds_left(config: auth.AuthConfig, rsa_signer: Signer) -> None:
    exp = time.time() + 30
    assert 20 < config.seconds_left(rsa_signer.token(exp=exp)) <= 30  # 10 s for a slow machine
    with pytest.raises(auth.TokenExpired, match=r"(?s)expected.*found.*Fix:"):
        config.seconds_left(rsa_signer.token(exp=time.time() - 1))


def test_a_subscription_ends_with_token_expired(
    engine: Engine, config: auth.AuthConfig, rsa_signer: Signer
) -> None:
    short = rsa_signer.token(exp=time.time() + 2.0)  # a loaded machine still subscribes in time
    long = rsa_signer.token(exp=time.time() + 60, jti="other")  # the same identity
    errors: list[BaseException] = []
    ended = threading.Event()

    def on_error(error: BaseException) -> None:
        errors.append(error)
        ended.set()

    sub = engine.subscribe(me, {}, auth=short, on_error=on_error)
    other = engine.subscribe(me, {}, auth=long)  # shares the execution, not the expiry
    iterated: list[Any] = []

    def follow() -> None:
        try:
            for value in sub:
                iterated.append(value)
        except auth.AuthError as error:
            iterated.append(error)

    follower = threading.Thread(target=follow)
    follower.start()
    assert sub.value == "user_123"
    assert ended.wait(10.0), "the subscription outlived its token"
    follower.join(10.0)
    assert len(errors) == 1 and isinstance(errors[0], auth.TokenExpired)
    assert iterated[0] == "user_123" and isinstance(iterated[-1], auth.TokenExpired)
    with pytest.raises(auth.TokenExpired):
        sub.value  # noqa: B018
    with pytest.raises(auth.TokenExpired):
        next(iter(sub))
    assert sub.closed
    assert other.value == "user_123" and not other.closed
    other.close()


def test_async_iteration_and_sets_end_too(engine: Engine, rsa_signer: Signer) -> None:
    token = rsa_signer.token(exp=time.time() + 2.0)  # a loaded machine still subscribes in time
    live = engine.subscribe_set({"me": (me, {})}, auth=token)
    sub = engine.subscribe(me, {}, auth=token)

    async def follow() -> list[Any]:
        seen: list[Any] = []
        try:
            async for value in sub:
                seen.append(value)
        except auth.TokenExpired as error:
            seen.append(error)
        return seen

    seen = asyncio.run(asyncio.wait_for(follow(), 10.0))
    assert seen[0] == "user_123" and isinstance(seen[-1], auth.TokenExpired)
    with pytest.raises(auth.TokenExpired):
        list(live)
    with pytest.raises(auth.TokenExpired):
        live.value  # noqa: B018


def test_a_verified_identity_has_no_expiry(
    engine: Engine, config: auth.AuthConfig, rsa_signer: Signer
) -> None:
    identity = config.verify(rsa_signer.token(exp=time.time() + 60))
    with engine.subscribe(me, {}, auth=identity) as sub:  # trusted as is: no token, no timer
        assert sub.value == "user_123"


def test_closed_subscriptions_leave_the_deadline_heap(engine: Engine, rsa_signer: Signer) -> None:
    token = rsa_signer.token(exp=time.time() + 3600)
    subs = [engine.subscribe(me, {}, auth=token) for _ in range(200)]
    for sub in subs:
        sub.close()
    # Not held (with their results) until the token's deadline an hour from now.
    assert len(engine._db.subscriptions._deadlines) <= 2 * 64


@query(args={})
def held(ctx: QueryCtx) -> int:
    gate_in.set()
    gate_out.wait(5)
    return 1


gate_in, gate_out = threading.Event(), threading.Event()


@query(args={})
def me_slowly(ctx: QueryCtx) -> Any:
    time.sleep(0.3)
    identity = ctx.auth.get_user_identity()  # me's body: a registered query is not callable
    return None if identity is None else identity.subject


def test_a_token_expiring_before_the_first_run_is_token_expired_not_closed(
    engine: Engine, rsa_signer: Signer
) -> None:
    # Found by review: with the worker busy, a token that ran out before the worker
    # reached the new subscription made subscribe() raise "This engine is closed".
    gate_in.clear()
    gate_out.clear()
    busy = threading.Thread(target=lambda: engine.subscribe(held, {}).close())
    busy.start()
    assert gate_in.wait(5)  # the worker is inside held's first run
    outcome: list[Any] = []
    expires = time.time() + 0.3
    token = rsa_signer.token(exp=expires)

    def subscribe() -> None:
        try:
            outcome.append(engine.subscribe(me_slowly, {}, auth=token))
        except Exception as error:  # reported below
            outcome.append(error)

    late = threading.Thread(target=subscribe)
    late.start()
    # The token runs out while the worker is still busy: subscribe() was called with
    # it valid (typically) or, on a slow machine, expired (TokenExpired at once; both
    # outcomes are checked below), never with it valid when the worker gets to it.
    time.sleep(max(0.0, expires - time.time()) + 0.2)
    gate_out.set()
    late.join(5)
    busy.join(5)
    (result,) = outcome
    if isinstance(result, BaseException):
        assert isinstance(result, auth.TokenExpired), result
    else:
        with pytest.raises(auth.TokenExpired):
            result.value  # noqa: B018
    assert engine.query(me, {}) is None  # the engine is open


def test_a_dropped_handle_with_a_token_is_let_go(engine: Engine, rsa_signer: Signer) -> None:
    import gc

    manager = engine._db.subscriptions
    engine.subscribe(me, {}, auth=rsa_signer.token(exp=time.time() + 60))  # dropped at once
    gc.collect()
    deadline = time.monotonic() + 5.0
    while manager.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.active == 0
    assert len(manager._deadlines._live) == 0  # its deadline is forgotten too
