"""Virtual networks: ``spec`` (the classic arguments, checked), ``xml`` (network XML as views:
build, read, change in place) and ``ops`` (the libvirt calls)."""
