"""vmtests/mirror.py: the rig takes the host's own Debian mirror from its
apt sources (one-line and deb822), never a third-party repository or a
-security suite, and says how to name one when there is none."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "vmtests"))
import mirror  # noqa: E402

LOCAL = "http://apt.example.test/debian"


def _etc(tmp_path, listing="", parts=()):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(listing)
    for name, text in parts:
        (etc / "sources.list.d" / name).write_text(text)
    return etc


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv("KHO_VMTEST_MIRROR", raising=False)


def test_deb822_after_third_party_and_security(tmp_path):
    etc = _etc(tmp_path, "", [
        ("a-vendor.list", "deb [arch=amd64] https://vendor.test/apt "
                          "cloud-sdk-bookworm main\n"),
        ("debian.sources",
         "Types: deb\nURIs: http://security.example.test/debian-security\n"
         "Suites: bookworm-security\nComponents: main\n\n"
         "Types: deb deb-src\n"
         f"URIs: {LOCAL}/\nSuites: bookworm-updates bookworm\n"
         "Components: main contrib\n"
         "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"),
        ("vendor.sources", "Types: deb\nURIs: https://node.test/x\n"
                           "Suites: nodistro\nComponents: main\n"),
    ])
    assert mirror.host_mirror(etc, "bookworm") == LOCAL


def test_one_line_with_options_and_comments(tmp_path):
    etc = _etc(tmp_path, "# deb http://old.test/debian bookworm main\n"
               "deb-src http://src.test/debian bookworm main\n"
               "deb http://x.test/debian bookworm contrib\n"
               f"deb [signed-by=/k.gpg arch=amd64] {LOCAL} bookworm main "
               "non-free  # the LAN mirror\n")
    assert mirror.host_mirror(etc, "bookworm") == LOCAL


def test_disabled_stanza_and_other_release_are_not_taken(tmp_path):
    etc = _etc(tmp_path, "", [
        ("debian.sources",
         "Types: deb\nURIs: http://off.test/debian\nSuites: bookworm\n"
         "Components: main\nEnabled: no\n\n"
         "Types: deb\nURIs: http://trixie.test/debian\nSuites: trixie\n"
         "Components: main\n")])
    assert mirror.host_mirror(etc, "bookworm") is None


def test_none_found_says_how_to_name_one(tmp_path):
    etc = _etc(tmp_path, "deb https://vendor.test/apt nodistro main\n")
    with pytest.raises(RuntimeError, match="no Debian mirror .* set "
                       "KHO_VMTEST_MIRROR"):
        mirror.require_mirror(etc)


def test_override_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("KHO_VMTEST_MIRROR", "http://proxy.test:3142/debian/")
    etc = _etc(tmp_path, f"deb {LOCAL} bookworm main\n")
    assert mirror.host_mirror(etc, "bookworm") == \
        "http://proxy.test:3142/debian"


def test_continuation_lines(tmp_path):
    etc = _etc(tmp_path, "", [("d.sources",
                               "Types: deb\nURIs:\n "
                               f"{LOCAL}\nSuites: bookworm\n"
                               "Components: main\n")])
    assert mirror.host_mirror(etc, "bookworm") == LOCAL


def test_no_registry_host_written_in_the_rig():
    """The rig names no mirror of its own (the host's is taken)."""
    rig = Path(mirror.__file__).parent
    for p in list(rig.glob("*.py")) + [rig / "run"]:
        assert ".debian.org" not in p.read_text(), p
