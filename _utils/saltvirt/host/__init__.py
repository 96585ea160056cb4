"""The hypervisor host as libvirt describes it: ``capabilities`` (host, guest and domain
capabilities, the CPU baseline) and ``devices`` (the node devices), parsed into the dicts of the
classic ``virt`` functions."""
