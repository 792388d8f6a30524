"""archive_command finds its spool without importing tomllib when the config file states
``state_dir`` plainly; every other form is left to tomllib, so the answer is always tomllib's."""

from __future__ import annotations

import tomllib

import pytest

from bvh_ops.walcmd import _plain_state_dir

CASES = [
    ('repository = "file:///r"\nstate_dir = "/var/lib/bvh-ops"\n', "/var/lib/bvh-ops"),
    ("state_dir='/a b' # the archiver's\n", "/a b"),
    ('"state_dir" = "/quoted/key"\n', "/quoted/key"),
    ('[s3]\nstate_dir = "/in/a/table"\n', None),  # not top level
    ('state_dir = "/a\\tb"\n', None),  # an escape: tomllib decides
    ('notes = """\nstate_dir = "/in/a/string"\n"""\n', None),  # inside a multi-line string
    ('state_dir = "/a"\nstate_dir = "/b"\n', None),  # invalid TOML: tomllib refuses it
    ('state_dir_old = "/x"\n', None),
    ('# state_dir = "/commented"\n', None),
    ('state_dir = "/x" trailing\n', None),  # invalid TOML
    ("", None),
]


@pytest.mark.parametrize(("text", "plain"), CASES)
def test_plain_reading_agrees_with_tomllib_or_defers_to_it(text, plain):
    assert _plain_state_dir(text.encode()) == plain
    if plain is not None:
        assert tomllib.loads(text)["state_dir"] == plain
