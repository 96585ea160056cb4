"""What a hypervisor states to the master, signed with its Salt minion key.

Salt authenticates a minion's job returns and its single events, but a minion may also send a
batch of events (the form salt-syndic uses), which the master puts on its bus as sent: tag and
data, ``id`` included. Any minion -- a tenant's VM as well -- can so put a
``salt/job/<jid>/ret/<hypervisor>`` or a libvirt_events event "of" a hypervisor on the bus,
and on ZeroMQ every minion sees every job's jid. What the master acts on from a hypervisor
therefore carries that hypervisor's signature over exactly what it says, checked with the key
the master accepted for it:

``vm-key-of-job``
    a new VM's minion public key and the job whose answer carries it (``virt.init``,
    ``virt.init_status``; :func:`key_statement`): the master accepts it under the VM's id only
    when signed by the hypervisor that has the VM, for the job the master itself published. A
    signature over the key alone could be replayed: whoever owned an earlier VM of the same name
    holds its private key and may have seen its hypervisor sign its public key;
``definition``
    a VM's definition (the engine's events, ``virt.definitions``), which ``virt.evacuate``
    defines and starts on another hypervisor.

A statement names its purpose, the hypervisor and the VM: one signed for one of them is no
statement about another.
"""

import base64
import json
import os

from saltvirt.errors import VirtError

KEY = "vm-key-of-job"
DEFINITION = "definition"
SIGNATURE = "signature"  # the field a signed record carries its signature in


class Unattested(VirtError):
    """A statement without a valid signature of the hypervisor it claims to come from."""


def _message(purpose, host, name, payload):
    return json.dumps([purpose, host, name, payload], sort_keys=True, separators=(",", ":")).encode()


def _crypto():
    # cryptography comes with Salt; imported when used (the runner's start path does not need it).
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    return hashes, serialization, padding


_LOADED = {}  # key_path -> ((mtime_ns, size), key): read and checked once, not per record signed


def _private_key(key_path):
    _hashes, serialization, _padding = _crypto()
    try:
        stat = os.stat(key_path)
        version = (stat.st_mtime_ns, stat.st_size)
        cached = _LOADED.get(key_path)
        if cached is None or cached[0] != version:
            with open(key_path, "rb") as fh:
                cached = _LOADED[key_path] = (version, serialization.load_pem_private_key(fh.read(), password=None))
    except (OSError, ValueError) as exc:
        raise VirtError(f"cannot sign for the master with {key_path}: {exc}") from exc
    return cached[1]


def sign(key_path, purpose, host, name, payload):
    """Signature (base64) of ``payload`` as ``host``'s statement about VM ``name``, made with
    the private key at ``key_path`` (the minion's ``minion.pem``)."""
    hashes, _serialization, padding = _crypto()
    raw = _private_key(key_path).sign(_message(purpose, host, name, payload), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


def signed(key_path, purpose, host, name, record):
    """``record`` (a dict) with its signature added."""
    body = {k: v for k, v in record.items() if k != SIGNATURE}
    return dict(body, **{SIGNATURE: sign(key_path, purpose, host, name, body)})


def key_statement(pub, jid):
    """What a hypervisor signs of a VM's minion key: the key and the id of the job whose answer
    carries it (Salt's ``__pub_jid``; None outside a job, which no master accepts)."""
    return {"minion_pub": str(pub).strip(), "jid": None if jid is None else str(jid)}


def minion_key(opts):
    """The minion's private key (``<pki_dir>/minion.pem``)."""
    return os.path.join(opts["pki_dir"], "minion.pem")


class Verifier:
    """Checks statements against the public keys the master accepted (``<pki_dir>/minions``)."""

    def __init__(self, pki_dir):
        self.pki_dir = pki_dir

    def check(self, purpose, host, name, payload, signature):
        """Raise :class:`Unattested` unless ``signature`` is ``host``'s over ``payload``."""
        hashes, serialization, padding = _crypto()
        if not isinstance(signature, str) or not signature:
            raise Unattested(f"{host}'s {purpose} of {name} is not signed: not from {host}'s salt-virt "
                             f"(a minion other than {host} may have sent it); update salt-virt on {host}")
        path = os.path.join(self.pki_dir, "minions", host)
        try:
            with open(path, "rb") as fh:
                public = serialization.load_pem_public_key(fh.read())
            public.verify(base64.b64decode(signature, validate=True), _message(purpose, host, name, payload),
                          padding.PKCS1v15(), hashes.SHA256())
        except FileNotFoundError:
            raise Unattested(f"cannot check {host}'s {purpose} of {name}: this master holds no accepted key of "
                             f"{host} ({path})") from None
        except Exception as exc:  # InvalidSignature, a bad base64 or key file
            raise Unattested(f"{host}'s {purpose} of {name} does not carry {host}'s signature: refused "
                             f"(another minion may have sent it in {host}'s name)") from exc

    def check_record(self, purpose, host, name, record):
        """:meth:`check` of a record that carries its signature (:func:`signed`); the record
        without it."""
        if not isinstance(record, dict):
            raise Unattested(f"{host}'s {purpose} of {name} is not a record ({type(record).__name__})")
        body = {k: v for k, v in record.items() if k != SIGNATURE}
        self.check(purpose, host, name, body, record.get(SIGNATURE))
        return body
