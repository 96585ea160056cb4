"""Secrets sealed for one reader: the reader opens them, nobody else does."""

import pytest

from saltvirt.errors import InvalidArgument
from saltvirt.pki import sealed


def test_seal_and_unseal():
    private, public = sealed.recipient()
    box = sealed.seal(public, "Pa55word")
    assert "Pa55word" not in box
    assert sealed.unseal(private, box) == "Pa55word"
    assert sealed.seal(public, "Pa55word") != box  # a fresh ephemeral key each time


def test_another_reader_cannot_open_it():
    _private, public = sealed.recipient()
    other, _ = sealed.recipient()
    box = sealed.seal(public, "secret")
    with pytest.raises(InvalidArgument, match="not sealed for this reader"):
        sealed.unseal(other, box)
    tampered = box[:-4] + ("AAAA" if not box.endswith("AAAA") else "BBBB")
    with pytest.raises(InvalidArgument):
        sealed.unseal(_private, tampered)


def test_bad_public_key_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="seal_to must be a base64 X25519 public key"):
        sealed.seal("not-a-key", "x")
