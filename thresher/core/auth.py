"""API keys: a keys file of hashed entries, bearer tokens checked in constant time, scopes, and the local key.

A key is shown once, when it is made; only its SHA-256 is stored, one line per key in the keys file:

    <name> <scope>[,<scope>...] sha256:<hex digest of the key>

The name is not secret: jobs record it as their owner. Scopes: `submit` (submit jobs, read and stop one's own),
`read` (read every job and API), `admin` (everything, including deploying APIs and stopping any job).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from thresher.core.errors import InvalidRequest, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

SUBMIT, READ, ADMIN = "submit", "read", "admin"
SCOPES = (SUBMIT, READ, ADMIN)
KEY_PREFIX = "thr_"  # makes a leaked key easy to spot (secret scanners, the tests' log check)
KEY_PATTERN = re.compile(rf"{KEY_PREFIX}[A-Za-z0-9_-]{{43}}")  # what generate_key() makes
API_KEY_FILE = "api_key"  # <data_dir>/api_key: the embedded stack's own key, for the CLI (mode 0600)
KEYS_FILE = "api_keys"  # <data_dir>/api_keys: the embedded stack's keys file, when none is configured
LOCAL_KEY_NAME = "local"
_SCHEME = "Bearer "
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,256}")  # printable ASCII: what HTTP headers and gRPC metadata carry safely


@dataclass(frozen=True)
class Caller:
    """Who made a request: the name of their key (a job's owner) and its scopes."""

    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


ANONYMOUS = Caller("", frozenset({ADMIN}))  # no keys are configured: the API is open to everyone


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    digest: bytes = field(repr=False)


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def keys_file_line(name: str, scopes: Iterable[str], key: str) -> str:
    """The keys file's line for `key`; InvalidRequest for a bad name or an unknown scope."""
    scopes = list(scopes)
    _check_entry(name, scopes, "key")
    return f"{name} {','.join(scopes)} sha256:{digest(key).hex()}\n"


def authorization(key: str) -> str:
    """The Authorization header (and gRPC metadata) value that carries `key`."""
    return _SCHEME + key


def bearer_token(value: str) -> str:
    """The key in an `Authorization: Bearer <key>` value; Unauthenticated when it is not one."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != _SCHEME.strip().lower() or not _TOKEN.fullmatch(token.strip()):
        raise Unauthenticated("malformed Authorization header: expected `Bearer <API key>`")
    return token.strip()


class KeyRing:
    """The keys of a keys file, read again whenever the file changes. Without a file the API is open."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self._path = Path(path) if path else None
        self._version: tuple[int, int, int] | None = None
        self._entries: list[_Entry] = []
        if self._path is not None:
            self._load()  # a missing or malformed file stops the service at start, with the reason

    def caller(self, authorization_value: str | None) -> Caller:
        """The caller an Authorization value stands for; Unauthenticated without a valid key."""
        if self._path is None:
            return ANONYMOUS
        entries = self._current()
        if not authorization_value:
            raise Unauthenticated("an API key is required: send `Authorization: Bearer <API key>`")
        wanted = digest(bearer_token(authorization_value))
        found = None
        for entry in entries:  # every entry, equal or not: the time taken does not tell how much matched
            if hmac.compare_digest(entry.digest, wanted):
                found = entry
        if found is None:
            raise Unauthenticated("the API key is not valid")
        return found.caller

    def _current(self) -> list[_Entry]:
        try:
            self._load()
        except (OSError, InvalidRequest) as e:
            log.error("cannot read the API keys file %s: %s", self._path, e)
            raise Unavailable("the server cannot read its API keys; see its log") from e
        return self._entries

    def _load(self) -> None:
        assert self._path is not None
        stat = self._path.stat()
        version = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if version != self._version:
            self._entries = parse_keys_file(self._path.read_text(encoding="utf-8"), str(self._path))
            self._version = version


def parse_keys_file(text: str, where: str) -> list[_Entry]:
    """The entries of a keys file; InvalidRequest naming the line of the first malformed one."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 3 or not fields[2].startswith("sha256:"):
            raise InvalidRequest(f"{where}: line {number}: expected `<name> <scope>[,<scope>...] sha256:<hex>`")
        name, scopes, hex_digest = fields[0], fields[1].split(","), fields[2].removeprefix("sha256:")
        _check_entry(name, scopes, f"{where}: line {number}")
        try:
            key_digest = bytes.fromhex(hex_digest)
        except ValueError:
            key_digest = b""
        if len(key_digest) != hashlib.sha256().digest_size:
            raise InvalidRequest(f"{where}: line {number}: the digest must be 64 hexadecimal digits")
        entries.append(_Entry(Caller(name, frozenset(scopes)), key_digest))
    return entries


def _check_entry(name: str, scopes: list[str], where: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"{where}: name {name!r}: use 1 to 64 letters, digits and . _ @ -")
    if not scopes or any(s not in SCOPES for s in scopes):
        raise InvalidRequest(f"{where}: scopes {','.join(scopes)!r}: each must be one of {', '.join(SCOPES)}")


def add_key(keys_file: Path, name: str, scopes: Iterable[str], key: str) -> None:
    """Append `key`'s entry to a keys file (created with mode 0600 if missing)."""
    _append_private(keys_file, keys_file_line(name, scopes, key))


def _append_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8") as f:
        f.write(text)


def ensure_local_key(data_dir: Path) -> Path:
    """The embedded stack's key: `<data_dir>/api_key` (mode 0600), made once and kept, and its `admin` entry named
    `local` in `<data_dir>/api_keys`. Returns the keys file. Deleting `api_key` makes a new key at the next start,
    and the old one stops working; other entries of the keys file are kept."""
    key_path, keys_file = data_dir / API_KEY_FILE, data_dir / KEYS_FILE
    key = read_api_key(data_dir)
    if key is None:
        key = generate_key()
        data_dir.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(key + "\n")
    os.chmod(key_path, 0o600)  # also when an older file was readable by others
    entry = keys_file_line(LOCAL_KEY_NAME, [ADMIN], key)
    lines = keys_file.read_text(encoding="utf-8").splitlines(keepends=True) if keys_file.exists() else []
    if entry not in lines:
        others = [line.rstrip("\n") + "\n" for line in lines if line.split()[:1] != [LOCAL_KEY_NAME]]
        keys_file.unlink(missing_ok=True)  # written anew, private from the start
        _append_private(keys_file, "".join(others) + entry)
    return keys_file


def read_api_key(data_dir: Path) -> str | None:
    """The key in `<data_dir>/api_key`, or None when there is none."""
    try:
        return (data_dir / API_KEY_FILE).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
