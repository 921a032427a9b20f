"""Access control: loopback by default, ZeroMQ CURVE for anything else.

A rig spread over two PCs needs the daemon to listen on a network address.
Then anyone on that network could publish into the experiment, so the daemon
refuses to bind a non-loopback address unless CURVE is configured: its own key
pair, and a folder of the public keys of the clients allowed in (an
allow-list enforced by ``zmq.auth``'s authenticator). Keys are the files
``zmq.auth.create_certificates`` writes, made by ``collectord keygen``.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import struct
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from .errors import ConfigError
from .paths import check_file_name

_LOCAL_HOSTS = {"localhost", "ip6-localhost"}


def is_loopback(endpoint: str) -> bool:
    """Whether binding ``endpoint`` exposes nothing beyond this machine."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name
        return False


def _is_key(key: bytes) -> bool:
    """Whether ``key`` is a CURVE key in Z85 text (40 characters, 32 bytes):
    ZeroMQ refuses anything else, with a bare "Invalid argument"."""
    try:
        return len(key) == 40 and len(z85.decode(key)) == 32
    except (ValueError, KeyError, struct.error):
        return False


def _load(path: str | os.PathLike[str], what: str, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(Path(path).expanduser())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    if secret and secret_key is None:
        raise ConfigError(f"{what} {path} holds no secret key (use the .key_secret file)")
    for name, key in (("public", public), ("secret", secret_key)):
        if key is not None and not _is_key(key):
            raise ConfigError(
                f"{what} {path}: its {name} key is not a CURVE key (40 characters of Z85 "
                "text, as `collectord keygen` writes)"
            )
    return public, secret_key


class ServerSecurity:
    """The daemon's CURVE setup, or None for loopback-only plaintext."""

    def __init__(self, key_file: str, authorized: str) -> None:
        self.public, secret = _load(key_file, "server key", secret=True)
        assert secret is not None
        self.secret = secret
        self.authorized = Path(authorized).expanduser()
        if not self.authorized.is_dir():
            raise ConfigError(f"authorized_clients {authorized} is not a folder")
        # The authenticator reads every *.key file there, and one it cannot
        # read makes it (with a log line) let no client in at all.
        for key_file in sorted(glob.glob(os.path.join(self.authorized, "*.key"))):
            _load(key_file, "authorized client key", secret=False)
        self._auth: ThreadAuthenticator | None = None

    @classmethod
    def from_config(cls, config: Any) -> ServerSecurity | None:
        if not config.server_key and not config.authorized_clients:
            for endpoint in (config.data, config.control):
                if not is_loopback(endpoint):
                    raise ConfigError(
                        f"refusing to bind {endpoint} without authentication: outside "
                        "loopback, set [security] server_key and authorized_clients "
                        "(see `collectord keygen`)"
                    )
            return None
        if not (config.server_key and config.authorized_clients):
            raise ConfigError("[security] needs both server_key and authorized_clients")
        return cls(config.server_key, config.authorized_clients)

    def start(self, context: zmq.Context[Any]) -> None:
        """Start the allow-list check (ZAP) for every CURVE socket of ``context``."""
        self._auth = ThreadAuthenticator(context)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=os.fspath(self.authorized))

    def apply(self, sock: zmq.Socket[Any]) -> None:
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


class ClientSecurity:
    """A client's CURVE keys and the daemon's public key."""

    def __init__(self, key_file: str, server_public_key: str) -> None:
        self.public, secret = _load(key_file, "client key", secret=True)
        assert secret is not None
        self.secret = secret
        self.server_public, _ = _load(server_public_key, "server public key", secret=False)

    @classmethod
    def from_config(cls, config: Any) -> ClientSecurity | None:
        if not config.client_key and not config.server_public_key:
            return None
        if not (config.client_key and config.server_public_key):
            raise ConfigError("[security] needs both client_key and server_public_key")
        return cls(config.client_key, config.server_public_key)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


def keygen(folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (public, to share) and ``NAME.key_secret`` (private).

    Never over an existing pair: the peers that hold its public key would be
    refused from then on, with nothing to say why.
    """
    check_file_name(name, where="key name")
    for path in (folder / f"{name}.key", folder / f"{name}.key_secret"):
        if path.exists():
            raise ConfigError(
                f"{path} exists: a new key pair would replace it, and every peer that "
                "holds its public key would be refused; remove it first or choose "
                "another --name"
            )
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(folder, name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)
