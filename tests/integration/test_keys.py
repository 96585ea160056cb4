"""libvirt TLS keys on the lab: CA on the master, per-hypervisor certs via pillar, virt.keys."""

import json
import os

LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
CA_DIR = os.path.join(LAB_DIR, "master/etc/salt/pki/master/libvirt")


def test_formula_keys_are_idempotent_and_private(lab):
    out = lab.salt_json("hypervisor*", "state.apply", "virt.keys,virt.libvirtd")
    for minion, states in out.items():
        assert all(s["result"] for s in states.values()), (minion, states)
        assert all(not s["changes"] for s in states.values()), (minion, states)  # already applied
    dry = lab.salt_json("hypervisor1", "state.apply", "virt.keys", "test=True")
    assert all(s["result"] is True and not s["changes"] for s in dry["hypervisor1"].values())
    for hyper in ("hypervisor1", "hypervisor2"):
        for path in ("/etc/pki/libvirt/private/serverkey.pem", "/etc/pki/libvirt/private/clientkey.pem"):
            assert lab.hv(hyper, "stat", "-c", "%a", path).stdout.strip() == "600"
        # libvirt's own checker is happy with what the formula wrote.
        check = lab.hv(hyper, "virt-pki-validate")
        assert f"Found server certificate /etc/pki/libvirt/servercert.pem for {hyper}" in check.stdout
        assert "does not seem to match" not in check.stdout


def test_ca_key_never_reaches_a_minion(lab):
    with open(os.path.join(CA_DIR, "cakey.pem")) as fh:
        ca_body = fh.read().strip().splitlines()[1]  # a line of the key body
    pillars = lab.salt_json("*", "pillar.items", "unmask=True")
    on_demand = lab.salt_json("hypervisor*", "pillar.ext", '{"libvirt": true}', "unmask=True")
    assert ca_body not in json.dumps(pillars) + json.dumps(on_demand)
    for hyper in ("hypervisor1", "hypervisor2"):
        grep = lab.hv(hyper, "grep", "-rlF", ca_body, "/etc/pki", check=False)
        assert grep.stdout == ""


def test_each_hypervisor_sees_only_its_own_keys(lab):
    own = {}
    for hyper in ("hypervisor1", "hypervisor2"):
        own[hyper] = lab.hv(hyper, "cat", "/etc/pki/libvirt/private/serverkey.pem").stdout
    pillar1 = json.dumps(lab.salt_json("hypervisor1", "pillar.items", "unmask=True"))
    assert own["hypervisor2"].splitlines()[1] not in pillar1
    # Asking on demand with options (e.g. to pick another CA dir or extra names) is refused.
    sneaky = lab.salt_json("hypervisor1", "pillar.ext",
                           '{"libvirt": {"extra_names": ["hypervisor2"], "ca_dir": "/tmp/evil"}}',
                           "unmask=True")
    assert own["hypervisor2"].splitlines()[1] not in json.dumps(sneaky)
    assert not os.path.exists("/tmp/evil")
    # The certificate hypervisor1 holds names only hypervisor1.
    text = lab.hv("hypervisor1", "certtool", "-i", "--infile", "/etc/pki/libvirt/servercert.pem").stdout
    assert "hypervisor1" in text and "hypervisor2" not in text and "127.0.0.2" in text


def test_whole_formula_renders(lab):
    rendered = lab.salt_json("hypervisor1", "state.show_sls", "virt")["hypervisor1"]
    assert isinstance(rendered, dict), rendered
    assert rendered["libvirt"]["pkg"][0] == "installed" or "installed" in rendered["libvirt"]["pkg"]
    pkgs = next(arg["pkgs"] for arg in rendered["libvirt"]["pkg"] if isinstance(arg, dict) and "pkgs" in arg)
    assert "libvirt-daemon-system" in pkgs and "qemu-system-x86" in pkgs
    assert "keys" in rendered["libvirt_keys"]["virt"]
    assert "keyvalue" in rendered["libvirtd-config"]["file"]
    # Without socket activation the seed's --listen flag goes into the daemon's options file.
    out = lab.salt_json("hypervisor1", "state.show_sls", "virt",
                        'pillar={"virt": {"hypervisor": {"manage_service": true, "listen_mode": "flag"}}}')
    listen = json.dumps(out["hypervisor1"]["libvirtd-listen"])
    assert "/etc/default/libvirtd" in listen and "--listen" in listen
    assert "libvirtd" in out["hypervisor1"]
    # On a systemd host the TLS socket unit is what listens; bridge and firewall when asked.
    out = lab.salt_json("hypervisor1", "state.show_sls", "virt",
                        'pillar={"virt": {"hypervisor": {"manage_service": true, "listen_mode": "socket", '
                        '"bridge": {"enabled": true, "interface": "eth9"}, "firewall": true}}}')["hypervisor1"]
    assert "libvirtd-tls.socket" in json.dumps(out["libvirtd-listen"])
    assert "network" in out["br0"] and "network" in out["eth9"]
    assert "iptables" in out["libvirt-tls-port"]


def test_formula_keeps_console_ports_for_the_proxy(lab):
    out = lab.salt_json("hypervisor1", "state.show_sls", "virt",
                        'pillar={"virt": {"hypervisor": {"firewall": true, "console_proxy": ["192.0.2.1"], '
                        '"vnc_port_min": 5900, "vnc_port_max": 5999}}}')["hypervisor1"]
    rules = {k: v for k, v in out.items() if k.startswith("vnc-from-")}
    assert sorted(rules) == ["vnc-from-127.0.0.0_8", "vnc-from-192.0.2.1", "vnc-from-others"]
    for name, source in (("vnc-from-127.0.0.0_8", "127.0.0.0/8"), ("vnc-from-192.0.2.1", "192.0.2.1")):
        text = json.dumps(rules[name])
        assert f'"source": "{source}"' in text and '"jump": "ACCEPT"' in text and '"dport": "5900:5999"' in text
    assert '"jump": "DROP"' in json.dumps(rules["vnc-from-others"])
    qemu = json.dumps(out["qemu-tls-config"])
    assert '"remote_display_port_min": 5900' in qemu and '"remote_display_port_max": 5999' in qemu
