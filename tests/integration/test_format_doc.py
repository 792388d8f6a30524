"""docs/FORMAT.md is enough to get data back without bvh-ops.

``DocReader`` below is written from that page alone: it imports nothing from bvh_ops (only
the standard library, ``cryptography`` and ``zstandard``). Given a repository directory, the
identity file and the trusted host keys it checks a manifest's signature over the canonical
JSON (serialised by hand, from the page's rules), unseals the data key with HPKE, decrypts and
decompresses the objects and checks them against the manifest or the WAL index. The fixtures use
bvh-ops only to *create* what it reads: a real logical backup of the sample database and WAL
files pushed by ``wal_push``.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import io
import json
import re
import struct
from pathlib import Path

import pytest
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DOC = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "stream-v2.json"
DK_INFO = b"bvh-ops/v3/data-key-id"


# =====================================================================================
# The independent reader: every constant and rule here is taken from docs/FORMAT.md.
# =====================================================================================

class FormatError(Exception):
    """The object, manifest or key file does not satisfy the page's rules."""


MAGIC = b"BVHOPS\x00\x01"
STREAM_INFO = b"bvh-ops/v1/stream"
HPKE_INFO = b"bvh-ops/v1/data-key"
HYBRID, X25519 = "mlkem768-x25519", "x25519"
KEM_IDS = {HYBRID: 0x647A, X25519: 0x0020}
XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")


def parse_key_file(path: Path, tag: str) -> list[tuple[str, bytes]]:
    """recipient.pub / identity.key: skip blank and '#' lines; '<tag> <kem> <base64>' per key."""
    keys = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or fields[0] != tag or fields[1] not in KEM_IDS:
            raise FormatError(f"{path}: not a '{tag} <kem> <base64>' line")
        keys.append((fields[1], base64.b64decode(fields[2], validate=True)))
    if not keys:
        raise FormatError(f"{path} holds no key")
    return keys


def parse_host_key_file(path: Path) -> bytes:
    """host_ed25519.key: exactly 'bvh-ops-host-ed25519-v1 ed25519 <base64 seed>'; returns the raw public key."""
    tag, kem, b64 = path.read_text().split()
    if (tag, kem) != ("bvh-ops-host-ed25519-v1", "ed25519"):
        raise FormatError("not a host key file")
    seed = base64.b64decode(b64, validate=True)
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def public_of(kem: str, private: bytes) -> bytes:
    if kem == HYBRID:
        if len(private) != 96:
            raise FormatError("a hybrid identity is 96 bytes")
        d_z, sk_x = private[:64], private[64:]
        pk_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(d_z).public_key().public_bytes_raw()
        return pk_m + x25519.X25519PrivateKey.from_private_bytes(sk_x).public_key().public_bytes_raw()
    return x25519.X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def key_id(kem: str, public: bytes) -> str:
    return hashlib.sha256(b"bvh-ops-kid-v1" + kem.encode("ascii") + public).hexdigest()[:16]


def host_key_id(public_raw: bytes) -> str:
    return hashlib.sha256(b"bvh-ops-host-v1" + public_raw).hexdigest()[:16]


_SHORT = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}


def _canonical_string(s: str) -> str:
    out = ['"']
    for ch in s:
        o = ord(ch)
        if o in _SHORT:
            out.append(_SHORT[o])
        elif 0x20 <= o <= 0x7E:
            out.append(ch)
        elif o > 0xFFFF:
            o -= 0x10000
            out.append(f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}")
        else:
            out.append(f"\\u{o:04x}")
    out.append('"')
    return "".join(out)


def canonical(value) -> bytes:
    """Canonical JSON as the page defines it, written out rule by rule (not via json.dumps)."""
    def enc(v) -> str:
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return _canonical_string(v)
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        if isinstance(v, dict):
            # Python's str ordering is Unicode code point order.
            return "{" + ",".join(_canonical_string(k) + ":" + enc(v[k]) for k in sorted(v)) + "}"
        raise FormatError(f"no canonical form for {type(v).__name__} in a manifest")
    return enc(value).encode("ascii")


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def open_envelope_by_hand(kem: str, private: bytes, sealed: bytes) -> bytes:
    """The page's X-Wing / DHKEM decapsulation and RFC 9180 key schedule, written out."""
    def labeled_extract(suite_id, salt, label, ikm):
        return _hkdf_extract(salt, b"HPKE-v1" + suite_id + label + ikm)

    def labeled_expand(suite_id, prk, label, info, length):
        return _hkdf_expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info, length)

    if kem == HYBRID:
        enc, ct = sealed[:1120], sealed[1120:]
        ct_m, ct_x = enc[:1088], enc[1088:]
        sk_x = x25519.X25519PrivateKey.from_private_bytes(private[64:])
        ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64]).decapsulate(ct_m)
        ss_x = sk_x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        pk_x = sk_x.public_key().public_bytes_raw()
        shared = hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()
    else:
        enc, ct = sealed[:32], sealed[32:]
        sk_r = x25519.X25519PrivateKey.from_private_bytes(private)
        dh = sk_r.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
        kem_suite = b"KEM" + struct.pack(">H", 0x0020)
        eae_prk = labeled_extract(kem_suite, b"", b"eae_prk", dh)
        shared = labeled_expand(kem_suite, eae_prk, b"shared_secret", enc + sk_r.public_key().public_bytes_raw(), 32)
    suite_id = b"HPKE" + struct.pack(">HHH", KEM_IDS[kem], 0x0001, 0x0002)
    context = (b"\x00" + labeled_extract(suite_id, b"", b"psk_id_hash", b"")
               + labeled_extract(suite_id, b"", b"info_hash", HPKE_INFO))
    secret = labeled_extract(suite_id, shared, b"secret", b"")
    key = labeled_expand(suite_id, secret, b"key", context, 32)
    base_nonce = labeled_expand(suite_id, secret, b"base_nonce", context, 12)
    return AESGCM(key).decrypt(base_nonce, ct, b"")


def open_envelope(kem: str, private: bytes, sealed: bytes) -> bytes:
    """The page's HPKE suite through cryptography's hpke API."""
    if kem == HYBRID:
        suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
        key = hpke.MLKEM768X25519PrivateKey(mlkem.MLKEM768PrivateKey.from_seed_bytes(private[:64]),
                                            x25519.X25519PrivateKey.from_private_bytes(private[64:]))
    else:
        suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
        key = x25519.X25519PrivateKey.from_private_bytes(private)
    return suite.decrypt(sealed, key, info=HPKE_INFO)


class DocReader:
    """Reads a bvh-ops repository directory (file://) by docs/FORMAT.md alone."""

    def __init__(self, root: Path, identities: list[tuple[str, bytes]], trusted_host_keys: list[bytes]) -> None:
        self.root = root
        self.identities = {key_id(kem, public_of(kem, priv)): (kem, priv) for kem, priv in identities}
        self.trusted = {host_key_id(pub): pub for pub in trusted_host_keys}
        self.last_header: dict | None = None
        self.last_data_key: bytes | None = None
        self.last_envelopes: list[dict] = []
        self.default_envelopes: list[dict] | None = None

    # -- manifests ------------------------------------------------------------------------

    def manifest(self, backup_id: str) -> dict:
        raw = (self.root / "backups" / backup_id / "manifest.json").read_bytes()
        doc = json.loads(raw)
        if doc.get("format") != "bvh-ops-manifest-v1":
            raise FormatError("unknown manifest format")
        body, sig = doc["manifest"], doc["signature"]
        if body["backup_id"] != backup_id:
            raise FormatError(f"manifest under {backup_id} names {body['backup_id']}")
        if sig["alg"] != "ed25519":
            raise FormatError("unknown signature algorithm")
        trusted = self.trusted.get(sig["key_id"])
        if trusted is None or host_key_id(trusted) != sig["key_id"]:
            raise FormatError("signed by an untrusted host key")
        ed25519.Ed25519PublicKey.from_public_bytes(trusted).verify(base64.b64decode(sig["value"]), canonical(body))
        return body

    # -- encrypted objects ----------------------------------------------------------------

    def decrypt(self, key: str, envelopes: list[dict] | None = None) -> bytes:
        return self.decrypt_blob((self.root / key).read_bytes(), key, envelopes)

    def decrypt_blob(self, blob: bytes, key: str, envelopes: list[dict] | None = None) -> bytes:
        """``envelopes``: a format-3 object's, from its manifest entry or index entry."""
        if blob[:8] != MAGIC:
            raise FormatError("bad magic")
        (hlen,) = struct.unpack(">I", blob[8:12])
        header_bytes = blob[12:12 + hlen]
        if len(header_bytes) != hlen:
            raise FormatError("truncated header")
        header = json.loads(header_bytes)
        if header["v"] not in (2, 3) or header["aead"] != "AES-256-GCM-STREAM" or header["compression"] != "zstd":
            raise FormatError(f"unsupported object format {header['v']}")
        if header["bind"] != key:
            raise FormatError(f"object at {key} is bound to {header['bind']}")
        self.last_header = header
        if header["v"] == 2:
            envelopes = header["envelopes"]
        else:
            if header["envelopes"] != "external":
                raise FormatError("a format-3 header says envelopes 'external'")
            envelopes = envelopes if envelopes is not None else self.default_envelopes
            if not envelopes:
                raise FormatError("format 3: the envelopes are in the manifest or index entry")
        self.last_envelopes = envelopes
        data_key = None
        for env in envelopes:
            if env["kid"] in self.identities:
                kem, private = self.identities[env["kid"]]
                if env["kem"] != kem:
                    raise FormatError("envelope kem differs from the identity's")
                data_key = open_envelope(kem, private, base64.b64decode(env["sealed"]))
                break
        if data_key is None or len(data_key) != 32:
            raise FormatError("no identity opens this object")
        if header["v"] == 3 and _hkdf_expand(_hkdf_extract(b"", data_key), DK_INFO, 16).hex() != header["dk"]:
            raise FormatError("the envelope opens another data key than the header's dk")
        self.last_data_key = data_key

        okm = _hkdf_expand(_hkdf_extract(base64.b64decode(header["salt"]), data_key), STREAM_INFO, 39)
        aead, prefix = AESGCM(okm[:32]), okm[32:]
        aad = hashlib.sha256(blob[:12 + hlen]).digest()
        width = header["segment_size"] + 16
        body = blob[12 + hlen:]
        pieces = [body[i:i + width] for i in range(0, len(body), width)]
        if not pieces or len(pieces[-1]) < 16:
            raise FormatError("truncated object")
        compressed = b"".join(
            aead.decrypt(prefix + struct.pack(">I", i) + (b"\x01" if i == len(pieces) - 1 else b"\x00"), piece, aad)
            for i, piece in enumerate(pieces))
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed), read_across_frames=True)
        out = bytearray()
        while chunk := reader.read(1 << 20):
            out += chunk
        return bytes(out)

    # -- WAL ----------------------------------------------------------------------------

    def wal(self, name: str, system_identifier: str | None = None) -> tuple[dict, bytes]:
        key = f"wal/{name[:8]}/{name}"
        entry = json.loads((self.root / (key + ".json")).read_bytes())
        if entry["name"] != name:
            raise FormatError("index entry of another WAL file")
        if "object" in entry:  # the page: an alternate key of its own, else refuse
            if not re.fullmatch(re.escape(key) + "@[0-9a-f]{16}", entry["object"]):
                raise FormatError("index entry names an object that is not its own")
            key = entry["object"]
        blob = (self.root / key).read_bytes()
        if (len(blob), hashlib.sha256(blob).hexdigest()) != (entry["stored_size"], entry["stored_sha256"]):
            raise FormatError("stored bytes differ from the index entry")
        plain = self.decrypt_blob(blob, key, entry.get("envelopes"))
        expected = entry.get("plaintext_blake3") or entry["plaintext_sha256"]
        if (len(plain), plain_digest(entry, plain)) != (entry["plaintext_size"], expected):
            raise FormatError("plaintext differs from the index entry")
        problem = segment_header_problem(name, plain[:40], system_identifier)
        if problem:
            raise FormatError(problem)
        return entry, plain


def segment_header_problem(name: str, head: bytes, system_identifier: str | None) -> str | None:
    m = re.fullmatch(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?", name)
    if m is None:
        return None
    if len(head) < 40:
        return "no long page header"
    _magic, info, _tli, pageaddr, _rem = struct.unpack_from("<HHIQI", head, 0)
    sysid, seg_size, _blcksz = struct.unpack_from("<QII", head, 24)
    if not info & 0x0002 or seg_size == 0 or seg_size & (seg_size - 1):
        return "no long page header"
    segno = int(m.group(2), 16) * (2**32 // seg_size) + int(m.group(3), 16)
    if pageaddr != segno * seg_size:
        return "holds another position's WAL"
    if system_identifier is not None and str(sysid) != str(system_identifier):
        return "another cluster's WAL"
    return None


# =====================================================================================
# Tests. Fixtures may use bvh_ops to *make* repositories; the reader above never does.
# =====================================================================================

def _doc_blocks(heading: str) -> list[list[str]]:
    """The code blocks of one section of FORMAT.md, as lists of lines."""
    text = DOC.read_text()
    section = text[text.index("\n" + heading + "\n") + len(heading) + 2:]
    following = re.search(r"^#{1,3} ", section, re.M)
    if following:
        section = section[:following.start()]
    return [block.splitlines() for block in re.findall(r"```[a-z]*\n(.*?)```", section, re.S)]


def plain_digest(obj: dict, plain: bytes) -> str:
    """The page, objects[]: BLAKE3 of the plaintext where plaintext_blake3 is set, else sha256."""
    from blake3 import blake3

    return blake3(plain).hexdigest() if obj.get("plaintext_blake3") else hashlib.sha256(plain).hexdigest()


def _documented_names(lines: list[str]) -> set[str]:
    return {line.split()[0] for line in lines if line and not line[0].isspace()}


def _reader_for(repo: Path, settings, *, host_key: bool = True) -> DocReader:
    identities = parse_key_file(Path(settings.identity), "bvh-ops-identity-v1")
    trusted = [parse_host_key_file(Path(settings.state_dir) / "host_ed25519.key")] if host_key else []
    return DocReader(repo, identities, trusted)


def test_logical_backup_opens_by_the_page_alone(sample_db, make_settings, repo_dir):
    from bvh_ops.logical.backup import run_logical_backup

    settings = make_settings(sample_db, f"file://{repo_dir}")
    backup_id = run_logical_backup(settings).manifest.backup_id
    reader = _reader_for(repo_dir, settings)

    m = reader.manifest(backup_id)
    # Every field and extra key the backup wrote is on the page, and nothing on it is missing.
    blocks = _doc_blocks("### Manifest fields")
    assert set(m) == _documented_names(blocks[0])
    assert set(m["objects"][0]) == _documented_names(blocks[1])
    assert set(m["tables"][0]) == _documented_names(blocks[2])
    assert _documented_names(blocks[3]) == {"class"}          # every kind, optional: absent for a regular backup
    assert set(m["extra"]) == _documented_names(blocks[4])
    assert set(m["extra"]["schema"]) == {"tables", "constraints", "indexes", "sequences"}
    assert m["dump_format"] == "custom" and m["kind"] == "logical" and m["parent_id"] is None

    (obj,) = m["objects"]
    assert obj["name"] == "dump.pgcustom"
    key = f"backups/{backup_id}/{obj['name']}"
    stored = (repo_dir / key).read_bytes()
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (obj["stored_size"], obj["stored_sha256"])
    plain = reader.decrypt(key, obj["envelopes"])
    assert reader.last_header["v"] == 3 and reader.last_header["envelopes"] == "external"
    assert obj["plaintext_sha256"] == ""  # a new backup's dump: BLAKE3, as the page says
    assert (len(plain), plain_digest(obj, plain)) == (obj["plaintext_size"], obj["plaintext_blake3"])
    assert plain[:5] == b"PGDMP"
    assert reader.last_header["bind"] == key
    assert len(stored) > 3 * (reader.last_header["segment_size"] + 16)  # several segments
    assert sorted(e["kid"] for e in reader.last_envelopes) == sorted(obj["key_ids"]) == sorted(m["key_ids"])

    # The page's written-out X-Wing + RFC 9180 key schedule opens the same envelope.
    (env,) = reader.last_envelopes
    kem, private = reader.identities[env["kid"]]
    assert kem == HYBRID and len(private) == 96
    assert open_envelope_by_hand(kem, private, base64.b64decode(env["sealed"])) == reader.last_data_key
    assert len(base64.b64decode(env["sealed"])) == 1168

    # The same object under another key, and a manifest in another backup's directory, are refused.
    other = f"backups/{backup_id[:-6]}ffffff/dump.pgcustom"
    with pytest.raises(FormatError, match="bound to"):
        reader.decrypt_blob(stored, other)
    moved = repo_dir / "backups" / "20000101T000000Z-logical-000000"
    moved.mkdir()
    (moved / "manifest.json").write_bytes((repo_dir / "backups" / backup_id / "manifest.json").read_bytes())
    with pytest.raises(FormatError, match="names"):
        reader.manifest(moved.name)
    # An edited manifest fails its signature.
    raw = json.loads((repo_dir / "backups" / backup_id / "manifest.json").read_bytes())
    raw["manifest"]["tables"][0]["rows"] += 1
    (repo_dir / "backups" / backup_id / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(InvalidSignature):
        reader.manifest(backup_id)


def _segment(segno: int, sysid: int, seg_size: int = 16 << 20) -> bytes:
    header = struct.pack("<HHIQI4xQII", 0xD118, 0x0002, 1, segno * seg_size, 0, sysid, seg_size, 8192)
    noise = hashlib.shake_256(b"wal %d" % segno).digest(300_000)  # incompressible: several segments
    return header + noise + bytes(seg_size - len(header) - len(noise))


@pytest.mark.parametrize("digest", ["sha256", "blake3"])
def test_wal_files_open_by_the_page_alone(make_settings, repo_dir, tmp_path, digest):
    from bvh_ops.wal.store import wal_push

    settings = make_settings("postgresql://unused@localhost/unused", f"file://{repo_dir}", wal_digest=digest)
    sysid = 7_412_345_678_901_234_567
    seg_name, hist_name = "00000001000000000000002A", "00000002.history"
    (tmp_path / seg_name).write_bytes(_segment(0x2A, sysid))
    (tmp_path / hist_name).write_text("1\t0/2A000060\tno recovery target specified\n")
    wal_push(settings, str(tmp_path / seg_name))
    wal_push(settings, str(tmp_path / hist_name))
    reader = _reader_for(repo_dir, settings, host_key=False)  # WAL has no manifest: no host key involved

    entry, plain = reader.wal(seg_name, str(sysid))
    assert plain == (tmp_path / seg_name).read_bytes()
    assert reader.last_header["bind"] == f"wal/00000001/{seg_name}"
    assert entry["system_identifier"] == str(sysid)
    (block,) = _doc_blocks("### WAL index entry")
    unused = {"plaintext_blake3", "object"} if digest == "sha256" else {"object"}
    assert set(entry) == _documented_names(block) - {"history"} - unused
    assert bool(entry.get("plaintext_blake3")) == (digest == "blake3") != bool(entry["plaintext_sha256"])
    seg_key = reader.last_data_key

    entry, plain = reader.wal(hist_name)
    assert reader.last_header["bind"] == f"wal/00000002/{hist_name}"
    assert entry["history"] == plain.decode()
    assert set(entry) == _documented_names(block) - {"system_identifier"} - unused
    assert reader.last_data_key != seg_key  # every WAL file has its own data key

    # The page's header check: another cluster, or the segment stored under another name.
    with pytest.raises(FormatError, match="another cluster"):
        reader.wal(seg_name, "1")
    blob = (repo_dir / "wal" / "00000001" / seg_name).read_bytes()
    with pytest.raises(FormatError, match="bound to"):
        reader.decrypt_blob(blob, "wal/00000001/00000001000000000000002B")
    head = (tmp_path / seg_name).read_bytes()[:40]
    assert segment_header_problem("00000001000000000000002B", head, None) == "holds another position's WAL"

    # A file whose plain key was taken (the leftover of an upload that never committed): its
    # entry names its alternate object, which the page's reader opens.
    from bvh_ops.wal.store import wal_upload

    alt_name = "00000001000000000000002C"
    (tmp_path / alt_name).write_bytes(_segment(0x2C, sysid))
    wal_upload(settings, str(tmp_path / alt_name))
    wal_push(settings, str(tmp_path / alt_name))
    entry, plain = reader.wal(alt_name, str(sysid))
    assert plain == (tmp_path / alt_name).read_bytes()
    assert reader.last_header["bind"] == entry["object"] != f"wal/00000001/{alt_name}"
    assert set(entry) == _documented_names(block) - {"history"} - (unused - {"object"})


def _encrypt(plaintext: bytes, segment_size: int, bind: str, tmp_path: Path) -> tuple[bytes, DocReader]:
    """bvh-ops writes an object (fixture side); returns it and a DocReader holding its identity."""
    import os

    from bvh_ops.keys import load_recipients, write_keypair
    from bvh_ops.stream import EncryptingWriter, envelopes_json, seal_data_key

    pub, key = write_keypair(tmp_path / "k")
    data_key = os.urandom(32)
    out = io.BytesIO()
    envelopes = seal_data_key(data_key, load_recipients([pub]))
    w = EncryptingWriter(sink=out, data_key=data_key, segment_size=segment_size, bind=bind)
    w.write(plaintext)
    w.close()
    reader = DocReader(tmp_path, parse_key_file(key, "bvh-ops-identity-v1"), [])
    reader.default_envelopes = envelopes_json(envelopes)  # what a manifest or index entry would hold
    return out.getvalue(), reader


def _body_len(blob: bytes) -> int:
    return len(blob) - 12 - struct.unpack(">I", blob[8:12])[0]


def test_the_wal_recipe_reads_the_object_its_entry_names():
    """The page's step-by-step recipe for a WAL file (what an operator follows without bvh-ops)
    must send the reader to the object the entry names, bound to that key: following the plain
    key alone, a file stored under an alternate key opens another upload's object, or none."""
    text = DOC.read_text()
    recipe = text[text.index("A WAL file: read the index entry"):]
    recipe = " ".join(recipe[:recipe.index("\n\n")].split())
    assert "`object`" in recipe and "@<16 lowercase hex>" in recipe, recipe
    assert "`bind` = that object's key" in recipe, recipe


def test_empty_plaintext_is_one_segment_holding_a_zstd_frame(tmp_path):
    blob, reader = _encrypt(b"", 4096, "backups/x/dump.pgcustom", tmp_path)
    assert _body_len(blob) == 9 + 16
    assert reader.decrypt_blob(blob, "backups/x/dump.pgcustom") == b""


def test_exact_multiple_of_the_segment_size_has_no_empty_final_segment(tmp_path):
    n = 5000
    while True:  # incompressible data whose zstd stream has an even length
        data = hashlib.shake_256(b"%d" % n).digest(n)
        c = zstandard.ZstdCompressor(level=3).compressobj()
        length = len(c.compress(data) + c.flush())
        if length % 2 == 0:
            break
        n += 1
    seg = length // 2
    blob, reader = _encrypt(data, seg, "wal/00000001/000000010000000000000001", tmp_path)
    assert _body_len(blob) == 2 * (seg + 16)
    assert reader.decrypt_blob(blob, "wal/00000001/000000010000000000000001") == data


def test_concatenated_zstd_frames_are_read_across():
    frames = zstandard.ZstdCompressor().compress(b"one ") + zstandard.ZstdCompressor().compress(b"two")
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frames), read_across_frames=True)
    assert reader.read(100) + reader.read(100) == b"one two"


def test_canonical_json_rules_are_pythons_json_dumps():
    tricky = {"b": "\x7f\x00\x1f/\"\\ é😀\t\n\r\b\f", "a": [1, -2, True, None, 10**20, {}, []],
              "\uff01": 1, "\U0001f600": 2, "Z": "ünï"}
    assert canonical(tricky) == json.dumps(tricky, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    out = canonical(tricky)
    assert out.index(b'"\\uff01":') < out.index(b'"\\ud83d\\ude00":')  # code points, not UTF-16 units


def _vectors():
    return [*json.loads(VECTORS.read_text())["vectors"],
            *json.loads(VECTORS.with_name("stream-v3.json").read_text())["vectors"]]


@pytest.mark.parametrize("vec", _vectors(),
                         ids=lambda v: f"v{3 if 'envelopes' in v else 2}-{v['kem']}-{len(v['plaintext_b64'])}")
def test_committed_vectors_open_by_the_page_alone(vec, tmp_path):
    private = base64.b64decode(vec["identity_b64"])
    reader = DocReader(tmp_path, [(vec["kem"], private)], [])
    assert key_id(vec["kem"], public_of(vec["kem"], private)) == vec["key_id"]
    blob = base64.b64decode(vec["object_b64"])
    assert hashlib.sha256(blob).hexdigest() == vec["stored_sha256"]
    assert reader.decrypt_blob(blob, vec["bind"], vec.get("envelopes")) == base64.b64decode(vec["plaintext_b64"])
    assert reader.last_data_key.hex() == vec["data_key_hex"]
    (env,) = reader.last_envelopes
    assert open_envelope_by_hand(vec["kem"], private, base64.b64decode(env["sealed"])).hex() == vec["data_key_hex"]


def test_the_reader_imports_nothing_from_bvh_ops():
    source = Path(__file__).read_text()
    tree = ast.parse(source)
    tests_start = source[:source.index("# Tests.")].count("\n") + 1
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno < tests_start:
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any(n.split(".")[0] in ("bvh_ops", "tests") for n in names), ast.unparse(node)


def test_a_rotated_backup_and_wal_open_by_the_page_alone(fresh_db, make_settings, repo_dir, tmp_path, monkeypatch):
    """After `keys rotate` (a format-2 backup rewritten to `<name>.f3`, a WAL file rewrapped), the
    page's rules alone open both with the new identity: stored_name, envelopes beside the object,
    manifest_version."""
    import functools

    import psycopg

    import bvh_ops.repository.repo as repo_mod
    from bvh_ops.keys import load_recipients, write_keypair
    from bvh_ops.logical.backup import run_logical_backup
    from bvh_ops.rotation.run import rotate
    from bvh_ops.stream import EncryptingWriter
    from bvh_ops.wal.store import wal_push

    dsn = fresh_db("_fmt3")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    settings = make_settings(dsn, f"file://{repo_dir}")
    monkeypatch.setattr(repo_mod, "EncryptingWriter", functools.partial(EncryptingWriter, format_version=2))
    backup_id = run_logical_backup(settings).manifest.backup_id
    monkeypatch.undo()
    seg_name = "00000001000000000000002C"
    (tmp_path / seg_name).write_bytes(_segment(0x2C, 7))
    wal_push(settings, str(tmp_path / seg_name))
    new_pub, new_key = write_keypair(tmp_path / "new")
    old_id = load_recipients(settings.recipients)[0].key_id
    report = rotate(settings.model_copy(update={"recipients": [new_pub]}), add=[], remove=[old_id])
    assert report.ok and report.rewritten == {"backup": 1} and report.rewrapped == {"wal": 1}

    reader = DocReader(repo_dir, parse_key_file(new_key, "bvh-ops-identity-v1"),
                       [parse_host_key_file(Path(settings.state_dir) / "host_ed25519.key")])
    m = reader.manifest(backup_id)
    assert m["manifest_version"] == 2 and m["rotated_at"]
    (obj,) = m["objects"]
    assert obj["stored_name"] == "dump.pgcustom.f3"
    plain = reader.decrypt(f"backups/{backup_id}/{obj['stored_name']}", obj["envelopes"])
    assert plain_digest(obj, plain) == (obj["plaintext_blake3"] or obj["plaintext_sha256"]) and plain[:5] == b"PGDMP"
    assert not (repo_dir / "backups" / backup_id / "dump.pgcustom").exists()
    entry, plain = reader.wal(seg_name, "7")
    assert entry["key_ids"] == [load_recipients([new_pub])[0].key_id]
    old_reader = DocReader(repo_dir, parse_key_file(Path(settings.identity), "bvh-ops-identity-v1"), [])
    with pytest.raises(FormatError, match="no identity"):
        old_reader.wal(seg_name, "7")
