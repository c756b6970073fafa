"""``GET /.well-known/jwks.json``: the published JWK Set, served from memory."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, Response

from broker.signing.keyring import KeyRing

JWK_SET_MEDIA_TYPE: Final = "application/jwk-set+json"  # RFC 7517 §8.5.1
JWKS_PATH: Final = "/.well-known/jwks.json"
DEFAULT_MAX_AGE_S: Final = 300


def _matches(if_none_match: str, etag: str) -> bool:
    # RFC 9110 §13.1.2: weak comparison; "*" matches any current representation
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


def jwks_router(keyring: KeyRing, *, max_age_s: int = DEFAULT_MAX_AGE_S) -> APIRouter:
    """A router serving the key ring's JWKS with ``Cache-Control`` and an ``ETag``.

    ``max-age`` never exceeds ``publish_grace_s``: a next key is published at least that long
    before it signs, so a cached document always holds the key of any token being issued.
    """
    max_age = max(0, min(max_age_s, keyring.settings.publish_grace_s))
    cache_control = f"public, max-age={max_age}"
    router = APIRouter(tags=["jwks"])

    @router.get(
        JWKS_PATH,
        response_class=Response,
        responses={200: {"content": {JWK_SET_MEDIA_TYPE: {}}}},
        summary="JSON Web Key Set (RFC 7517 §5)",
    )
    def get_jwks(request: Request) -> Response:
        doc = keyring.published()
        headers = {"Cache-Control": cache_control, "ETag": doc.etag}
        inm = request.headers.get("if-none-match")
        if inm is not None and _matches(inm, doc.etag):
            return Response(status_code=304, headers=headers)
        return Response(content=doc.body, media_type=JWK_SET_MEDIA_TYPE, headers=headers)

    return router
