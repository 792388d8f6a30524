"""The encrypted stream format: round trips, and every tampering is detected."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bvh_ops.errors import CryptoError
from bvh_ops.keys import HYBRID, X25519, Identity, generate_identity
from bvh_ops.stream import MAGIC, TAG_LEN, DecryptingReader, EncryptingWriter, seal_data_key

SEG = 4096
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "stream-v2.json"
V1_VECTORS = VECTORS.with_name("stream-v1.json")
KEY = "backups/20261128T020000Z-logical-0a1b2c/dump.pgc"


@pytest.fixture(scope="module")
def ident() -> Identity:
    return generate_identity(HYBRID)


def encrypt(ident: Identity, data: bytes, seg: int = SEG, chunk: int = 1000, bind: str = KEY) -> bytes:
    key = os.urandom(32)
    out = io.BytesIO()
    w = EncryptingWriter(sink=out, data_key=key, envelopes=seal_data_key(key, [ident.recipient()]),
                         segment_size=seg, bind=bind)
    for i in range(0, len(data), chunk):
        w.write(data[i:i + chunk])
    stats = w.close()
    blob = out.getvalue()
    assert stats.stored_size == len(blob)
    assert stats.stored_sha256 == hashlib.sha256(blob).hexdigest()
    assert stats.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    return blob


def decrypt(ident: Identity, blob: bytes, bind: str = KEY) -> bytes:
    return DecryptingReader(io.BytesIO(blob), [ident], bind=bind).read()


def incompressible(n: int) -> bytes:
    return os.urandom(n)


def segments_of(blob: bytes, seg: int = SEG) -> tuple[bytes, list[bytes]]:
    hlen = struct.unpack(">I", blob[len(MAGIC):len(MAGIC) + 4])[0]
    start = len(MAGIC) + 4 + hlen
    body = blob[start:]
    width = seg + TAG_LEN
    return blob[:start], [body[i:i + width] for i in range(0, len(body), width)]


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 50_000])
def test_round_trip_any_size(ident, size):
    data = incompressible(size)
    assert decrypt(ident, encrypt(ident, data)) == data


def test_x25519_suite_round_trip():
    ident = generate_identity(X25519)
    data = b"lottery " * 10_000
    assert decrypt(ident, encrypt(ident, data)) == data


def test_compresses_repetitive_data(ident):
    data = b"ticket,draw,5.90\n" * 100_000
    assert len(encrypt(ident, data)) < len(data) / 20


def test_flipped_byte_is_detected(ident):
    blob = bytearray(encrypt(ident, incompressible(5 * SEG)))
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(CryptoError, match="failed authentication"):
        decrypt(ident, bytes(blob))


def test_truncation_at_segment_boundary_is_detected(ident):
    blob = encrypt(ident, incompressible(5 * SEG))
    header, segs = segments_of(blob)
    assert len(segs) >= 3
    with pytest.raises(CryptoError):
        decrypt(ident, header + b"".join(segs[:-1]))


def test_dropped_segment_is_detected(ident):
    header, segs = segments_of(encrypt(ident, incompressible(5 * SEG)))
    with pytest.raises(CryptoError):
        decrypt(ident, header + b"".join(segs[:1] + segs[2:]))


def test_swapped_segments_are_detected(ident):
    header, segs = segments_of(encrypt(ident, incompressible(5 * SEG)))
    segs[0], segs[1] = segs[1], segs[0]
    with pytest.raises(CryptoError):
        decrypt(ident, header + b"".join(segs))


def test_segment_from_another_object_is_detected(ident):
    h1, s1 = segments_of(encrypt(ident, incompressible(3 * SEG)))
    _h2, s2 = segments_of(encrypt(ident, incompressible(3 * SEG)))
    with pytest.raises(CryptoError):
        decrypt(ident, h1 + s1[0] + s2[1] + b"".join(s1[2:]))


def test_edited_header_is_detected(ident):
    blob = encrypt(ident, b"x" * 10_000)
    edited = blob.replace(b'"compression":"zstd"', b'"compression":"zstd" ', 1)
    edited = edited[:len(MAGIC)] + struct.pack(">I", struct.unpack(">I", blob[8:12])[0] + 1) + edited[12:]
    with pytest.raises(CryptoError):
        decrypt(ident, edited)


def test_wrong_identity_is_a_clear_error(ident):
    blob = encrypt(ident, b"secret draw results")
    with pytest.raises(CryptoError, match="no identity matches"):
        decrypt(generate_identity(HYBRID), blob)


def test_object_read_under_another_key_is_refused(ident):
    """A backup object copied into another backup, or WAL segment 28 stored as 29: the header
    binds each object to its key and is authenticated with every segment."""
    blob = encrypt(ident, b"wallet balances", bind="wal/00000001/00000001000000000000001C")
    with pytest.raises(CryptoError, match="written as wal/00000001/00000001000000000000001C"):
        decrypt(ident, blob, bind="wal/00000001/00000001000000000000001D")
    assert decrypt(ident, blob, bind="wal/00000001/00000001000000000000001C") == b"wallet balances"


def test_rebinding_by_editing_the_header_fails_authentication(ident):
    blob = encrypt(ident, b"x" * 10_000, bind="backups/a/dump.pgc")
    edited = blob.replace(b'"bind":"backups/a/dump.pgc"', b'"bind":"backups/b/dump.pgc"', 1)
    assert edited != blob
    with pytest.raises(CryptoError, match="failed authentication"):
        decrypt(ident, edited, bind="backups/b/dump.pgc")


@pytest.mark.parametrize("vec", json.loads(V1_VECTORS.read_text())["vectors"][:1], ids=["v1"])
def test_unbound_format_1_objects_are_refused(vec):
    ident = Identity(vec["kem"], base64.b64decode(vec["identity_b64"]))
    with pytest.raises(CryptoError, match="format 1"):
        decrypt(ident, base64.b64decode(vec["object_b64"]))


def test_not_our_format():
    with pytest.raises(CryptoError, match="bad magic"):
        decrypt(generate_identity(X25519), b"PGDMP" + b"\0" * 100)


# -- the committed test vectors, read by our reader and by an independent decryptor ---------

def _vectors():
    return json.loads(VECTORS.read_text())["vectors"]


@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: f"{v['kem']}-{len(v['plaintext_b64'])}")
def test_vector_decrypts_with_our_reader(vec):
    ident = Identity(vec["kem"], base64.b64decode(vec["identity_b64"]))
    assert ident.key_id == vec["key_id"]
    blob = base64.b64decode(vec["object_b64"])
    assert hashlib.sha256(blob).hexdigest() == vec["stored_sha256"]
    assert decrypt(ident, blob, bind=vec["bind"]) == base64.b64decode(vec["plaintext_b64"])


@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: f"{v['kem']}-{len(v['plaintext_b64'])}")
def test_vector_decrypts_by_docs_format_alone(vec):
    """An independent decryptor written from docs/FORMAT.md (data key given, not unsealed). The
    whole path from the identity file (HPKE, manifest signature, WAL) is
    tests/integration/test_format_doc.py."""
    blob = base64.b64decode(vec["object_b64"])
    assert blob[:8] == b"BVHOPS\x00\x01"
    hlen = int.from_bytes(blob[8:12], "big")
    header_bytes = blob[12:12 + hlen]
    header = json.loads(header_bytes)
    assert header["v"] == 2 and header["bind"] == vec["bind"]
    aad = hashlib.sha256(blob[:12 + hlen]).digest()
    okm = HKDF(algorithm=hashes.SHA256(), length=39, salt=base64.b64decode(header["salt"]),
               info=b"bvh-ops/v1/stream").derive(bytes.fromhex(vec["data_key_hex"]))
    aead, prefix = AESGCM(okm[:32]), okm[32:]
    width = header["segment_size"] + 16
    body = blob[12 + hlen:]
    segs = [body[i:i + width] for i in range(0, len(body), width)]
    compressed = b"".join(
        aead.decrypt(prefix + i.to_bytes(4, "big") + (b"\x01" if i == len(segs) - 1 else b"\x00"), s, aad)
        for i, s in enumerate(segs))
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed)).read()
    assert hashlib.sha256(plain).hexdigest() == vec["plaintext_sha256"]
