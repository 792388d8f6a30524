"""Check a pg_basebackup tar stream against PostgreSQL's own backup_manifest while it streams.

The tar that `pg_basebackup -D - -Ft` writes ends with the server's ``backup_manifest``
(every file's path, size and CRC32C, and its own SHA-256). ``TarScanner`` is fed the same
chunks that go to the repository: it walks the ustar headers, computes each regular file's
CRC32C on the fly, keeps the manifest member (names and checksums, no table data) and at the
end compares the two: the checks pg_verifybackup makes of the files, with no local copy.
Memory: one checksum per file, plus the manifest.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field

import crc32c

from bvh_ops.errors import IntegrityError

BLOCK = 512
MANIFEST_NAME = "backup_manifest"
# Files pg_verifybackup does not expect in the manifest (src/bin/pg_verifybackup).
_IGNORED = ("backup_manifest", "postgresql.auto.conf", "recovery.signal", "standby.signal")


def _octal_or_base256(field_bytes: bytes) -> int:
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        value = field_bytes[0] & 0x7F
        for b in field_bytes[1:]:
            value = (value << 8) | b
        return value
    text = field_bytes.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


@dataclass
class TarScanner:
    files: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size, crc32c)
    manifest: bytes | None = None
    _header: bytearray = field(default_factory=bytearray)
    _name: str = ""
    _remaining: int = 0  # file bytes left in the current member
    _padding: int = 0  # padding bytes left after it
    _crc: int = 0
    _size: int = 0
    _is_file: bool = False
    _capture: bytearray | None = None
    _ended: bool = False
    # TarGuard: check every header (checksum, safe type and name) before its member is used,
    # and skip the per-file checksums.
    guard: bool = False
    checksums: bool = True
    members: int = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self._ended:
            if self._remaining:
                take = min(self._remaining, len(view))
                part = view[:take]
                if self._is_file and self.checksums:
                    self._crc = crc32c.crc32c(part, self._crc)
                    if self._capture is not None:
                        self._capture += part
                self._remaining -= take
                view = view[take:]
                if not self._remaining:
                    self._finish_member()
                continue
            if self._padding:
                take = min(self._padding, len(view))
                self._padding -= take
                view = view[take:]
                continue
            need = BLOCK - len(self._header)
            self._header += view[:need]
            view = view[need:]
            if len(self._header) == BLOCK:
                self._start_member(bytes(self._header))
                self._header.clear()

    def _start_member(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self._ended = True  # end-of-archive blocks
            return
        if self.guard:
            self._check_header(header)
        name = header[0:100].split(b"\0", 1)[0].decode(errors="replace")
        prefix = header[345:500].split(b"\0", 1)[0].decode(errors="replace") if header[257:262] == b"ustar" else ""
        self._name = f"{prefix}/{name}" if prefix else name
        size = _octal_or_base256(header[124:136])
        typeflag = header[156:157]
        self.members += 1
        self._is_file = typeflag in (b"0", b"\0")
        self._crc = 0
        self._size = size
        self._capture = bytearray() if self._is_file and self._name == MANIFEST_NAME else None
        self._remaining = size
        self._padding = (-size) % BLOCK
        if size == 0:
            self._finish_member()

    def _check_header(self, header: bytes) -> None:
        stored = _octal_or_base256(header[148:156])
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise IntegrityError(f"tar header {self.members + 1} fails its checksum")
        try:
            name = header[0:100].split(b"\0", 1)[0].decode()
            prefix = header[345:500].split(b"\0", 1)[0].decode() if header[257:262] == b"ustar" else ""
        except UnicodeDecodeError:
            raise IntegrityError(f"tar member {self.members + 1} has a name that is not UTF-8") from None
        name = f"{prefix}/{name}" if prefix else name
        problem = unsafe_member(name.removesuffix("/") or name, header[156:157])
        if problem:
            raise IntegrityError(f"refusing to extract: {problem}")

    def _finish_member(self) -> None:
        if not self.checksums:
            return
        if self._is_file:
            if self._capture is not None:
                self.manifest = bytes(self._capture)
                self._capture = None
            else:
                self.files[self._name] = (self._size, self._crc)

    def check(self) -> list[str]:
        """Problems found (empty = every file matches the server's manifest)."""
        if self.manifest is None:
            return ["the backup has no backup_manifest"]
        try:
            doc = parse_backup_manifest(self.manifest)
        except IntegrityError as exc:
            return [str(exc)]
        problems = []
        listed = set()
        for f in doc["Files"]:
            path = f["Path"]
            listed.add(path)
            got = self.files.get(path)
            if got is None:
                problems.append(f"{path}: in the manifest but not in the backup")
                continue
            if got[0] != f["Size"]:
                problems.append(f"{path}: {got[0]} bytes, manifest says {f['Size']}")
            elif f.get("Checksum-Algorithm") == "CRC32C" and got[1].to_bytes(4, "little").hex() != f["Checksum"]:
                problems.append(f"{path}: CRC32C differs from the manifest")
        for path in self.files:
            if path not in listed and not path.startswith("pg_wal/") and path not in _IGNORED:
                problems.append(f"{path}: in the backup but not in the manifest")
        return problems


_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _gf2_times(mat: list[int], vec: int) -> int:
    total, i = 0, 0
    while vec:
        if vec & 1:
            total ^= mat[i]
        vec >>= 1
        i += 1
    return total


@functools.lru_cache(maxsize=16)
def _zeros_operator(length: int) -> tuple[int, ...]:
    """The GF(2) operator (32 columns) that appends ``length`` zero bytes to a CRC32C register."""
    op = [_CRC32C_POLY] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):  # squared thrice: one zero byte
        op = [_gf2_times(op, v) for v in op]
    result = [1 << n for n in range(32)]  # identity
    while length:
        if length & 1:
            result = [_gf2_times(op, v) for v in result]
        length >>= 1
        if length:
            op = [_gf2_times(op, v) for v in op]
    return tuple(result)


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of A + B from CRC32C(A), CRC32C(B) and len(B) (zlib's crc32_combine, for the
    Castagnoli polynomial): the checksums of a file's pieces, computed apart, give the file's."""
    if len2 <= 0:
        return crc1
    if crc1 == 0:  # a linear operator maps 0 to 0 (A empty: nothing to compute)
        return crc2
    return _gf2_times(_zeros_operator(len2), crc1) ^ crc2


def parse_backup_manifest(raw: bytes) -> dict:
    """Parse a backup_manifest and check its own SHA-256 (over everything before the
    ``"Manifest-Checksum"`` line)."""
    marker = raw.rfind(b'"Manifest-Checksum"')
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise IntegrityError(f"backup_manifest is not valid JSON: {exc}") from None
    if marker < 0 or hashlib.sha256(raw[:marker]).hexdigest() != doc.get("Manifest-Checksum"):
        raise IntegrityError("backup_manifest fails its own checksum")
    return doc


# Member types a physical backup may hold: regular files and directories. pg_basebackup writes
# nothing else for a cluster without tablespaces; links are refused because a link member (or a
# file written through one) can reach outside the restore directory.
_SAFE_TYPES = {b"0": "file", b"\0": "file", b"5": "directory"}
_TYPE_NAMES = {b"1": "hard link", b"2": "symbolic link", b"3": "character device", b"4": "block device",
               b"6": "FIFO", b"L": "GNU long name", b"K": "GNU long link", b"x": "pax header",
               b"g": "pax global header"}


def unsafe_member(name: str, typeflag: bytes) -> str | None:
    """Why a tar member must not be extracted into a restore directory (None = safe)."""
    if typeflag not in _SAFE_TYPES:
        kind = _TYPE_NAMES.get(typeflag, f"type {typeflag!r}")
        return f"{name!r} is a {kind}: backups hold only files and directories (tablespaces are not supported)"
    if not name or "\0" in name or "\\" in name:
        return f"{name!r} is not a plain relative path"
    if name.startswith("/") or any(part == ".." for part in name.split("/")):
        return f"{name!r} leaves the restore directory"
    return None


def TarGuard() -> TarScanner:  # noqa: N802 - reads as the class it stands for
    """A scanner that walks a tar stream's headers as it is fed and raises IntegrityError at the
    first member that is not a plain file or directory under the destination, before that
    member is passed on to the extractor (feed a chunk here first, then write it); no checksums."""
    return TarScanner(guard=True, checksums=False)
