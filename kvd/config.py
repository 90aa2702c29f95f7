"""Configuration: embedded defaults, then the TOML file, then command-line flags (flags win).

The TOML keys are the flags' long names (`port`, `gossip_port` or `gossip-port`, `fsync`, ...)
plus `max_value_size`, the log's `appendonly`, `compaction_ratio`, `compaction_min_size`,
`tombstone_max_age` (seconds), the cluster's `cluster`, `gossip_hwm`, `max_clock_offset_ms`
and `peer_max_message`, the Redis door's `resp_port` (also a flag) and `maxclients`, and
the HTTP door's `http_port` (also a flag) and `http_header_timeout`, TLS on those two
doors: `tls_cert`, `tls_key`, `tls_ca` (also flags), and `cluster_secret_file` (also a flag;
CURVE encryption, shared.keyring). Paths come from platformdirs, so XDG_* variables move them.

The cluster secret file is read and written here. A file that anyone but its owner may read or
write is refused, as ssh refuses such a private key: whoever reads the secret can join the
cluster and read every value, and whoever writes it can lock the node out, so a warning would
leave the cluster open while the log scrolls by; the fix is one chmod.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import platformdirs

from shared import keyring
from shared.errors import KvError

APP = "kv"
FSYNC_POLICIES = ("always", "everysec", "no")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(KvError):
    code = "CONFIG"


@dataclass
class Config:
    name: str | None = None
    bind: str = "127.0.0.1"
    port: int = 7700
    gossip_port: int | None = None
    resp_port: int = 7379  # the Redis door (kvd.doors.resp); 0 closes it
    http_port: int = 7780  # the HTTP door (kvd.doors.http); 0 closes it
    http_header_timeout: float = 10.0  # seconds a request may take to arrive (slowloris)
    maxclients: int = 10_000  # Redis-door connections at once
    # TLS on the Redis and HTTP doors (kvd.doors.tls): both or neither of cert and key; with
    # a CA, clients must show a certificate it signed.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    join: list[str] = field(default_factory=list)
    data_dir: Path | None = None
    fsync: str = "everysec"
    log_level: str = "info"
    # Listen beyond loopback with no user defined (Redis's protected mode off): kvd.daemon.
    insecure: bool = False
    max_value_size: int = 16 * 1024 * 1024
    cluster: str = "kv"  # peers must carry the same name; guards against crossed wires
    gossip_hwm: int = 1000  # gossip messages queued per subscriber before PUB drops
    # Frame limit of the sockets that take peers' gossip and replies; at least max_value_size
    # + 1 MiB, the client door's limit, which peer requests meet (kvd.cluster.settings).
    peer_max_message: int = 256 * 1024 * 1024
    # Durability (kvd.log.wal, kvd.log.compaction): config-file keys, no flags.
    appendonly: bool = True  # false runs without a log (benchmark baseline; data is lost)
    compaction_ratio: float = 2.0  # rewrite the log once it is this many times the live data
    compaction_min_size: int = 64 * 1024 * 1024  # ... and at least this many bytes
    # Seconds a deletion is kept in the log for peers, and the most a tombstone waits in memory
    # for a member that is down (kvd.cluster.cluster; see README "Tombstones").
    tombstone_max_age: int = 7 * 86400
    # A peer's clock measured further off than this (ms) is logged (kvd.cluster.clockskew).
    max_clock_offset_ms: int = 500
    # CURVE on the client port and between peers, keys derived from this file's secrets.
    cluster_secret_file: Path | None = None

    def resolve(self) -> Config:
        """Fill in the defaults that depend on other settings; check the values."""
        if self.fsync not in FSYNC_POLICIES:
            choices = ", ".join(FSYNC_POLICIES)
            raise ConfigError(f"fsync must be one of {choices}, not {self.fsync!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        if self.compaction_ratio <= 1 or self.compaction_min_size < 0:
            raise ConfigError("compaction_ratio must be over 1 and compaction_min_size >= 0")
        if self.max_clock_offset_ms <= 0:
            raise ConfigError("max_clock_offset_ms must be a positive number of milliseconds")
        if self.peer_max_message < self.max_value_size + 1024 * 1024:
            raise ConfigError("peer_max_message must be at least max_value_size + 1 MiB "
                              f"({self.max_value_size + 1024 * 1024}): raise it")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range (1-65535)")
        if not 0 <= self.resp_port < 65536:
            raise ConfigError(f"resp_port {self.resp_port} is out of range (0 closes the door, "
                              "or 1-65535)")
        if not 0 <= self.http_port < 65536:
            raise ConfigError(f"http_port {self.http_port} is out of range (0 closes the door, "
                              "or 1-65535)")
        if self.maxclients < 1:
            raise ConfigError("maxclients must be 1 or more")
        self._check_tls()
        if self.gossip_port is None:
            self.gossip_port = self.port + 1
        if self.name is None:
            host = socket.gethostname() if self.bind in ("0.0.0.0", "*", "::") else self.bind
            self.name = f"{host}:{self.port}"
        if self.data_dir is None:
            self.data_dir = data_root() / safe_name(self.name)
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.cluster_secret_file is not None:
            self.cluster_secret_file = Path(self.cluster_secret_file).expanduser().resolve()
        return self

    def _check_tls(self) -> None:
        """Cert and key go together, a CA needs them, and every file named can be read: a
        mistake here fails the start with one line, not the first client's handshake."""
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = ("--tls-cert", "--tls-key") if self.tls_key is None \
                else ("--tls-key", "--tls-cert")
            raise ConfigError(f"{given} needs {missing}: TLS takes a certificate and its "
                              "private key (config tls_cert and tls_key)")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-ca needs --tls-cert and --tls-key: client certificates "
                              "are checked only on a TLS door")
        for flag in ("tls_cert", "tls_key", "tls_ca"):
            value = getattr(self, flag)
            if value is None:
                continue
            path = Path(value).expanduser().resolve()
            try:
                with open(path, "rb") as f:
                    f.read(1)
            except OSError as exc:
                raise ConfigError(f"cannot read --{flag.replace('_', '-')} {path}: "
                                  f"{exc.strerror or exc}") from None
            setattr(self, flag, path)

    @property
    def address(self) -> str:
        return f"{self.connect_host}:{self.port}"

    @property
    def http_url(self) -> str:
        """The HTTP door's base URL as members tell each other ("" when the door is closed):
        the host peers reach us on, so a console elsewhere in the cluster can link here."""
        if not self.http_port:
            return ""
        host = self.connect_host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.http_port}"

    @property
    def connect_host(self) -> str:
        """Where a local client reaches this node (a wildcard bind is reached on loopback)."""
        return "127.0.0.1" if self.bind in ("0.0.0.0", "*", "::") else self.bind


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def data_root() -> Path:
    return Path(platformdirs.user_data_dir(APP)) / "nodes"


def log_path(name: str) -> Path:
    return Path(platformdirs.user_log_dir(APP)) / f"{safe_name(name)}.log"


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(APP)) / "kvd.toml"


def load(path: Path | None, overrides: dict) -> Config:
    """Defaults < TOML file < overrides (the flags that were given, None meaning not given)."""
    values: dict = {}
    file = path or default_config_file()
    if path is not None and not file.exists():
        raise ConfigError(f"config file {file} does not exist")
    if file.exists():
        try:
            raw = tomllib.loads(file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config {file}: {exc}") from None
        known = {f.name for f in fields(Config)}
        for key, value in raw.items():
            attr = key.replace("-", "_")
            if attr not in known:
                raise ConfigError(f"unknown key {key!r} in {file} — keys are the flags' names")
            values[attr] = value
    values.update({k: v for k, v in overrides.items() if v is not None and v != []})
    try:
        return Config(**values).resolve()
    except TypeError as exc:
        raise ConfigError(f"bad configuration: {exc}") from None


def read_keyring(path: Path) -> keyring.Keyring:
    """The keyring of a cluster secret file; ConfigError (one line, never the secret) when it
    is missing, unreadable, open to others or malformed."""
    what = f"cluster secret file {path}"
    try:
        fd = os.open(path, os.O_RDONLY)  # a symlink may point at it (mounted secrets do)
    except FileNotFoundError:
        raise ConfigError(f"{what} does not exist — make one with: kvd secret new {path}"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(f"{what} is not a regular file")
        if mode & 0o077:
            raise ConfigError(f"{what} is open to others (mode {stat.S_IMODE(mode):04o}): "
                              f"a secret is for its owner only — chmod 600 {path}")
        raw = f.read(64 * 1024)
    try:
        return keyring.parse(raw.decode("ascii"), what)
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not a secret file (not text)") from None
    except keyring.KeyringError as exc:
        raise ConfigError(exc.message) from None


def new_secret_file(path: Path) -> keyring.Keyring:
    """Write a fresh secret to `path`, mode 0600; never over an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists: kvd secret new never overwrites a secret (to roll "
                          "a new one in, write it to another file: see README, Encryption)"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    line = keyring.new_secret()
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    return keyring.Keyring([bytes.fromhex(line)])
