"""TarScanner (bvh_ops.pg.tarscan) over tars shaped like `pg_basebackup -Ft -D -`'s: ustar members,
PostgreSQL's backup_manifest last, fed in the odd chunk sizes a pipe delivers; what check()
reports for every way the files and the manifest can disagree, and the manifest's own checksum."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import crc32c
import pytest

from bvh_ops.errors import IntegrityError
from bvh_ops.pg.tarscan import TarScanner, _octal_or_base256, parse_backup_manifest

FILES = {
    "PG_VERSION": b"18\n",
    "backup_label": b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
    "global/pg_control": bytes(range(256)) * 32,  # 8 KiB
    "base/1/1259": b"\x00\x01" * 4100,  # not a multiple of 512: padding follows
    "base/1/PG_VERSION": b"18\n",
    "base/5/2619_fsm": b"",  # empty files have a manifest entry too
    "pg_logical/replorigin_checkpoint": b"\x00" * 16,
}


def crc(data: bytes) -> str:
    """A file's CRC32C as backup_manifest writes it (the uint32's bytes in memory order, hex)."""
    return crc32c.crc32c(data).to_bytes(4, "little").hex()


def entry(path: str, data: bytes, **override) -> dict:
    e = {"Path": path, "Size": len(data), "Last-Modified": "2026-11-28 09:00:00 GMT",
         "Checksum-Algorithm": "CRC32C", "Checksum": crc(data)}
    e.update(override)
    return e


def manifest(entries: list[dict], *, checksum: str | None = None) -> bytes:
    """A backup_manifest laid out as PostgreSQL writes it: one file per line, the SHA-256 of
    everything before the "Manifest-Checksum" line on that last line."""
    body = '{ "PostgreSQL-Backup-Manifest-Version": 2,\n"System-Identifier": 7442115069999999999,\n"Files": [\n'
    body += ",\n".join(json.dumps(e) for e in entries)
    body += '\n],\n"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000120" }\n],\n'
    raw = body.encode()
    digest = checksum if checksum is not None else hashlib.sha256(raw).hexdigest()
    return raw + f'"Manifest-Checksum": "{digest}"}}\n'.encode()


def tar(files: dict[str, bytes], manifest_bytes: bytes | None, dirs: tuple[str, ...] = ("base", "base/1", "global")) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            t.addfile(info)
        members = dict(files)
        if manifest_bytes is not None:
            members["backup_manifest"] = manifest_bytes  # pg_basebackup appends it last
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def scan(blob: bytes, chunk: int = 4096) -> TarScanner:
    s = TarScanner()
    for i in range(0, len(blob), chunk):
        s.feed(blob[i:i + chunk])
    return s


@pytest.mark.parametrize("chunk", [1, 7, 100, 511, 512, 513, 4096, 10007, 1 << 20])
def test_a_matching_backup_has_no_problems_whatever_the_chunking(chunk):
    blob = tar(FILES, manifest([entry(p, d) for p, d in FILES.items()]))
    s = scan(blob, chunk)
    assert s.check() == []
    assert s.files == {p: (len(d), crc32c.crc32c(d)) for p, d in FILES.items()}
    assert s.manifest is not None and b'"Manifest-Checksum"' in s.manifest


def test_memoryview_chunks_and_trailing_bytes_after_the_end_blocks():
    blob = tar(FILES, manifest([entry(p, d) for p, d in FILES.items()])) + b"garbage after end-of-archive"
    s = TarScanner()
    view = memoryview(blob)
    for i in range(0, len(blob), 999):
        s.feed(view[i:i + 999])
    assert s.check() == []


def test_crc32c_byte_order_matches_postgresql():
    # The standard CRC-32C check value 0xE3069283, stored least significant byte first.
    assert crc(b"123456789") == "839206e3"
    s = scan(tar({"f": b"123456789"}, manifest([{"Path": "f", "Size": 9, "Checksum-Algorithm": "CRC32C",
                                                  "Checksum": "839206e3"}])))
    assert s.check() == []


def test_names_longer_than_100_bytes_use_the_ustar_prefix():
    long_path = "base/16384/" + "d" * 60 + "/" + "f" * 70
    files = {long_path: b"data"}
    s = scan(tar(files, manifest([entry(long_path, b"data")]), dirs=()), 333)
    assert list(s.files) == [long_path]
    assert s.check() == []


# (description, files in the tar, manifest entries, the problems check() reports)
CASES = [
    ("missing file",
     {"a": b"1"}, [entry("a", b"1"), entry("base/1/1259", b"x")],
     ["base/1/1259: in the manifest but not in the backup"]),
    ("size mismatch",
     {"a": b"12345"}, [entry("a", b"1234")],
     ["a: 5 bytes, manifest says 4"]),
    ("size mismatch is reported alone, not also as a CRC mismatch",
     {"a": b"12345"}, [entry("a", b"1234", Checksum="00000000")],
     ["a: 5 bytes, manifest says 4"]),
    ("CRC mismatch (same size)",
     {"a": b"12345"}, [entry("a", b"12346")],
     ["a: CRC32C differs from the manifest"]),
    ("extra file",
     {"a": b"1", "base/1/99999": b"stray"}, [entry("a", b"1")],
     ["base/1/99999: in the backup but not in the manifest"]),
    ("pg_wal/ files are not in the manifest and not reported",
     {"a": b"1", "pg_wal/000000010000000000000002": b"w" * 600, "pg_wal/archive_status/x.done": b""},
     [entry("a", b"1")], []),
    ("files pg_verifybackup ignores are not reported either",
     {"a": b"1", "postgresql.auto.conf": b"x", "recovery.signal": b"", "standby.signal": b""},
     [entry("a", b"1")], []),
    ("no checksum in the manifest: sizes only",
     {"a": b"12345"}, [{"Path": "a", "Size": 5}], []),
    ("another checksum algorithm: sizes only",
     {"a": b"12345"}, [entry("a", b"12345", **{"Checksum-Algorithm": "SHA256", "Checksum": "ab" * 32})], []),
    ("empty file listed with CRC of nothing",
     {"a": b""}, [entry("a", b"")], []),
    ("several problems, manifest order then the extras",
     {"b": b"22", "c": b"3", "z": b"?"}, [entry("a", b"1"), entry("b", b"2"), entry("c", b"4")],
     ["a: in the manifest but not in the backup", "b: 2 bytes, manifest says 1",
      "c: CRC32C differs from the manifest", "z: in the backup but not in the manifest"]),
]


@pytest.mark.parametrize("files, entries, problems", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_check_reports_each_disagreement(files, entries, problems):
    assert scan(tar(files, manifest(entries), dirs=()), 700).check() == problems


@pytest.mark.parametrize("raw, problem", [
    (None, "the backup has no backup_manifest"),
    (manifest([entry("a", b"1")], checksum="0" * 64), "backup_manifest fails its own checksum"),
    (manifest([entry("a", b"1")]).replace(b'"Size": 1', b'"Size": 2'), "backup_manifest fails its own checksum"),
    (b'{"Files": [], "Manifest-Checksum": "x"', "backup_manifest is not valid JSON"),
])
def test_a_missing_or_broken_manifest_is_one_problem(raw, problem):
    problems = scan(tar({"a": b"1"}, raw, dirs=())).check()
    assert len(problems) == 1 and problems[0].startswith(problem)


def test_parse_backup_manifest_returns_the_document():
    doc = parse_backup_manifest(manifest([entry("a", b"1"), entry("base/1/1259", b"x" * 8192)]))
    assert [f["Path"] for f in doc["Files"]] == ["a", "base/1/1259"]
    assert doc["WAL-Ranges"][0]["Start-LSN"] == "0/2000028"


@pytest.mark.parametrize("raw, message", [
    (b"", "not valid JSON"),
    (b"not json", "not valid JSON"),
    (b'{"Files": []}\n', "fails its own checksum"),  # no Manifest-Checksum at all
    (manifest([entry("a", b"1")]).replace(b'"Path": "a"', b'"Path": "b"'), "fails its own checksum"),
    (manifest([entry("a", b"1")], checksum="0" * 64), "fails its own checksum"),
    (b"\n" + manifest([entry("a", b"1")]), "fails its own checksum"),  # a byte added before the sum's line
])
def test_parse_backup_manifest_refuses(raw, message):
    with pytest.raises(IntegrityError, match=message):
        parse_backup_manifest(raw)


@pytest.mark.parametrize("field_bytes, value", [
    (b"00000000000\0", 0),
    (b"00000000012\0", 10),
    (b"0000644\0", 0o644),
    (b"     1234 \0", 0o1234),  # space-padded, as some writers do
    (b"\0" * 12, 0),
    (bytes([0x80]) + (8 << 30).to_bytes(11, "big"), 8 << 30),  # GNU base-256: files of 8 GiB and more
    (bytes([0x80]) + (123456789012).to_bytes(11, "big"), 123456789012),
])
def test_tar_number_fields(field_bytes, value):
    assert _octal_or_base256(field_bytes) == value


def test_a_size_field_of_8_gib_as_tarfile_writes_it():
    info = tarfile.TarInfo("base/1/huge")
    info.size = 8 << 30
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    assert _octal_or_base256(header[124:136]) == 8 << 30


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 100_003, 3 << 20])
def test_crc32c_combine_gives_the_checksum_of_the_whole(size):
    from bvh_ops.pg.tarscan import crc32c_combine

    data = os.urandom(size)
    for cut in sorted({0, 1, size // 3, max(size - 1, 0), size}):
        a, b = data[:cut], data[cut:]
        assert crc32c_combine(crc32c.crc32c(a), crc32c.crc32c(b), len(b)) == crc32c.crc32c(data)


def test_check_crc32c_reads_large_files_in_pieces_and_names_the_damaged_one(tmp_path, monkeypatch):
    import bvh_ops.physical.restore as restore_mod

    monkeypatch.setattr(restore_mod, "CRC_PIECE", 4096)  # every file below is several pieces
    files = []
    for name, size in (("big", 5 * 4096 + 17), ("exact", 2 * 4096), ("small", 10), ("empty", 0)):
        data = os.urandom(size)
        (tmp_path / name).write_bytes(data)
        files.append((name, size, crc32c.crc32c(data).to_bytes(4, "little").hex()))
    assert restore_mod.check_crc32c(tmp_path, files) == []
    with open(tmp_path / "big", "r+b") as fh:  # one bit in the third piece
        fh.seek(2 * 4096 + 5)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0x80]))
    (tmp_path / "small").write_bytes(b"x" * 11)
    (tmp_path / "exact").unlink()
    problems = restore_mod.check_crc32c(tmp_path, files)
    assert problems[0] == "big: CRC32C differs from the manifest"
    assert problems[1].startswith("exact: ") and problems[2] == "small: 11 bytes, the manifest says 10"
    assert len(problems) == 3
