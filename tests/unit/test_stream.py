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
from bvh_ops.stream import (
    MAGIC,
    TAG_LEN,
    DecryptingReader,
    EncryptingWriter,
    envelopes_from_json,
    seal_data_key,
)

SEG = 4096
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "stream-v2.json"
V3_VECTORS = VECTORS.with_name("stream-v3.json")
V1_VECTORS = VECTORS.with_name("stream-v1.json")
KEY = "backups/20261128T020000Z-logical-0a1b2c/dump.pgc"


@pytest.fixture(scope="module")
def ident() -> Identity:
    return generate_identity(HYBRID)


# Format 3 keeps the envelopes beside the object (manifest, index entry): here, by salt.
_ENVELOPES: dict[bytes, list] = {}


def _salt(blob: bytes) -> bytes:
    hlen = struct.unpack(">I", blob[len(MAGIC):len(MAGIC) + 4])[0]
    try:
        return json.loads(blob[12:12 + hlen])["salt"].encode()
    except Exception:
        return b""


def encrypt(ident: Identity, data: bytes, seg: int = SEG, chunk: int = 1000, bind: str = KEY,
            version: int = 3) -> bytes:
    key = os.urandom(32)
    out = io.BytesIO()
    envelopes = seal_data_key(key, [ident.recipient()])
    w = EncryptingWriter(sink=out, data_key=key, envelopes=envelopes, format_version=version,
                         segment_size=seg, bind=bind)
    for i in range(0, len(data), chunk):
        w.write(data[i:i + chunk])
    stats = w.close()
    blob = out.getvalue()
    assert stats.stored_size == len(blob)
    assert stats.stored_sha256 == hashlib.sha256(blob).hexdigest()
    assert stats.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    _ENVELOPES[_salt(blob)] = envelopes
    return blob


def decrypt(ident: Identity, blob: bytes, bind: str = KEY) -> bytes:
    return DecryptingReader(io.BytesIO(blob), [ident], bind=bind, envelopes=_ENVELOPES.get(_salt(blob))).read()


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


@pytest.mark.parametrize("version", [2, 3])
def test_both_formats_round_trip(ident, version):
    data = b"draw 7 results " * 1000
    blob = encrypt(ident, data, version=version)
    assert (b'"envelopes":"external"' in blob) == (version == 3)
    assert decrypt(ident, blob) == data


def test_format_3_header_holds_no_envelope(ident):
    """Re-sealing the data key must not touch the object: its header names the data key (dk) and
    nothing sealed to a recipient."""
    blob = encrypt(ident, b"x" * 100)
    hlen = struct.unpack(">I", blob[8:12])[0]
    header = json.loads(blob[12:12 + hlen])
    assert header["v"] == 3 and header["envelopes"] == "external" and len(header["dk"]) == 32
    assert ident.key_id.encode() not in blob


def test_format_3_without_its_envelopes_is_a_clear_error(ident):
    blob = encrypt(ident, b"x" * 100)
    with pytest.raises(CryptoError, match="keeps its data-key envelopes outside"):
        DecryptingReader(io.BytesIO(blob), [ident], bind=KEY)


def test_format_3_refuses_an_envelope_of_another_data_key(ident):
    """Envelopes live outside the authenticated header: one swapped in from another object
    (which the identity opens fine) is refused by the header's data-key id before decrypting."""
    blob = encrypt(ident, b"x" * 100)
    other = seal_data_key(os.urandom(32), [ident.recipient()])
    with pytest.raises(CryptoError, match="opens another data key"):
        DecryptingReader(io.BytesIO(blob), [ident], bind=KEY, envelopes=other)


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


def _all_vectors():
    return _vectors() + json.loads(V3_VECTORS.read_text())["vectors"]


def _vid(v):
    return f"v{3 if 'envelopes' in v else 2}-{v['kem']}-{len(v['plaintext_b64'])}"


@pytest.mark.parametrize("vec", _all_vectors(), ids=_vid)
def test_vector_decrypts_with_our_reader(vec):
    ident = Identity(vec["kem"], base64.b64decode(vec["identity_b64"]))
    assert ident.key_id == vec["key_id"]
    blob = base64.b64decode(vec["object_b64"])
    assert hashlib.sha256(blob).hexdigest() == vec["stored_sha256"]
    plain = DecryptingReader(io.BytesIO(blob), [ident], bind=vec["bind"],
                             envelopes=envelopes_from_json(vec.get("envelopes"))).read()
    assert plain == base64.b64decode(vec["plaintext_b64"])


@pytest.mark.parametrize("vec", _all_vectors(), ids=_vid)
def test_vector_decrypts_by_docs_format_alone(vec):
    """An independent decryptor written from docs/FORMAT.md (data key given, not unsealed). The
    whole path from the identity file (HPKE, manifest signature, WAL) is
    tests/integration/test_format_doc.py."""
    blob = base64.b64decode(vec["object_b64"])
    assert blob[:8] == b"BVHOPS\x00\x01"
    hlen = int.from_bytes(blob[8:12], "big")
    header_bytes = blob[12:12 + hlen]
    header = json.loads(header_bytes)
    assert header["v"] in (2, 3) and header["bind"] == vec["bind"]
    if header["v"] == 3:
        data_key = bytes.fromhex(vec["data_key_hex"])
        dk = HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=b"bvh-ops/v3/data-key-id").derive(data_key)
        assert header["envelopes"] == "external" and header["dk"] == dk.hex()
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
