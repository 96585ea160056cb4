"""
Pillar ``libvirt``: each minion's libvirt and QEMU TLS keys, signed by a CA on the master.

The CA is created on first use in ``<pki_dir>/libvirt`` (``/etc/salt/pki/master/libvirt``) and
never leaves the master. Each minion receives its own server and client key and certificate and the
CA certificate, under the pillar key ``libvirt``; the ``virt.keys`` state writes them to
``/etc/pki``. The logic lives in :mod:`saltvirt.pki`.

Master configuration:

.. code-block:: yaml

    ext_pillar:
      - libvirt: {}

    virt:
      hypervisors: 'hypervisor*'    # who gets certificates (minion ids, never grains)

    # optional; see docs/pki.rst for every option
    libvirt_pki:
      organization: Example Corp
      expiration_days: 365
      extra_ips:
        'hv1*': [192.0.2.10]

Certificates go to the hypervisors only: the minions of ``virt:hypervisors`` (or of
``libvirt_pki:minions`` if set); without either, to nobody. On-demand requests
(``salt-call pillar.ext '{libvirt: _}'``, possible because ``libvirt`` is in Salt's default
``on_demand_ext_pillar``) are answered with nothing unless ``libvirt_pki:on_demand: True``:
every certificate then comes through the configured ``ext_pillar`` entry.

Options belong in ``libvirt_pki``. Options written in the ``ext_pillar`` entry itself are refused
while ``libvirt`` is in ``on_demand_ext_pillar``: Salt passes an on-demand request's arguments the
same way, so a minion could otherwise choose the CA directory or the names in its certificate.
"""

import logging
import os
import sys

import salt.pillar
from salt.exceptions import CommandExecutionError, SaltInvocationError

import saltvirt.pki
from saltvirt.errors import InvalidArgument, VirtError
from saltvirt.trust import Hypervisors

log = logging.getLogger(__name__)

__virtualname__ = "libvirt"

#: Master configuration key holding the options of :data:`saltvirt.pki.PILLAR_OPTIONS`.
CONFIG_KEY = "libvirt_pki"


def __virtual__():
    return __virtualname__


def _options(kwargs):
    if kwargs and __virtualname__ in (__opts__.get("on_demand_ext_pillar") or []):
        raise SaltInvocationError(
            f"libvirt ext_pillar: options in the ext_pillar entry ({', '.join(sorted(kwargs))}) "
            f"are refused while '{__virtualname__}' is in on_demand_ext_pillar, since a minion "
            f"could pass its own; put them under '{CONFIG_KEY}' in the master config instead"
        )
    options = dict(__opts__.get(CONFIG_KEY) or {})
    options.update(kwargs)
    if not options.get("ca_dir"):
        options["ca_dir"] = os.path.join(__opts__["pki_dir"], "libvirt")
    if options.get("minions") is None:
        hypervisors = (__opts__.get("virt") or {}).get("hypervisors")
        options["minions"] = Hypervisors.from_config(hypervisors) if hypervisors else None
    return options


def _on_demand():
    """Whether the pillar being compiled answers a minion's on-demand ``libvirt`` request.

    Salt hands an ext_pillar no sign of it, but the compiling :class:`salt.pillar.Pillar` keeps
    the request in its ``ext`` attribute (``None`` for a normal compile): look it up the stack.
    The functional tests compile both kinds through Salt's real Pillar, so a Salt release that
    changes this fails them rather than letting requests through.
    """
    frame = sys._getframe(1)  # pylint: disable=protected-access
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, salt.pillar.Pillar):
            ext = getattr(owner, "ext", None)
            return isinstance(ext, dict) and __virtualname__ in ext
        frame = frame.f_back
    return False


def ext_pillar(minion_id, pillar, command=None, **kwargs):  # pylint: disable=unused-argument
    """
    Return ``{"libvirt": {...}}`` with ``minion_id``'s TLS material, issuing it when needed.

    minion_id
        The minion whose pillar is compiled. Salt only ever calls an ext_pillar with the
        requesting minion's own (authenticated) id, so a minion never receives another's keys.

    pillar
        The pillar compiled so far; not used (it may carry a minion's ``pillar_override``).

    command
        The value of an on-demand request or of a non-mapping ``ext_pillar`` entry
        (``- libvirt: _``); ignored.

    kwargs
        Options from a mapping ``ext_pillar`` entry; see the module documentation.
    """
    try:
        options = _options(kwargs)
    except InvalidArgument as exc:
        raise SaltInvocationError(f"libvirt ext_pillar: {exc}") from exc
    if _on_demand() and not options.get("on_demand"):
        log.warning(
            "libvirt ext_pillar: refused %s's on-demand request (pillar.ext); certificates come "
            "through the configured ext_pillar entry (libvirt_pki:on_demand: True allows it)",
            minion_id,
        )
        return {}
    grains = __opts__.get("grains") or {}
    try:
        return saltvirt.pki.libvirt_pillar(minion_id, grains, options)
    except InvalidArgument as exc:
        raise SaltInvocationError(f"libvirt ext_pillar for {minion_id}: {exc}") from exc
    except VirtError as exc:
        raise CommandExecutionError(f"libvirt ext_pillar for {minion_id}: {exc}") from exc
