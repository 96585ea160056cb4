"""TLS material for libvirt and QEMU: a CA on the master and certificates for each minion.

The master keeps one CA (``cakey.pem`` + ``cacert.pem`` in ``ca_dir``) and, for every minion that
asked, a server and a client certificate under ``ca_dir/issued/<minion_id>/``. Issued material is
reused until it is missing, close to expiry, no longer matches what is asked for (names, IP
addresses, subject) or was signed by another CA; only then is a new key and certificate made.

:func:`libvirt_pillar` turns this into the pillar the ``virt.keys`` state writes to ``/etc/pki``.
Everything here runs on the master only; the CA key never leaves ``ca_dir``.

Key type: RSA 3072 by default (``key_type="ec"`` gives ECDSA P-256). Both are accepted by the GnuTLS
that libvirt 9.0 and QEMU 7.2 link against. Leaf certificates carry a critical key usage of
``digitalSignature`` + ``keyEncipherment``, which libvirt's and QEMU's own certificate checks
require whatever the key type.

The package, by concern:

* :mod:`.names` -- minion ids, DNS names, IP addresses, distinguished names (validation);
* :mod:`.files` -- the CA directory's files (private directories, atomic writes);
* :mod:`.certs` -- keys and certificates (pure cryptography);
* :mod:`.ca` -- :class:`CertificateAuthority`: the CA and the certificates it issues;
* :mod:`.pillar` -- :func:`libvirt_pillar` and :func:`operator_pki`;
* :mod:`.tlsfiles` -- the hypervisor's side: the files the ``virt.keys`` state writes;
* :mod:`.sealed` -- secrets sealed for one minion.
"""

from saltvirt.pki.ca import (
    ALLOWED_CLIENT_DN,
    CA_CERT_FILE,
    CA_KEY_FILE,
    DEFAULT_CA_COMMON_NAME,
    DEFAULT_CA_EXPIRATION_DAYS,
    DEFAULT_EXPIRATION_DAYS,
    DEFAULT_KEY_TYPE,
    DEFAULT_RENEW_DAYS,
    DEFAULT_RSA_KEY_SIZE,
    ISSUED_DIR,
    KINDS,
    LOCK_FILE,
    UNITS,
    CertificateAuthority,
)
from saltvirt.pki.names import build_name, normalize_dns_name, normalize_ip, validate_minion_id
from saltvirt.pki.pillar import (
    DEFAULT_OPERATOR_NAME,
    OPERATOR_DIR,
    PILLAR_KEYS,
    PILLAR_OPTIONS,
    libvirt_pillar,
    operator_pki,
    pillar_config,
    server_names,
)

__all__ = [
    "ALLOWED_CLIENT_DN", "CA_CERT_FILE", "CA_KEY_FILE", "DEFAULT_CA_COMMON_NAME", "DEFAULT_CA_EXPIRATION_DAYS",
    "DEFAULT_EXPIRATION_DAYS", "DEFAULT_KEY_TYPE", "DEFAULT_OPERATOR_NAME", "DEFAULT_RENEW_DAYS",
    "DEFAULT_RSA_KEY_SIZE", "ISSUED_DIR", "KINDS", "LOCK_FILE", "OPERATOR_DIR", "PILLAR_KEYS", "PILLAR_OPTIONS",
    "UNITS", "CertificateAuthority", "build_name", "libvirt_pillar", "normalize_dns_name", "normalize_ip",
    "operator_pki", "pillar_config", "server_names", "validate_minion_id",
]
