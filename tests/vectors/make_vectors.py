"""Regenerate the stream vectors (run by hand only when the format changes; the tests check the
committed files, so a format change that breaks old backups fails them).

    python tests/vectors/make_vectors.py 3    writes stream-v3.json (envelopes beside the object)
    python tests/vectors/make_vectors.py 2    rewrites stream-v2.json (kept: format-2 objects are read)
"""

import base64
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bvh_ops.keys import HYBRID, X25519, generate_identity  # noqa: E402
from bvh_ops.stream import EncryptingWriter, envelopes_json, seal_data_key  # noqa: E402


class Buf:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


def vector(kem: str, plaintext: bytes, segment_size: int, bind: str, version: int = 2) -> dict:
    ident = generate_identity(kem)
    key = os.urandom(32)
    out = Buf()
    envelopes = seal_data_key(key, [ident.recipient()])
    w = EncryptingWriter(sink=out, data_key=key, envelopes=envelopes, format_version=version,
                         compression_level=3, segment_size=segment_size, bind=bind)
    w.write(plaintext)
    st = w.close()
    extra = {"envelopes": envelopes_json(envelopes)} if version == 3 else {}
    return {**extra,
        "kem": kem,
        "bind": bind,
        "identity_b64": base64.b64encode(ident.private_bytes).decode(),
        "key_id": ident.key_id,
        "data_key_hex": key.hex(),
        "segment_size": segment_size,
        "plaintext_b64": base64.b64encode(plaintext).decode(),
        "plaintext_sha256": st.plaintext_sha256,
        "object_b64": base64.b64encode(bytes(out.data)).decode(),
        "stored_sha256": st.stored_sha256,
    }


if __name__ == "__main__":
    version = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    text = b"".join(b"ticket %d draw %d amount 5.90\n" % (i, i % 7) for i in range(3000))
    noise = bytes((i * 7919) % 251 for i in range(40000))
    vectors = [vector(HYBRID, text, 16384, "backups/20261128T020000Z-logical-0a1b2c/dump.pgc", version),
               vector(X25519, noise, 16384, "wal/00000001/000000010000000000000003", version),
               vector(X25519, b"", 16384, "backups/20261128T020000Z-full-3d4e5f/base.tar.zst", version)]
    # stream-v1.json stays: format 1 (unbound) objects must be refused.
    Path(__file__).with_name(f"stream-v{version}.json").write_text(
        json.dumps({"format": version, "vectors": vectors}, indent=1))
