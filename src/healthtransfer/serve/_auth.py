"""API keys: stored hashed in a JSON key file, each with a key id and scopes.

Scopes: ``predict`` (POST /v1/predict, /v1/explain) and ``read`` (GET /v1/drift, /v1/audit).
Any valid key may read GET /v1/model. A key is ``htk_<key id>_<43 random characters>``
(256 bits from :mod:`secrets`), printed once by ``healthtransfer serve keys add``; the file
keeps only a per-key salt and ``sha256(salt + key)``. Because keys are long random tokens a
single salted sha256 is enough (a slow password hash protects low-entropy secrets; these are
not). Comparison is constant-time.

Key file::

    {"version": 1, "keys": [{"id": "clinic-a", "salt": "...", "sha256": "...",
                             "scopes": ["predict"], "created": "2025-01-01T00:00:00+00:00"}]}

Example
-------
>>> import tempfile, pathlib
>>> f = pathlib.Path(tempfile.mkdtemp()) / "keys.json"
>>> key = add_key(f, "clinic-a", ["predict"])
>>> KeyStore.load(f).authenticate(key).scopes
('predict',)
>>> KeyStore.load(f).authenticate("htk_clinic-a_wrong") is None
True
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError

__all__ = ["SCOPES", "ApiKey", "KeyStore", "add_key"]

SCOPES = ("predict", "read")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ApiKey:
    id: str
    scopes: tuple[str, ...]


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + key.encode("utf-8")).hexdigest()


def _read(file: Path) -> dict:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": 1, "keys": []}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read the API key file ({type(exc).__name__})",
                             where=str(file), fix="recreate it with `healthtransfer serve keys add`"
                             ) from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise UserInputError("is not an API key file", where=str(file),
                             fix="recreate it with `healthtransfer serve keys add`")
    return data


class KeyStore:
    def __init__(self, entries: list[dict]):
        self._entries = []
        for e in entries:
            if not isinstance(e, dict) or not {"id", "salt", "sha256", "scopes"} <= set(e):
                raise UserInputError("an entry of the API key file is malformed",
                                     fix="recreate it with `healthtransfer serve keys add`")
            self._entries.append(e)

    @classmethod
    def load(cls, file: str | Path) -> "KeyStore":
        file = Path(file)
        if not file.is_file():
            raise UserInputError("does not exist", where=f"API key file {file}",
                                 fix="create it with `healthtransfer serve keys add FILE KEY_ID`")
        return cls(_read(file)["keys"])

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str | None) -> ApiKey | None:
        if not key or len(key) > 256:
            return None
        found = None
        for e in self._entries:  # check all entries: timing does not reveal which matched
            try:
                ok = hmac.compare_digest(_digest(e["salt"], key), str(e["sha256"]))
            except ValueError:
                ok = False
            if ok:
                found = ApiKey(str(e["id"]), tuple(e["scopes"]))
        return found


def add_key(file: str | Path, key_id: str, scopes: list[str] | tuple[str, ...] = ("predict",)) -> str:
    """Add a key to ``file`` (created if missing, mode 0600) and return it in plain text.

    The plain key is shown only here; the file stores its salted sha256."""
    file = Path(file)
    if not _ID.match(key_id or ""):
        raise UserInputError("key id must be 1-64 letters, digits, '.', '_' or '-'",
                             where="serve keys add", fix="choose a short name like clinic-a")
    scopes = tuple(dict.fromkeys(scopes or ()))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise UserInputError(f"unknown or no scopes {bad}", where="serve keys add",
                             fix=f"use one or more of {list(SCOPES)}")
    data = _read(file)
    if any(e.get("id") == key_id for e in data["keys"]):
        raise UserInputError(f"key id {key_id!r} already exists", where=str(file),
                             fix="choose another id or remove the old entry")
    key = f"htk_{key_id}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    data["keys"].append({
        "id": key_id, "salt": salt, "sha256": _digest(salt, key), "scopes": list(scopes),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    })
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, file)
    return key
