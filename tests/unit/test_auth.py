"""API keys: the keys file, bearer tokens, the embedded stack's own key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from thresher.core import auth
from thresher.core.errors import InvalidRequest, Unauthenticated, Unavailable
from thresher.tools.cli import main
from thresher.tools.client import find_api_key


def test_a_key_is_known_by_its_hash_and_its_name_and_scopes_come_with_it(tmp_path: Path) -> None:
    # Given a keys file with two keys
    alice, ci = auth.generate_key(), auth.generate_key()
    keys_file = tmp_path / "keys"
    lines = ["# name scopes digest\n", auth.keys_file_line("alice", ["submit"], alice)]
    keys_file.write_text("".join([*lines, auth.keys_file_line("ci", ["read", "submit"], ci)]))
    ring = auth.KeyRing(keys_file)

    # Then each key is its caller, and the file holds no key in clear
    assert ring.caller(f"Bearer {alice}") == auth.Caller("alice", frozenset({"submit"}))
    assert ring.caller(f"bearer  {ci} ").scopes == {"read", "submit"}
    assert alice not in keys_file.read_text() and ci not in keys_file.read_text()
    assert auth.KEY_PATTERN.fullmatch(alice)


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "an API key is required"),
        ("", "an API key is required"),
        ("Bearer thr_not-a-key", "the API key is not valid"),
        ("Basic dXNlcjpwYXNz", "malformed Authorization header"),
        ("Bearer", "malformed Authorization header"),
        ("Bearer two words", "malformed Authorization header"),
        ("Bearer k\u00e9y", "malformed Authorization header"),
    ],
)
def test_a_missing_wrong_or_malformed_key_is_unauthenticated(
    tmp_path: Path, authorization: str | None, message: str
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(auth.keys_file_line("alice", ["admin"], auth.generate_key()))
    with pytest.raises(Unauthenticated, match=message):
        auth.KeyRing(keys_file).caller(authorization)


def test_without_a_keys_file_everyone_is_let_in_and_an_empty_one_lets_nobody_in(tmp_path: Path) -> None:
    assert auth.KeyRing(None).caller(None) == auth.ANONYMOUS
    assert auth.ANONYMOUS.has(auth.ADMIN)
    empty = tmp_path / "keys"
    empty.write_text("# no keys yet\n")
    with pytest.raises(Unauthenticated):
        auth.KeyRing(empty).caller(f"Bearer {auth.generate_key()}")


def test_the_keys_file_is_read_again_when_it_changes_and_a_broken_one_lets_nobody_in(tmp_path: Path) -> None:
    # Given a key ring over a file with one key
    first, second = auth.generate_key(), auth.generate_key()
    keys_file = tmp_path / "keys"
    auth.add_key(keys_file, "first", ["read"], first)
    ring = auth.KeyRing(keys_file)
    assert ring.caller(f"Bearer {first}").name == "first"

    # When a key is added, and then the first one is revoked
    auth.add_key(keys_file, "second", ["submit"], second)
    assert ring.caller(f"Bearer {second}").name == "second"
    keys_file.write_text(auth.keys_file_line("second", ["submit"], second))
    with pytest.raises(Unauthenticated):
        ring.caller(f"Bearer {first}")

    # And when the file becomes unreadable, no key works (and the reason is not told to the caller)
    keys_file.write_text("second submit sha256:nothex\n")
    with pytest.raises(Unavailable, match="cannot read its API keys") as raised:
        ring.caller(f"Bearer {second}")
    assert str(keys_file) not in str(raised.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("alice submit", "expected `<name> <scope>"),
        ("alice submit 0123", "expected `<name> <scope>"),
        ("alice root sha256:" + "0" * 64, "each must be one of submit, read, admin"),
        ("al ice", "expected"),
        ("al/ice submit sha256:" + "0" * 64, "name 'al/ice'"),
        ("alice submit sha256:" + "0" * 63, "64 hexadecimal digits"),
    ],
)
def test_a_malformed_keys_file_is_refused_at_start_naming_the_line(tmp_path: Path, line: str, message: str) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# fine\n" + line + "\n")
    with pytest.raises(InvalidRequest, match=f"line 2: .*{message}"):
        auth.KeyRing(keys_file)
    with pytest.raises(FileNotFoundError):
        auth.KeyRing(tmp_path / "missing")


def test_the_embedded_stacks_key_is_private_kept_across_restarts_an_admin_key_and_can_be_replaced(
    tmp_path: Path,
) -> None:
    # When thresher up makes its key, twice (a restart)
    keys_file = auth.ensure_local_key(tmp_path / "data")
    key = auth.read_api_key(tmp_path / "data")
    assert key is not None
    os.chmod(tmp_path / "data" / auth.API_KEY_FILE, 0o644)
    assert auth.ensure_local_key(tmp_path / "data") == keys_file

    # Then the same key is used, readable by its owner only, and listed once, as admin
    assert auth.read_api_key(tmp_path / "data") == key
    for path in (tmp_path / "data" / auth.API_KEY_FILE, keys_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert keys_file.read_text().count("sha256:") == 1
    assert auth.KeyRing(keys_file).caller(f"Bearer {key}") == auth.Caller("local", frozenset({"admin"}))

    # And when its key file is deleted, the next start makes a new key and the old one stops working
    ci = auth.generate_key()
    auth.add_key(keys_file, "ci", ["submit"], ci)
    (tmp_path / "data" / auth.API_KEY_FILE).unlink()
    auth.ensure_local_key(tmp_path / "data")
    ring = auth.KeyRing(keys_file)
    with pytest.raises(Unauthenticated):
        ring.caller(f"Bearer {key}")
    assert ring.caller(f"Bearer {auth.read_api_key(tmp_path / 'data')}").name == "local"
    assert ring.caller(f"Bearer {ci}").name == "ci", "the other keys are kept"


def test_thresher_add_key_prints_a_new_key_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_file = tmp_path / "api_keys"
    assert main(["add-key", "ci", "--scopes", "submit,read", "--keys-file", str(keys_file)]) == 0
    key = capsys.readouterr().out.strip()  # the key alone: scripts take it from stdout
    assert auth.KeyRing(keys_file).caller(auth.authorization(key)) == auth.Caller("ci", frozenset({"submit", "read"}))
    assert key not in keys_file.read_text()
    assert main(["add-key", "ci", "--scopes", "root", "--keys-file", str(keys_file)]) == 2


def test_the_embedded_stacks_key_goes_only_to_a_gateway_on_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("THRESHER_API_KEY", raising=False)
    monkeypatch.setenv("THRESHER_DATA_DIR", str(tmp_path / "data"))
    auth.ensure_local_key(tmp_path / "data")
    key = auth.read_api_key(tmp_path / "data")
    for local in ("http://127.0.0.1:8888", "http://localhost:1", "http://[::1]:8888", "http://127.8.0.3"):
        assert find_api_key(local) == key, local
    for remote in ("https://thresher.example.com", "http://10.0.0.5:8888", "http://localhost.example.com"):
        assert find_api_key(remote) is None, remote
    monkeypatch.setenv("THRESHER_API_KEY", "given-explicitly")
    assert find_api_key("https://thresher.example.com") == "given-explicitly"
