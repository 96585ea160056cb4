# salt://virt/keys.sls -- the seed's "Libvirt State": CA-signed TLS keys from the master.
libvirt_keys:
  virt.keys
