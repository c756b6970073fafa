"""JSON logs through one redaction filter (DESIGN §7-8): a whole JWT, a PEM block, an admin
token or a KEK never reaches a log line; JWTs are replaced by their SHA-256."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from typing import Any

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----", re.S)
_ADMIN = re.compile(r"writ_adm_[A-Za-z0-9]+_[A-Za-z0-9_-]+")
_SECRETISH = re.compile(
    r'("?(?:client_secret|password|kek|private_key|secret|assertion|token)"?\s*[:=]\s*"?)'
    r'([^"\s,&}]{8,})',
    re.I,
)

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "color_message",
}


def _jwt_hash(match: re.Match[str]) -> str:
    return f"[jwt sha256:{hashlib.sha256(match.group(0).encode()).hexdigest()[:16]}]"


def redact(text: str) -> str:
    text = _JWT.sub(_jwt_hash, text)
    text = _PEM.sub("[pem redacted]", text)
    text = _ADMIN.sub("[admin token redacted]", text)
    return _SECRETISH.sub(lambda m: m.group(1) + "[redacted]", text)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and value is not None:
                out[key] = value
        if record.exc_text:
            out["exc"] = record.exc_text
        return redact(json.dumps(out, default=str))


_configured = False


def configure_logging(level: int = logging.INFO) -> None:
    """Install the JSON handler and the redaction filter once per process."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # per-request access lines are off: the audit trail records every decision
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = [handler]
        lg.propagate = False
    _configured = True
