"""Tool metadata documents (DESIGN §4, "Tools (CIMD-style)"). Pure: no I/O.

A tool's id is the https URL of its metadata document, whose ``tool_id`` member must equal
that URL by simple string comparison (as draft-ietf-oauth-client-id-metadata-document,
"Client Metadata", requires of ``client_id``). The document is validated strictly: unknown
members are refused, and so is anything that looks like a secret, wherever it sits.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from jwks.chain import any_actor_matches
from jwks.patterns import SpiffePattern
from registry.charter import MAX_TTL_CEILING_S, SCOPE_TOKEN

MAX_URL_CHARS: Final = 2048
ACTION_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
TAG: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

Scope = Annotated[str, Field(pattern=SCOPE_TOKEN.pattern)]
Tag = Annotated[str, Field(pattern=TAG.pattern)]


class ToolError(ValueError):
    """A tool URL or document that Writ refuses; ``reason`` is machine-readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Risk(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return _RISK_RANK[self]


_RISK_RANK: Final = {Risk.low: 0, Risk.medium: 1, Risk.high: 2, Risk.critical: 3}


class TokenKind(StrEnum):
    txn_token = "txn_token"  # noqa: S105 - a kind, not a secret: the agent presents a Txn-Token
    access_token = "access_token"  # noqa: S105 - an RFC 9068 access token, aud = the tool's
    upstream = "upstream"  # a token Writ obtains from the tool's own authorization server


# --- URL rules ---------------------------------------------------------------------------


def check_tool_url(url: str) -> str:
    """The rules a tool id (its metadata URL) must follow; returns it unchanged.

    draft-ietf-oauth-client-id-metadata-document, "Client Identifier": an https URL with
    a path, no single-dot or double-dot path segments, no fragment, no username or
    password; a query and a port are allowed.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise ToolError("url_malformed", f"a tool URL is a string of 1 to {MAX_URL_CHARS} "
                        "characters")
    if any(c <= " " or c in '\\"<>^`{|}\x7f' for c in url) or not url.isascii():
        raise ToolError("url_malformed", "a tool URL must be ASCII without spaces, controls "
                        "or characters RFC 3986 does not allow")
    if not url.startswith("https://"):
        raise ToolError("url_not_https", "a tool URL must use the https scheme")
    if "#" in url:
        raise ToolError("url_fragment", "a tool URL must not have a fragment")
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ToolError("url_userinfo", "a tool URL must not carry a username or password")
    try:
        host, port = parts.hostname, parts.port
    except ValueError as err:
        raise ToolError("url_bad_port", "a tool URL's port must be a number from 1 to "
                        "65535") from err
    if not host or parts.netloc.endswith(":") or port == 0:
        raise ToolError("url_no_host" if not host else "url_bad_port",
                        "a tool URL needs a host and, if given, a port from 1 to 65535")
    if _numeric_host(host) and not _canonical_ipv4(host):
        # WHATWG URL "ends in a number": 0177.0.0.1, 0x7f.1, 127.1, 2130706433 are IPv4 to a
        # URL parser and to inet_aton, a host name to others; one reading only
        raise ToolError("url_ipv4_not_canonical", "a tool URL's IPv4 address must be four "
                        "decimal numbers without leading zeros (a.b.c.d)")
    if not parts.path:
        raise ToolError("url_no_path", "a tool URL must have a path")
    for segment in parts.path.split("/"):
        # RFC 3986 §6.2.2.2: "%2E" is a dot after normalisation
        if segment.lower().replace("%2e", ".") in (".", ".."):
            raise ToolError("url_dot_segment", "a tool URL must not contain '.' or '..' "
                            "path segments")
    return url


def _numeric_host(host: str) -> bool:
    """The last label is a number (decimal, or hex with 0x): an IPv4 address to the WHATWG
    URL standard, whatever its form."""
    last = host.rstrip(".").rsplit(".", 1)[-1].lower()
    return last.isdigit() or (last.startswith("0x") and all(
        c in "0123456789abcdef" for c in last[2:]))


def _canonical_ipv4(host: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(host)) == host  # no leading zeros, no trailing dot
    except ValueError:
        return False


def _https_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if (not isinstance(value, str) or len(value) > MAX_URL_CHARS or parts.scheme != "https"
            or not parts.hostname or "@" in parts.netloc or parts.fragment or "#" in value):
        raise ValueError(f"{what} must be an https URL without userinfo or fragment")
    return value


# --- secrets -------------------------------------------------------------------------------

# Member names that carry credentials (RFC 7591 §2 client_secret, and the usual suspects).
_SECRET_NAMES: Final = frozenset({
    "clientsecret", "secret", "password", "passwd", "passphrase", "privatekey", "apikey",
    "accesstoken", "refreshtoken", "idtoken", "bearertoken", "credential", "credentials",
    "authorization", "sharedsecret", "signingkey", "secretkey", "privatejwk", "kek",
})
# RFC 7518 §6.2.2, §6.3.2, §6.4: private or symmetric members of a JWK
_JWK_PRIVATE: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PEM_PRIVATE: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


def find_secret(value: Any, where: str = "$") -> str | None:
    """The path of the first secret-looking member of ``value``, or None. Never the value."""
    if isinstance(value, Mapping):
        is_jwk = "kty" in value
        for key, child in value.items():
            path = f"{where}.{key}"
            norm = str(key).lower().replace("_", "").replace("-", "")
            if norm in _SECRET_NAMES or norm.endswith(("secret", "password")):
                return path
            if is_jwk and key in _JWK_PRIVATE:
                return path
            found = find_secret(child, path)
            if found:
                return found
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found = find_secret(child, f"{where}[{i}]")
            if found:
                return found
    elif isinstance(value, str) and _PEM_PRIVATE.search(value):
        return where
    return None


# --- the document ----------------------------------------------------------------------------


class ToolAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    risk: Risk
    approval_required: bool = False
    description: str = Field(default="", max_length=1024)


class ToolToken(BaseModel):
    """Which token the agent presents to the tool. ``upstream`` names the tool's own
    authorization server; the credential for it is kept by Writ, never in this document."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: TokenKind = TokenKind.txn_token
    token_endpoint: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    grant: str | None = Field(default=None, min_length=1, max_length=256)
    scope: str | None = Field(default=None, max_length=1024)

    @field_validator("token_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else _https_url(value, "token.token_endpoint")

    @model_validator(mode="after")
    def _upstream(self) -> ToolToken:
        upstream = self.kind is TokenKind.upstream
        if upstream and (self.token_endpoint is None or self.grant is None):
            raise ValueError("an upstream token needs token_endpoint and grant")
        if not upstream and (self.token_endpoint, self.grant, self.scope) != (None, None, None):
            raise ValueError("token_endpoint, grant and scope belong to an upstream token only")
        return self


class ToolDocument(BaseModel):
    """A tool metadata document; docs/tools.md lists the members."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool_id: str
    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=1024)
    endpoint: str = Field(max_length=MAX_URL_CHARS)
    audience: str = Field(min_length=1, max_length=MAX_URL_CHARS)
    actions: dict[str, ToolAction] = Field(min_length=1, max_length=64)
    scopes: tuple[Scope, ...] = Field(min_length=1, max_length=64)
    tags: tuple[Tag, ...] = Field(default=(), max_length=32)
    token: ToolToken = Field(default_factory=ToolToken)
    requires_chain: tuple[str, ...] = Field(default=(), max_length=16)
    max_ttl_s: int = Field(default=300, ge=1, le=MAX_TTL_CEILING_S)
    # RFC 9396 §2 types a request for this tool may carry
    authorization_details_types: tuple[str, ...] = Field(default=(), max_length=32)

    @field_validator("tool_id")
    @classmethod
    def _tool_id(cls, value: str) -> str:
        try:
            return check_tool_url(value)
        except ToolError as err:
            raise ValueError(str(err)) from err

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return _https_url(value, "endpoint")

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: dict[str, ToolAction]) -> dict[str, ToolAction]:
        for name in value:
            if not ACTION_NAME.match(name):
                raise ValueError(f"action name {name!r} must match {ACTION_NAME.pattern}")
        return value

    @field_validator("requires_chain")
    @classmethod
    def _chain(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for p in value:
            SpiffePattern.parse(p)
        return value

    @field_validator("scopes", "tags", "authorization_details_types")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not v or len(v) > 256 for v in value):
            raise ValueError("each entry must be 1 to 256 characters")
        return tuple(dict.fromkeys(value))


def _first_error(err: ValidationError) -> str:
    # the input is never echoed: it may hold the very secret being refused
    first = err.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "document"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {msg}"


def parse_tool_document(doc: Any, *, url: str | None = None) -> ToolDocument:
    """Validate a tool metadata document (already decoded JSON). With ``url``, the
    document's ``tool_id`` must be exactly that URL."""
    if not isinstance(doc, dict):
        raise ToolError("document_not_object", "a tool metadata document is a JSON object")
    secret = find_secret(doc)
    if secret is not None:
        raise ToolError("document_has_secret",
                        f"a tool metadata document must not carry secrets (member {secret})")
    try:
        parsed = ToolDocument.model_validate(doc)
    except ValidationError as err:
        raise ToolError("document_invalid", _first_error(err)) from None
    except ValueError as err:  # a SPIFFE pattern that jwks.patterns refuses
        raise ToolError("document_invalid", f"requires_chain: {err}") from None
    # draft-ietf-oauth-client-id-metadata-document, "Client Metadata": simple string
    # comparison (RFC 3986 §6.2.1), no normalisation
    if url is not None and parsed.tool_id != url:
        raise ToolError("tool_id_mismatch", "the document's tool_id is not the URL it was "
                        "fetched from")
    return parsed


def decode_tool_document(body: bytes, *, url: str) -> ToolDocument:
    """Parse fetched bytes: UTF-8 JSON object, no duplicate members, then the rules above."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ToolError("document_not_json", "duplicate member in the document")
            out[key] = value
        return out

    try:
        doc = json.loads(body.decode("utf-8"), object_pairs_hook=no_duplicates)
    except ToolError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ToolError("document_not_json", "the document is not UTF-8 JSON") from err
    return parse_tool_document(doc, url=url)


def document_hash(doc: ToolDocument) -> str:
    canonical = json.dumps(doc.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False).encode()
    return "sha-256:" + hashlib.sha256(canonical).hexdigest()


# --- what the token path reads ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamView:
    token_endpoint: str
    grant: str
    scope: str | None


@dataclass(frozen=True, slots=True)
class ToolView:
    """One tool in the in-memory snapshot. ``usable_until`` is None for a pinned document;
    a fetched one past it is refused (fails closed)."""

    tool_id: str
    name: str
    endpoint: str
    audience: str
    token_kind: TokenKind
    upstream: UpstreamView | None
    scopes: tuple[str, ...]
    actions: Mapping[str, ToolAction]
    tags: frozenset[str]
    requires_chain: tuple[str, ...]
    max_ttl_s: int
    authorization_details_types: frozenset[str]
    source: str  # "pinned" | "url"
    document_hash: str
    fetched_at: float | None = None
    fresh_until: float | None = None
    usable_until: float | None = None

    def usable(self, now: float) -> bool:
        return self.usable_until is None or now < self.usable_until

    def highest_risk(self) -> Risk:
        return max((a.risk for a in self.actions.values()), key=lambda r: r.rank)


def unmet_chain_requirements(requires: Iterable[str], chain: Sequence[str]) -> tuple[str, ...]:
    """The ``requires_chain`` patterns no member of ``chain`` matches. ``chain`` lists the
    SPIFFE IDs that acted before the current agent: the requesting gateway, then the earlier
    actors of the transaction (DESIGN §3 step 6)."""
    return tuple(p for p in requires if not any_actor_matches(chain, p))


def tool_view(doc: ToolDocument, *, source: str, fetched_at: float | None = None,
              fresh_until: float | None = None, usable_until: float | None = None,
              digest: str | None = None) -> ToolView:
    """What the token path reads of a tool; ``digest`` is the stored ``document_hash`` when
    the caller has it."""
    upstream = None
    if doc.token.kind is TokenKind.upstream:
        assert doc.token.token_endpoint is not None and doc.token.grant is not None
        upstream = UpstreamView(doc.token.token_endpoint, doc.token.grant, doc.token.scope)
    return ToolView(
        tool_id=doc.tool_id,
        name=doc.name,
        endpoint=doc.endpoint,
        audience=doc.audience,
        token_kind=doc.token.kind,
        upstream=upstream,
        scopes=doc.scopes,
        actions=MappingProxyType(dict(doc.actions)),
        tags=frozenset(doc.tags),
        requires_chain=doc.requires_chain,
        max_ttl_s=doc.max_ttl_s,
        authorization_details_types=frozenset(doc.authorization_details_types),
        source=source,
        document_hash=digest or document_hash(doc),
        fetched_at=fetched_at,
        fresh_until=fresh_until,
        usable_until=usable_until,
    )
