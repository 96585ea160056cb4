# Classic state: virt.defined -- the argument fragments "cpu", "mem" and "hypervisor_features"
# of the Salt 3001-3007 docstring, each on a VM of its own (names of the lab's choice; the
# fragment exactly as written, the other arguments the least a VM needs).
# NOT APPLIED ON THE LAB (tests/unit/test_classic_sls.py checks them; docs/upgrading.rst,
# "Classic SLS examples on the lab"):
# * cls-cpu: 12 vCPUs pinned to host CPUs 0-11 (cpuset, vcpupin, emulatorpin, iothreadpin),
#   real-time schedulers and Intel RDT cache/memory-bandwidth tuning (cachetune, memorytune)
#   need a 12-CPU host with RDT: this one has 2 CPUs. salt-virt also refuses cpu:vcpus,
#   cpu:tuning and NUMA distances by design (docs/upgrading.rst, virt.init).
# * cls-mem: 2 MiB / 1 GiB / 2 GiB huge pages on guest NUMA nodes 0-3 need huge pages reserved
#   on the host and a guest with four NUMA nodes; locked memory needs memlock limits.
# * cls-kvm-hint: kvm-hint-dedicated is a KVM feature for a host-passthrough CPU; this lab's
#   guests run under TCG (KVM does not run guests here, docs/lab.rst).
cls-cpu:
  virt.defined:
    - mem: 2048
    - cpu:
          placement: static
          cpuset: 0-11
          current: 5
          maximum: 12
          vcpus:
            0:
              enabled: 'yes'
              hotpluggable: 'no'
              order: 1
            1:
              enabled: 'no'
              hotpluggable: 'yes'
          match: minimum
          mode: custom
          check: full
          vendor: Intel
          model:
            name: core2duo
            fallback: allow
            vendor_id: GenuineIntel
          topology:
            sockets: 1
            cores: 12
            threads: 1
          cache:
            level: 3
            mode: emulate
          feature:
            policy: optional
            name: lahf_lm
          numa:
            0:
               cpus: 0-3
               memory: 1g
               discard: 'yes'
               distances:
                 0: 10     # sibling id : value
                 1: 21
                 2: 31
                 3: 41
            1:
               cpus: 4-6
               memory: 1g
               memAccess: shared
               distances:
                 0: 21
                 1: 10
                 2: 21
                 3: 31
          tuning:
               vcpupin:
                 0: 1-4,^2  # vcpuid : cpuset
                 1: 0,1
                 2: 2,3
                 3: 0,4
               emulatorpin: 1-3
               iothreadpin:
                 1: 5,6    # iothread id: cpuset
                 2: 7,8
               shares: 2048
               period: 1000000
               quota: -1
               global_period: 1000000
               global_quota: -1
               emulator_period: 1000000
               emulator_quota: -1
               iothread_period: 1000000
               iothread_quota: -1
               vcpusched:
                 - scheduler: fifo
                   priority: 1
                 - scheduler: fifo
                   priority: 2
                   vcpus: 1-3
                 - scheduler: rr
                   priority: 3
                   vcpus: 4
               iothreadsched:
                 - scheduler: batch
                   iothreads: 2
               emulatorsched:
                 scheduler: idle
               cachetune:
                 0-3:      # vcpus set
                   0:      # cache id
                     level: 3
                     type: both
                     size: 4
                   1:
                     level: 3
                     type: both
                     size: 6
                   monitor:
                     1: 3
                     0-3: 3
                 4-5:
                   monitor:
                     4: 3  # vcpus: level
                     5: 3
               memorytune:
                 0-3:      # vcpus set
                   0: 60   # node id: bandwidth
                 4-5:
                   0: 60
          iothreads: 4

cls-mem:
  virt.defined:
    - cpu: 1
    - mem:
        boot: 1g
        current: 1g
        max: 1g
        slots: 10
        hard_limit: 1024
        soft_limit: 512m
        swap_hard_limit: 1g
        min_guarantee: 512mib
        hugepages:
          - size: 2m
          - nodeset: 0-2
            size: 1g
          - nodeset: 3
            size: 2g
        nosharepages: True
        locked: True
        source: file
        access: shared
        allocation: immediate
        discard: True

cls-kvm-hint:
  virt.defined:
    - cpu: 1
    - mem: 128
    - hypervisor_features:
        kvm-hint-dedicated: True
