"""AuthConfig's cache under concurrency: verifications in flight while the
configuration changes (review 10)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import auth
from tests.auth.conftest import ISSUER, Signer

OTHER = "https://other.example"


class Gate:
    """A provider clock that, on its first call in the thread that arms it, says so
    (``entered``) and waits for ``release``: a verification paused in mid-flight."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._local = threading.local()

    def arm(self) -> None:
        self._local.armed = True

    def __call__(self) -> float:
        if getattr(self._local, "armed", False):
            self._local.armed = False
            self.entered.set()
            assert self.release.wait(10)
        return time.time()


def in_flight(config: auth.AuthConfig, token: str, gate: Gate, change: Callable[[], None]) -> Any:
    """Verify ``token`` in a thread paused mid-verification while ``change`` runs;
    returns what that verification returned or raised."""
    result: list[Any] = []

    def run() -> None:
        gate.arm()
        try:
            result.append(config.verify(token))
        except Exception as error:  # handed to the test
            result.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    assert gate.entered.wait(10)
    try:
        change()
    finally:
        gate.release.set()
        thread.join(10)
    assert not thread.is_alive()
    return result[0]


def test_a_verification_in_flight_is_not_cached_for_a_changed_provider_list(
    rsa_signer: Signer,
) -> None:
    """A verification that began before its provider was removed was stored after the
    cache was cleared (by another call) and then served as valid for the new list."""
    gate = Gate()
    jwks = {"keys": [rsa_signer.jwk()]}
    clerk = auth.ClerkProvider(issuer=ISSUER, jwks=jwks, clock=gate)
    other = auth.CustomJwtProvider(OTHER, jwks=jwks)
    config = auth.AuthConfig(providers=[clerk, other])
    token = rsa_signer.token()

    def remove_clerk() -> None:
        config.providers.remove(clerk)
        config.verify(rsa_signer.token(iss=OTHER))  # another request notices the change

    outcome = in_flight(config, token, gate, remove_clerk)
    assert isinstance(outcome, auth.NoProviderMatches), outcome  # checked again, new list
    with pytest.raises(auth.NoProviderMatches):
        config.verify(token)
    assert token not in config._verified


def test_a_verification_in_flight_is_not_cached_for_a_changed_provider(
    rsa_signer: Signer,
) -> None:
    """The same race with a provider's setting (one read before the paused clock call)
    changed instead of the list."""
    gate = Gate()
    clerk = auth.ClerkProvider(issuer=ISSUER, jwks={"keys": [rsa_signer.jwk()]}, clock=gate)
    config = auth.AuthConfig(providers=[clerk])
    token = rsa_signer.token()

    def restrict() -> None:
        clerk.application_id = "another-app"
        with pytest.raises(auth.NoProviderMatches):
            config.verify(rsa_signer.token(sub="user_other"))

    outcome = in_flight(config, token, gate, restrict)
    assert isinstance(outcome, auth.NoProviderMatches), outcome
    with pytest.raises(auth.NoProviderMatches):
        config.verify(token)
    assert token not in config._verified


class _GrowsAfterLen(list[Any]):
    """A provider list another thread appends to right after its length is read
    (once ``then_append`` is set)."""

    then_append: Any = None

    def __len__(self) -> int:
        size = super().__len__()
        extra, self.then_append = self.then_append, None
        if extra is not None:
            self.append(extra)
        return size


def test_providers_changed_in_place_while_verifying_do_not_break_verify(
    rsa_signer: Signer,
) -> None:
    """``config.providers`` mutated in place by another thread between the change check's
    length comparison and its zip made verify() raise ``ValueError: zip() argument 2 is
    shorter``; each call now works on one snapshot of the list."""
    jwks = {"keys": [rsa_signer.jwk()]}
    clerk = auth.ClerkProvider(issuer=ISSUER, jwks=jwks)
    config = auth.AuthConfig(providers=[clerk])
    token = rsa_signer.token()
    assert config.verify(token).subject == "user_123"
    providers = _GrowsAfterLen([clerk])
    config.providers = providers
    providers.then_append = auth.CustomJwtProvider(OTHER, jwks=jwks)
    assert config.verify(token).subject == "user_123"
    assert list.__len__(providers) == 2  # the other thread's append happened
    assert config.verify(rsa_signer.token(iss=OTHER)).issuer == OTHER
