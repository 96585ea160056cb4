"""Secrets that cross the Salt bus sealed for one reader.

A runner that needs a secret from a hypervisor (a VNC password) makes a one-time X25519 key pair,
passes the public half with its call, and the hypervisor returns the secret sealed to it: the job's
return, which the master's event bus and job cache keep, holds only ciphertext. Sealing: an
ephemeral X25519 exchange, HKDF-SHA256, ChaCha20-Poly1305.
"""

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from saltvirt.errors import InvalidArgument

_INFO = b"salt-virt sealed secret v1"
_RAW = {"encoding": serialization.Encoding.Raw, "format": serialization.PublicFormat.Raw}


def _key(shared, sender, recipient):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=sender + recipient, info=_INFO).derive(shared)


def recipient():
    """``(private key, public key as text)``: keep the first, pass the second to :func:`seal`."""
    private = X25519PrivateKey.generate()
    return private, base64.b64encode(private.public_key().public_bytes(**_RAW)).decode()


def seal(public_text, secret):
    """``secret`` (text) sealed for the holder of ``public_text``'s private key."""
    try:
        peer_raw = base64.b64decode(str(public_text), validate=True)
        peer = X25519PublicKey.from_public_bytes(peer_raw)
    except ValueError as exc:
        raise InvalidArgument(f"seal_to must be a base64 X25519 public key: {exc}") from exc
    ephemeral = X25519PrivateKey.generate()
    sender = ephemeral.public_key().public_bytes(**_RAW)
    nonce = os.urandom(12)
    box = ChaCha20Poly1305(_key(ephemeral.exchange(peer), sender, peer_raw))
    return base64.b64encode(sender + nonce + box.encrypt(nonce, secret.encode(), None)).decode()


def unseal(private, sealed):
    """The text :func:`seal` sealed for ``private``; InvalidArgument if it was not."""
    try:
        raw = base64.b64decode(str(sealed), validate=True)
        sender, nonce, body = raw[:32], raw[32:44], raw[44:]
        mine = private.public_key().public_bytes(**_RAW)
        box = ChaCha20Poly1305(_key(private.exchange(X25519PublicKey.from_public_bytes(sender)), sender, mine))
        return box.decrypt(nonce, body, None).decode()
    except (ValueError, InvalidTag) as exc:
        raise InvalidArgument("the sealed secret was not sealed for this reader or was altered") from exc
