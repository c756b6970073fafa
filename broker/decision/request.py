"""Strict parsing of token-endpoint requests: bounded, no repeated parameters (but
``audience`` and ``resource``, RFC 8693 §2.1), JSON depth bounded. Pure: raises
``InvalidRequest`` with a safe description."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from broker.errors import InvalidRequest

MAX_PARAMS = 32
#: RFC 8693 §2.1: "Multiple audience/resource parameters may be used"
REPEATABLE = frozenset({"audience", "resource"})


class FormParams(dict[str, str]):
    """A request's parameters: each name to its value, the first one for a parameter of
    ``REPEATABLE``; ``values_of`` gives all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.repeated: dict[str, tuple[str, ...]] = {}


def values_of(params: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Every value of ``name`` in the request, in order; () when it is absent."""
    if isinstance(params, FormParams) and name in params.repeated:
        return params.repeated[name]
    return (params[name],) if name in params else ()


def parse_form(body: bytes) -> FormParams:
    """Parse ``application/x-www-form-urlencoded``; RFC 6749 §3.2: parameters MUST NOT be
    included more than once, except those RFC 8693 §2.1 lets a client repeat."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_PARAMS
        )
    except (UnicodeDecodeError, ValueError) as err:
        raise InvalidRequest(
            "request body is not valid form encoding", reason="malformed_body"
        ) from err
    params = FormParams()
    for name, value in pairs:
        if name in params:
            if name not in REPEATABLE:
                raise InvalidRequest(f"parameter '{name}' is repeated",
                                     reason="repeated_parameter")
            params.repeated[name] = (*values_of(params, name), value)
            continue
        params[name] = value
    return params


def _depth(value: Any, limit: int, level: int = 1) -> None:
    if level > limit:
        raise InvalidRequest("JSON parameter is nested too deeply", reason="json_too_deep")
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    for child in children:
        _depth(child, limit, level + 1)


def parse_json_object(
    raw: str | None, name: str, *, max_depth: int, max_bytes: int = 8192
) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if len(raw) > max_bytes:
        raise InvalidRequest(f"'{name}' is too large", reason=f"{name}_too_large")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise InvalidRequest(f"'{name}' is not valid JSON", reason=f"{name}_malformed") from err
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{name}' must be a JSON object", reason=f"{name}_malformed")
    _depth(value, max_depth)
    return value


class AuthorizationDetail(BaseModel):
    """RFC 9396 §2: an object with a required ``type`` and common optional members."""

    # only the RFC 9396 §2.2 common members are kept; nothing else is copied into a token
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field(min_length=1, max_length=256)
    actions: list[str] | None = Field(default=None, max_length=32)
    locations: list[str] | None = Field(default=None, max_length=32)
    identifier: str | None = Field(default=None, max_length=1024)
    datatypes: list[str] | None = Field(default=None, max_length=32)
    privileges: list[str] | None = Field(default=None, max_length=32)


class RequestDetails(BaseModel):
    """What the agent is about to do (DESIGN §2). Unknown members are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tool: str | None = Field(default=None, min_length=1, max_length=2048)
    action: str | None = Field(default=None, min_length=1, max_length=128)
    resource: str | None = Field(default=None, min_length=1, max_length=2048)
    intent: str | None = Field(default=None, max_length=1024)
    authorization_details: tuple[AuthorizationDetail, ...] = Field(default=(), max_length=16)
    ttl_s: int | None = Field(default=None, ge=1, le=86400)


class RequestContext(BaseModel):
    """Environment facts reported by the authenticated gateway."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    environment: str | None = Field(default=None, min_length=1, max_length=64)
    client_ip: str | None = Field(default=None, max_length=64)

    @field_validator("client_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return None if value is None else str(ipaddress.ip_address(value))


def parse_model(model: type[BaseModel], data: dict[str, Any], name: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or name
        raise InvalidRequest(
            f"'{name}' member '{where}' is invalid", reason=f"{name}_invalid"
        ) from err
