"""The validated-SVID cache stays within its bound and never serves an expired entry."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from broker.auth.svid import SvidError, SvidValidator
from broker.cli.dev import DevTrustDomain
from tests.conftest import FrozenClock


class Bundles:
    def __init__(self, td: DevTrustDomain) -> None:
        self.version = 1
        self._keys = MappingProxyType({td.kid: td._key})

    def keys_for(self, trust_domain: str) -> Any:
        return self._keys if trust_domain == "dev.writ.local" else None


def test_cache_is_bounded_and_expiry_is_honoured(clock: FrozenClock) -> None:
    td = DevTrustDomain.generate()
    v = SvidValidator(Bundles(td), cache_size=10, leeway_s=0, clock=clock)
    tokens = [td.mint_svid(f"spiffe://dev.writ.local/a/{i}", "aud", now=clock(), ttl_s=60)
              for i in range(25)]
    for t in tokens:
        v.validate(t, ("aud",))
        assert len(v._cache) <= 10
    clock.advance(61)
    with pytest.raises(SvidError) as err:
        v.validate(tokens[-1], ("aud",))  # cached, but past exp: validated again and refused
    assert err.value.reason == "expired"
