"""Who may use the floor's web page, and for which plants.

A plant network rarely reaches a company directory, and a tablet at the line has no client
certificate: Andon keeps **local accounts** (``$ANDON_HOME/ui/users.json``, managed with
``andon users add|list|remove``), each with a scrypt password hash and the plants it may see.
A login gives a signed session cookie (HMAC-SHA256 with the installation's secret,
``ANDON_UI_SECRET`` or ``$ANDON_HOME/ui/secret``, HttpOnly, SameSite=Strict, one shift long);
every form carries a CSRF token derived from the session; five wrong passwords for one user lock
it for five minutes. Serve it behind TLS (a reverse proxy) wherever the network is not trusted.

Example:
    >>> import tempfile
    >>> users = Users(Path(tempfile.mkdtemp()) / "users.json")
    >>> users.add("j.doe", "correct horse battery", ["plant-a"]).may_see("plant-b")
    False
    >>> users.check("j.doe", "correct horse battery").plants, users.check("j.doe", "wrong") is None
    (('plant-a',), True)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from andon.errors import ConfigError

USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 12
SESSION_S = 12 * 3600  # one shift and then some
LOCKOUT_AFTER, LOCKOUT_S = 5, 300
MAX_TRACKED = 10_000  # user names with recent wrong passwords kept in memory
ALL_PLANTS = "*"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


_DUMMY = "scrypt$16384$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), dklen=32, n=int(n), r=8, p=1)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


@dataclass(frozen=True)
class User:
    name: str
    plants: tuple[str, ...]

    def may_see(self, plant: str) -> bool:
        return ALL_PLANTS in self.plants or plant in self.plants


class Users:
    """The accounts file. Reads it once per change on disk; writes are atomic."""

    def __init__(self, path: Path) -> None:
        self.path: Path | None = path
        self.data: dict[str, dict[str, Any]] = {}
        self._mtime = -1.0
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._reload()

    def _reload(self) -> None:
        if self.path is None or not self.path.exists():
            return
        mtime = self.path.stat().st_mtime
        if mtime != self._mtime:
            self.data = json.loads(self.path.read_text())
            self._mtime = mtime

    def _save(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        tmp.chmod(0o600)
        tmp.replace(self.path)
        self._mtime = self.path.stat().st_mtime

    def add(self, name: str, password: str, plants: list[str]) -> User:
        if not USER_RE.match(name):
            raise ConfigError(f"user name {name[:80]!r}: letters, digits and . _ @ - (at most 64)")
        if len(password) < MIN_PASSWORD:
            raise ConfigError(f"a password needs at least {MIN_PASSWORD} characters")
        if not plants:
            raise ConfigError("give the plants this user may see (--plants plant-a,plant-b, or '*' for all)")
        self._reload()
        self.data[name] = {"hash": hash_password(password), "plants": sorted(set(plants))}
        self._save()
        return User(name, tuple(self.data[name]["plants"]))

    def remove(self, name: str) -> bool:
        self._reload()
        found = self.data.pop(name, None) is not None
        if found:
            self._save()
        return found

    def list(self) -> list[User]:
        self._reload()
        return [User(n, tuple(d["plants"])) for n, d in sorted(self.data.items())]

    def get(self, name: str) -> User | None:
        self._reload()
        d = self.data.get(name)
        return User(name, tuple(d["plants"])) if d else None

    def locked(self, name: str, now: float | None = None) -> bool:
        now = now or time.time()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if now - t < LOCKOUT_S]
            self._failures[name] = recent
            return len(recent) >= LOCKOUT_AFTER

    def check(self, name: str, password: str) -> User | None:
        """The user when the password is right; None otherwise (a wrong try counts to the lockout)."""
        self._reload()
        d = self.data.get(name)
        # an unknown name costs the same scrypt as a known one: the answer's time does not tell
        ok = verify_password(password, d["hash"] if d else _DUMMY) and d is not None
        if not ok:
            now = time.time()
            with self._lock:
                if len(self._failures) > MAX_TRACKED:  # many names tried: forget the stale ones (bounded memory)
                    self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] < LOCKOUT_S}
                self._failures.setdefault(name[:64], []).append(now)
            return None
        return User(name, tuple(d["plants"])) if d else None


def installation_users() -> Users:
    """The accounts of this installation (``$ANDON_HOME/ui/users.json``)."""
    from andon.settings import get_settings

    return Users(get_settings().home / "ui" / "users.json")


def installation_secret() -> bytes:
    """This installation's signing key (``ANDON_UI_SECRET``, else ``$ANDON_HOME/ui/secret``): the
    page and whoever makes links for it (workers, `andon label export`) must share it."""
    from andon.settings import get_settings

    s = get_settings()
    return load_secret(s.home, s.ui_secret.get_secret_value() if s.ui_secret else None)


def load_secret(home: Path, configured: str | None) -> bytes:
    """The signing key: ``configured``, else a random one kept under ``home``."""
    if configured:
        return configured.encode()
    path = home / "ui" / "secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_bytes()


def same(given: str, expected: str) -> bool:
    """Constant-time equality of two texts, whatever the client sent (``hmac.compare_digest``
    refuses a non-ASCII str with TypeError: bytes never)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _sign(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Session:
    user: str
    expires: int
    nonce: str


def issue_session(secret: bytes, user: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + SESSION_S)
    body = f"{user}|{expires}|{secrets.token_hex(12)}"
    return f"{body}|{_sign(secret, 'session|' + body)}"


def read_session(secret: bytes, cookie: str | None, now: float | None = None) -> Session | None:
    if not cookie or len(cookie) > 300 or cookie.count("|") != 3:
        return None
    user, expires, nonce, sig = cookie.split("|")
    if not same(sig, _sign(secret, f"session|{user}|{expires}|{nonce}")):
        return None
    if not expires.isascii() or not expires.isdigit() or int(expires) < (now or time.time()):
        return None
    return Session(user, int(expires), nonce)


def csrf_token(secret: bytes, nonce: str) -> str:
    """The token every form of a session carries (a forged cross-site form cannot know it)."""
    return _sign(secret, "csrf|" + nonce)[:32]


def signed_link(secret: bytes, key: str, expires: int) -> str:
    """The signature of a time-limited link to one object (for tools without a session: Label Studio)."""
    return _sign(secret, f"object|{key}|{expires}")[:32]


def check_link(secret: bytes, key: str, expires: str, sig: str, now: float | None = None) -> bool:
    if not expires.isascii() or not expires.isdigit() or int(expires) < (now or time.time()):
        return False
    return same(sig, signed_link(secret, key, int(expires)))
