"""Hypervisor minion keys for unit tests of what the master accepts only signed (saltvirt.pki.attest)."""

import functools
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from saltvirt.pki import attest


@functools.cache
def _pair(host):
    # One RSA key per host name for the whole session (making one takes ~0.1 s).
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


class Keys:
    """Minion keys of ``hosts`` in ``root``: each private key as its minion holds it, each public
    key accepted in the master's ``<pki_dir>/minions`` (``pki_dir``)."""

    def __init__(self, root, *hosts):
        self.root = str(root)
        self.pki_dir = os.path.join(self.root, "master-pki")
        os.makedirs(os.path.join(self.pki_dir, "minions"), exist_ok=True)
        for host in hosts:
            self.add(host)

    def add(self, host, accepted=True):
        private, public = _pair(host)
        os.makedirs(os.path.join(self.root, host), exist_ok=True)
        with open(self.private(host), "wb") as fh:
            fh.write(private)
        if accepted:
            with open(os.path.join(self.pki_dir, "minions", host), "wb") as fh:
                fh.write(public)

    def private(self, host):
        return os.path.join(self.root, host, "minion.pem")

    def definition(self, host, name, record, signer=None):
        """``record`` signed by ``signer`` (default: ``host``) as ``host``'s definition of ``name``."""
        return attest.signed(self.private(signer or host), attest.DEFINITION, host, name, record)

    def key_signature(self, host, name, pub, jid, signer=None):
        """``signer``'s (default: ``host``'s) signature over ``pub`` as VM ``name``'s key, answering job ``jid``."""
        return attest.sign(self.private(signer or host), attest.KEY, host, name, attest.key_statement(pub, jid))
