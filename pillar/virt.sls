# Example pillar for Salt Virt hypervisors. Every key is optional.
virt:
  # Where virt.init puts VM disks (one directory per VM).
  images: /srv/salt-images
  # How other hypervisors and VNC viewers reach this host (default: its fqdn grain).
  # address: hyper1.example.com
  vnc:
    listen: 127.0.0.1          # keep consoles off public interfaces; tunnel with SSH
    # password: none           # default: every console gets a generated password
  seed_cmd: cidata             # or seed.apply (needs libguestfs on the hypervisor)
  nic:
    default:
      - name: eth0
        bridge: br0
  disk:
    default:
      - system:
          size: 8192           # MiB
  # The hypervisor formula (salt://virt/hypervisor.sls)
  hypervisor:
    bridge:
      enabled: True
      name: br0
      interface: eth0
      proto: dhcp
    firewall: True             # open 16514/tcp for libvirt TLS and migration; VNC ports
                               # (vnc_port_min..vnc_port_max, 5900..6899) only from
    console_proxy: [192.0.2.1] # the master's console proxy (and this host's loopback)
    postcopy: False            # True: vm.unprivileged_userfaultfd=1, needed for postcopy=True
    # listen_mode: socket      # systemd socket activation (default on systemd), or: flag
    libvirtd_conf: {}          # extra libvirtd.conf settings, e.g. {listen_addr: 192.0.2.10}
    # lookup:                  # override per-OS package/service names from virt/map.jinja
    #   pkgs: [libvirt-daemon-system, qemu-system-x86, python3-libvirt]
