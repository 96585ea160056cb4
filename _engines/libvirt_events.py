"""
libvirt_events engine: libvirt domain events on the Salt event bus.

Enable it on each hypervisor minion (``/etc/salt/minion.d/libvirt_events.conf``), then
``saltutil.sync_all`` and restart the salt-minion (engines start with the minion):

.. code-block:: yaml

    engines:
      - libvirt_events:
          uri: qemu:///system              # default: virt:connection:uri, else qemu:///system
          tag_prefix: salt/engines/libvirt_events
          filters: [lifecycle, reboot, block_job, job_completed, watchdog]   # default: all
          definitions: True                # attach the VM's definition to defined/undefined/
                                           # started/stopped events (for virt.remember)

Each event reaches the master under
``salt/engines/libvirt_events/<uri>/domain/<vm>/<event>`` (``qemu:///system`` ->
``qemu/system``), e.g. ``.../qemu/system/domain/web1/stopped`` with
``{"event": "stopped", "detail": "destroyed", "domain": {"name", "id", "uuid"}, "uri"}``;
``defined``, ``undefined``, ``started`` and ``stopped`` also carry ``definition``: the VM's
persistent XML (without console passwords), state and autostart, and ``seen`` (the
hypervisor's time), which the reactor ``salt://virt/reactor/remember.sls`` hands to
``salt-run virt.remember`` so that the master keeps its copy without asking the hypervisor.
When libvirtd restarts the engine reconnects and fires ``.../connection/lost`` then
``.../connection/open``. See ``docs/operations.rst`` for the event names and a reactor.
"""

import logging

import salt.utils.event

try:
    from saltvirt import connection as virtconn
    from saltvirt import events as vevents
    from saltvirt.domain import vmops
    from saltvirt.pki import attest

    HAS_SALTVIRT = True
except ImportError as _exc:
    HAS_SALTVIRT = False
    IMPORT_ERROR = str(_exc)

log = logging.getLogger(__name__)

__virtualname__ = "libvirt_events"


def __virtual__():
    if not HAS_SALTVIRT:
        return False, f"libvirt_events: salt-virt library missing ({IMPORT_ERROR}); run saltutil.sync_all"
    if virtconn.libvirt is None:
        return False, "libvirt_events: libvirt-python is not installed"
    return __virtualname__


def start(uri=None, tag_prefix="salt/engines/libvirt_events", filters=None, retry=1, retry_max=30,
          definitions=True):
    """
    Watch libvirt at ``uri`` and fire its domain events until the minion stops.
    """
    conf = __salt__["config.get"]("virt:connection", {}) if "config.get" in __salt__ else {}
    conf = conf if isinstance(conf, dict) else {}
    uri = uri or conf.get("uri") or virtconn.DEFAULT_URI

    if __opts__.get("__role") == "master":
        bus = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False)

        def fire(tag, data):
            bus.fire_event(data, tag)
    else:

        def fire(tag, data):
            __salt__["event.send"](tag, data)

    def connect(target):
        auth = conf.get("auth") if isinstance(conf.get("auth"), dict) else {}
        return virtconn.connect(target, auth.get("username"), auth.get("password"))

    def describe(conn, name):
        return vmops.definitions(conn, name).get(name)

    def sign(name, record):
        # The master keeps a definition only with this hypervisor's signature (saltvirt.pki.attest).
        return attest.signed(attest.minion_key(__opts__), attest.DEFINITION, __opts__["id"], name, record)

    watcher = vevents.Watcher(uri, fire, prefix=tag_prefix, filters=filters, connect=connect,
                              retry=retry, retry_max=retry_max, describe=describe if definitions else None,
                              sign=sign if __opts__.get("__role") != "master" else None)
    watcher.run()
