"""Key material: HPKE (RFC 9180) recipient keys that seal each backup's data key, and the Ed25519
host key that signs manifests.

Default KEM is the hybrid ML-KEM-768 + X25519 (archives are kept for 7 years and longer, so they
must survive "harvest now, decrypt later"); X25519 alone is selectable. Key files are one line
of text each: ``<kind>-v1 <kem> <base64>``; see docs/FORMAT.md.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from bvh_ops.errors import ConfigError, CryptoError

HYBRID = "mlkem768-x25519"
X25519 = "x25519"
KEMS = (HYBRID, X25519)
DATA_KEY_BYTES = 32
HPKE_INFO = b"bvh-ops/v1/data-key"
RECIPIENT_TAG = "bvh-ops-recipient-v1"
IDENTITY_TAG = "bvh-ops-identity-v1"
HOST_KEY_TAG = "bvh-ops-host-ed25519-v1"

_MLKEM768_SEED = 64
_MLKEM768_PUB = 1184
_X25519_LEN = 32


def _suite(kem: str) -> hpke.Suite:
    kem_id = hpke.KEM.MLKEM768_X25519 if kem == HYBRID else hpke.KEM.X25519
    return hpke.Suite(kem_id, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def key_id(kem: str, public_bytes: bytes) -> str:
    """Stable short id of a public key: hex of sha256("bvh-ops-kid-v1" | kem | public bytes)[:8]."""
    return hashlib.sha256(b"bvh-ops-kid-v1" + kem.encode() + public_bytes).hexdigest()[:16]


@dataclass(frozen=True)
class Recipient:
    """A public key the data key is sealed to."""

    kem: str
    public_bytes: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return key_id(self.kem, self.public_bytes)

    def _hpke_public(self) -> object:
        if self.kem == HYBRID:
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self.public_bytes[:_MLKEM768_PUB]),
                x25519.X25519PublicKey.from_public_bytes(self.public_bytes[_MLKEM768_PUB:]),
            )
        return x25519.X25519PublicKey.from_public_bytes(self.public_bytes)

    def seal(self, data_key: bytes) -> bytes:
        """HPKE base-mode seal of the data key: enc || ciphertext (RFC 9180 single-shot)."""
        return _suite(self.kem).encrypt(data_key, self._hpke_public(), info=HPKE_INFO)


@dataclass(frozen=True)
class Identity:
    """A private key that opens data keys sealed to its recipient. Never printed."""

    kem: str
    private_bytes: bytes = field(repr=False)

    def _hpke_private(self) -> object:
        if self.kem == HYBRID:
            return hpke.MLKEM768X25519PrivateKey(
                mlkem.MLKEM768PrivateKey.from_seed_bytes(self.private_bytes[:_MLKEM768_SEED]),
                x25519.X25519PrivateKey.from_private_bytes(self.private_bytes[_MLKEM768_SEED:]),
            )
        return x25519.X25519PrivateKey.from_private_bytes(self.private_bytes)

    def recipient(self) -> Recipient:
        if self.kem == HYBRID:
            ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(self.private_bytes[:_MLKEM768_SEED])
            xk = x25519.X25519PrivateKey.from_private_bytes(self.private_bytes[_MLKEM768_SEED:])
            pub = ml.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        else:
            pub = x25519.X25519PrivateKey.from_private_bytes(self.private_bytes).public_key().public_bytes_raw()
        return Recipient(self.kem, pub)

    @property
    def key_id(self) -> str:
        return self.recipient().key_id

    def open(self, sealed: bytes) -> bytes:
        try:
            key = _suite(self.kem).decrypt(sealed, self._hpke_private(), info=HPKE_INFO)
        except Exception:
            raise CryptoError("the data key could not be opened with this identity (wrong key?)") from None
        if len(key) != DATA_KEY_BYTES:
            raise CryptoError("sealed data key has the wrong length")
        return key


def generate_identity(kem: str = HYBRID) -> Identity:
    if kem == HYBRID:
        return Identity(kem, secrets.token_bytes(_MLKEM768_SEED) + secrets.token_bytes(_X25519_LEN))
    if kem == X25519:
        return Identity(kem, x25519.X25519PrivateKey.generate().private_bytes_raw())
    raise ConfigError(f"unknown kem '{kem}': use {' or '.join(KEMS)}")


def _line(tag: str, kem: str, raw: bytes) -> str:
    return f"{tag} {kem} {base64.b64encode(raw).decode()}\n"


# Key files are created, never replaced, and never through a symbolic link: O_EXCL fails on any
# existing name (a dangling link included), O_NOFOLLOW says so explicitly.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def _create_key_file(path: Path, text: str, mode: int) -> None:
    """Write a new key file; FileExistsError if the name exists in any form."""
    fd = os.open(path, _CREATE_FLAGS, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed (or for 0644 files, kept) the mode
        with os.fdopen(fd, "w", closefd=False) as fh:
            fh.write(text)
    finally:
        os.close(fd)


def write_keypair(directory: Path, kem: str = HYBRID) -> tuple[Path, Path]:
    """Create DIR/recipient.pub and DIR/identity.key (0600). Refuses if either exists (even as a
    dangling symbolic link): a new recipient.pub without its identity.key would seal later
    backups to a key nobody holds."""
    pub_path, key_path = directory / "recipient.pub", directory / "identity.key"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create key directory {directory}: {exc.strerror}") from None
    for path in (key_path, pub_path):
        if os.path.lexists(path):
            raise _exists(path)
    ident = generate_identity(kem)
    recipient = ident.recipient()
    try:
        _create_key_file(key_path, f"# bvh-ops identity {recipient.key_id}: PRIVATE, needed for restore and deep "
                         f"verify\n{_line(IDENTITY_TAG, kem, ident.private_bytes)}", 0o600)
    except FileExistsError:
        raise _exists(key_path) from None
    except OSError as exc:
        raise ConfigError(f"cannot write {key_path}: {exc.strerror}") from None
    try:
        _create_key_file(pub_path, f"# bvh-ops recipient {recipient.key_id}: public, give it to every backup host\n"
                         + _line(RECIPIENT_TAG, kem, recipient.public_bytes), 0o644)
    except OSError as exc:
        key_path.unlink()  # ours, just made: no identity without its recipient
        if isinstance(exc, FileExistsError):
            raise _exists(pub_path) from None
        raise ConfigError(f"cannot write {pub_path}: {exc.strerror}") from None
    return pub_path, key_path


def _exists(path: Path) -> ConfigError:
    what = "a symbolic link" if path.is_symlink() else "a file"
    return ConfigError(f"{path} already exists ({what}): keys are never overwritten; choose a new directory "
                       "or move the old key pair away")


def _parse(path: Path, tag: str) -> list[tuple[str, bytes]]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}") from None
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] != tag or parts[1] not in KEMS:
            raise ConfigError(f"{path} is not a bvh-ops {tag.split('-')[2]} key file (expected '{tag} <kem> <base64>')")
        try:
            out.append((parts[1], base64.b64decode(parts[2], validate=True)))
        except ValueError:
            raise ConfigError(f"{path}: key is not valid base64") from None
    if not out:
        raise ConfigError(f"{path} holds no key")
    return out


def load_recipients(paths: list[Path]) -> list[Recipient]:
    recipients = [Recipient(kem, raw) for p in paths for kem, raw in _parse(Path(p), RECIPIENT_TAG)]
    for r in recipients:
        try:
            r._hpke_public()
        except Exception:
            raise ConfigError(f"recipient key {r.key_id} is malformed") from None
    return recipients


def load_identities(path: Path) -> list[Identity]:
    """All identities in the file (several lines = several keys, for rotation)."""
    idents = [Identity(kem, raw) for kem, raw in _parse(Path(path), IDENTITY_TAG)]
    for ident in idents:
        try:
            ident.recipient()
        except Exception:
            raise ConfigError(f"identity in {path} is malformed") from None
    return idents


# -- host signing key (manifests) ---------------------------------------------------------


@dataclass(frozen=True)
class HostKey:
    """Ed25519 key of this backup host; signs manifests."""

    private: ed25519.Ed25519PrivateKey = field(repr=False)

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.private.public_key().public_bytes_raw()).decode()

    @property
    def key_id(self) -> str:
        return host_key_id(self.public_b64)

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self.private.sign(data)).decode()


def host_key_id(public_b64: str) -> str:
    return hashlib.sha256(b"bvh-ops-host-v1" + base64.b64decode(public_b64)).hexdigest()[:16]


def verify_signature(public_b64: str, signature_b64: str, data: bytes) -> bool:
    try:
        pub = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
        pub.verify(base64.b64decode(signature_b64), data)
        return True
    except Exception:
        return False


def load_or_create_host_key(state_dir: Path) -> HostKey:
    """The host key at STATE_DIR/host_ed25519.key, created (0600) on first use. Never read or
    written through a symbolic link (a link there could point the signing key anywhere)."""
    path = Path(state_dir) / "host_ed25519.key"
    if not os.path.lexists(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create state_dir {path.parent}: {exc.strerror}: set state_dir "
                              "(BVH_OPS_STATE_DIR) to a writable directory") from None
        key = ed25519.Ed25519PrivateKey.generate()
        try:
            _create_key_file(path, _line(HOST_KEY_TAG, "ed25519", key.private_bytes_raw()), 0o600)
            return HostKey(key)
        except FileExistsError:
            pass  # another process created it first: use theirs
        except OSError as exc:
            raise ConfigError(f"cannot write host key {path}: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"host key {path} is a symbolic link: refusing to follow it; put the key file "
                              "itself there (or remove the link to create a new key)") from None
        raise ConfigError(f"cannot read host key {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd) as fh:
            _tag, _kem, b64 = fh.read().split()
        return HostKey(ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(b64)))
    except Exception:
        raise ConfigError(f"host key {path} is unreadable or malformed: restore it from your key backup") from None
