"""File sets, pure parts: configuration validation, manifest path rules, diff comparison and
the gc planner (table-driven, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.config import load_settings
from bvh_ops.errors import ConfigError, IntegrityError
from bvh_ops.files.diff import compare
from bvh_ops.files.gc import plan_gc
from bvh_ops.files.layout import Chunk, Entry, check_entry_path, check_manifest_paths, path_bytes, stored_path
from bvh_ops.storage.base import ObjectInfo


def _settings(tmp_path, monkeypatch, body: str):
    cfg = tmp_path / "bvh-ops.toml"
    cfg.write_text(body)
    monkeypatch.setenv("BVH_OPS_CONFIG", str(cfg))
    return load_settings()


def test_file_sets_load_from_toml(tmp_path, monkeypatch):
    s = _settings(tmp_path, monkeypatch, """
[[file_sets]]
name = "nginx"
class = "system"
paths = ["/etc/nginx", "/etc/ssl/certs/*.pem"]
exclude = ["*.bak"]
commands = [{name = "ruleset", argv = ["nft", "list", "ruleset"]}]
""")
    fs = s.file_set("nginx")
    assert fs.class_ == "system" and fs.commands[0].argv == ["nft", "list", "ruleset"]


@pytest.mark.parametrize("body, field, words", [
    ('name = "a"\nclass = "other"\npaths = ["/etc"]', "file_sets", "class 'other'"),
    ('name = "a"\nclass = "system"\npaths = ["etc/nginx"]', "file_sets", "absolute"),
    ('name = "a"\nclass = "system"', "file_sets", "give paths or commands"),
    ('name = "a b"\nclass = "system"\npaths = ["/etc"]', "file_sets.0.name", "pattern"),
    ('name = "a"\nclass = "system"\npaths = ["/etc"]\ncommands = [{name = "x", argv = []}]',
     "file_sets.0.commands.0.argv", "at least 1"),
])
def test_bad_file_sets_fail_at_load_naming_the_field(tmp_path, monkeypatch, body, field, words):
    with pytest.raises(ConfigError) as exc:
        _settings(tmp_path, monkeypatch, f"[[file_sets]]\n{body}\n")
    assert f"'{field}" in str(exc.value) and words in str(exc.value)


def test_duplicate_set_names_are_refused(tmp_path, monkeypatch):
    one = '[[file_sets]]\nname = "a"\nclass = "system"\npaths = ["/etc"]\n'
    with pytest.raises(ConfigError, match="used twice"):
        _settings(tmp_path, monkeypatch, one + one)


@pytest.mark.parametrize("raw", [b"/etc/x", b"caf\xe9", b"new\nline", b"a/b\xff/c"])
def test_stored_paths_round_trip_bytes(raw):
    assert path_bytes(stored_path(raw)) == raw.lstrip(b"/")


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/abs", "", "a//b", "./a", "a/.", "a\x00b"])
def test_bad_entry_paths_are_refused(path):
    with pytest.raises(IntegrityError, match="refusing"):
        check_entry_path(path)


def _e(path, type_="file", **kw):
    return Entry(path, type_, kw.pop("mode", 0o644), kw.pop("uid", 0), 0, kw.pop("mtime_ns", 1), **kw)


def test_entries_below_a_symlink_entry_are_refused():
    with pytest.raises(IntegrityError, match="below the symlink"):
        check_manifest_paths([_e("a", "symlink", target="/"), _e("a/b")])
    check_manifest_paths([_e("a", "symlink", target="/"), _e("ab/c")])   # a sibling is fine


@pytest.mark.parametrize("a, b, what", [
    (_e("x", chunks=(Chunk("aa", 1, 9),), size=1), _e("x", chunks=(Chunk("bb", 1, 9),), size=1), ["content"]),
    (_e("x"), _e("x", mode=0o600), ["mode"]),
    (_e("x"), _e("x", uid=5), ["owner"]),
    (_e("x"), _e("x", mtime_ns=99), []),
    (_e("x", "symlink", target="a"), _e("x", "symlink", target="b"), ["target"]),
    (_e("x"), _e("x", "dir"), ["type"]),
])
def test_compare(a, b, what):
    assert compare(a, b) == what


def test_plan_gc_deletes_only_old_unreferenced_content():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    old, new = now - timedelta(hours=1), now + timedelta(seconds=1)
    content = [ObjectInfo("files/content/aa/aa1", 1, old), ObjectInfo("files/content/bb/bb1", 1, old),
               ObjectInfo("files/content/cc/cc1", 1, new), ObjectInfo("files/content/dd/.tmp-dd1.x", 1, old)]
    assert plan_gc(content, {"aa1"}, now) == ["files/content/bb/bb1"]


def test_plan_gc_keeps_a_referenced_pack_with_its_index_and_drops_a_dead_one_index_first():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    old = now - timedelta(hours=1)
    live, dead = "a" * 32, "b" * 32
    content = [ObjectInfo(f"files/packs/aa/{live}", 1, old), ObjectInfo(f"files/packs/aa/{live}.idx", 1, old),
               ObjectInfo(f"files/packs/bb/{dead}", 1, old), ObjectInfo(f"files/packs/bb/{dead}.idx", 1, old),
               ObjectInfo("files/content/cc/cc1", 1, old)]
    assert plan_gc(content, {f"pack:{live}", "cc1"}, now) == [f"files/packs/bb/{dead}.idx", f"files/packs/bb/{dead}"]


@pytest.mark.parametrize("doc, chunk", [
    (["ab", 5, 90], Chunk("ab", 5, 90)),                       # v1, or a chunk of its own
    (["ab", 5, 0, "p" * 32, 4096], Chunk("ab", 5, 0, "p" * 32, 4096)),
])
def test_chunk_references_of_both_formats_round_trip(doc, chunk):
    assert Chunk.from_json(doc) == chunk and Chunk.from_json(chunk.to_json()) == chunk
    assert chunk.ref() == ("ab" if chunk.pack is None else "pack:" + "p" * 32)


def _outcome(name="app", partial=False, problems=(), verify=("OK",), error=None):
    from bvh_ops.files.outcome import set_checks

    if error:
        return {"set": name, "error": error}
    result = {"set": name, "files": 3, "partial": partial, "problems": list(problems)}
    return {"set": name, "checks": set_checks(result, [{"object": f"o{i}", "status": s, "detail": ""}
                                                      for i, s in enumerate(verify)])}


@pytest.mark.parametrize("outcome, status, severity", [
    (_outcome(), "ok", None),
    (_outcome(partial=True, problems=["/etc/x: Permission denied"]), "partial", "warning"),
    (_outcome(verify=("OK", "MISSING")), "failed", "critical"),
    (_outcome(verify=()), "failed", "critical"),                 # nothing verified is not a pass
    (_outcome(error="ConcurrencyError: gc running"), "failed", "critical"),
    (_outcome(partial=True, verify=("SIZE_MISMATCH",)), "failed", "critical"),
])
def test_a_sets_status_and_its_finding(outcome, status, severity):
    from bvh_ops.files.outcome import set_findings, set_status

    assert set_status(outcome) == status
    found = set_findings([outcome])
    assert [str(f.severity) for f in found] == ([severity] if severity else [])
    if found:
        assert found[0].key == "snapshot:app" and "app" in found[0].title


def test_summary_line_names_the_sets_that_are_not_ok():
    from bvh_ops.files.outcome import summary_line

    outs = [_outcome("a"), _outcome("b", partial=True, problems=["x"]), _outcome("c", error="boom"), _outcome("d")]
    assert summary_line(outs) == "file sets: 2 ok, 1 partial (b), 1 failed (c)"
