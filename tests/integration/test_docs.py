"""docs/cloud_controller.rst says every command on it runs on the lab exactly as written: run them.

The ``salt ...`` and ``salt-run ...`` lines of the page's literal blocks are extracted in
order and run through the lab's wrappers; ``<new hypervisor>`` becomes the hypervisor the VM
is not on. Between commands the test only sets the stage the walkthrough assumes (a VM name
that a ``virt.init`` creates is free; the VM a ``virt.migrate`` moves exists) and cleans up at
the end. Every command must exit 0.
"""

import json
import os
import re
import shlex

import pytest

from tests.integration.conftest import REPO

DOC = os.path.join(REPO, "docs", "cloud_controller.rst")
HYPERS = ("hypervisor1", "hypervisor2")
TOOLS = ("salt", "salt-run")


def literal_blocks(text):
    """The literal blocks of an RST text (after ``::`` or ``.. code-block::``), as line lists."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        line = lines[i].rstrip()
        opens = line.endswith("::") and not re.match(r"\s*\.\.\s+(?!code-block)\S+::", line)
        if opens or re.match(r"\s*\.\.\s+code-block::", line):
            indent = len(line) - len(line.lstrip())
            i += 1
            while i < len(lines) and re.match(r"\s*:\w+:", lines[i]) and lines[i].strip():
                i += 1  # directive options
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            blocks.append([b.strip() for b in block if b.strip()])
            continue
        i += 1
    return blocks


def doc_commands(text):
    commands = []
    for block in literal_blocks(text):
        for line in block:
            if line.split(" ", 1)[0] in TOOLS:
                commands.append(line)
    return commands


def test_extraction_finds_the_walkthrough():
    with open(DOC) as fh:
        commands = doc_commands(fh.read())
    # The seed's commands, verbatim.
    for expected in ("salt-run virt.host_info", "salt-run virt.list",
                     "salt-run virt.init centos1 2 512 salt://centos.img",
                     "salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.img",
                     "salt-run virt.query",
                     "salt 'hypervisor*' virt.init centos1 2 512 image=/var/lib/libvirt/images/centos.qcow2 "
                     "enable_qcow=True start=False",
                     "salt-run virt.migrate centos <new hypervisor>"):
        assert expected in commands
    assert not any(c.startswith(("centos", "CPU:", "virt:")) for c in commands)
    sample = "Intro::\n\n    salt-run a.b\n    # not a command\n\nText.\n\n.. code-block:: yaml\n\n    salt: x\n"
    assert doc_commands(sample) == ["salt-run a.b"]


def _argv(lab, command):
    if "<new hypervisor>" in command:
        name = shlex.split(command)[2]
        host = _host_of(lab, name)
        command = command.replace("<new hypervisor>", next(h for h in HYPERS if h != host))
    argv = shlex.split(command)
    return argv[0], argv[1:]


def _host_of(lab, name):
    listing = json.loads(lab.run("salt", "hypervisor*", "virt.list_domains", "--out=json", "--static").stdout)
    hosts = [h for h, names in listing.items() if isinstance(names, list) and name in names]
    return hosts[0] if hosts else None


def _free(lab, name):
    """No VM and no minion key called ``name`` anywhere."""
    lab.run("salt", "hypervisor*", "virt.purge", name, check=False)
    lab.run("salt-key", "-y", "-d", name, check=False)


def _stage(lab, command):
    words = shlex.split(command.replace("<new hypervisor>", "X"))
    fun = words[2] if words[0] == "salt" else words[1]
    if fun == "virt.init":
        _free(lab, words[3] if words[0] == "salt" else words[2])
    elif fun == "virt.migrate":
        name = words[2]
        _free(lab, "centos1")  # room for it, whichever host placement picks
        if _host_of(lab, name) is None:
            lab.run("salt-run", "virt.init", name, "1", "256", "salt://centos.qcow2", "enable_qcow=True")


@pytest.fixture
def clean_walkthrough(lab):
    yield
    for name in ("centos1", "centos"):
        _free(lab, name)
    # Copies left by `salt-run virt.rebase` of the lab's centos.qcow2: unused once the VMs are gone.
    for host in HYPERS:
        lab.hv(host, "sh", "-c", "rm -f /var/lib/libvirt/images/centos.qcow2.2*", check=False)


def test_every_command_of_the_walkthrough_runs(lab, clean_walkthrough):
    with open(DOC) as fh:
        commands = doc_commands(fh.read())
    # `salt-run sys.doc` does not exist for runners: doc.runner lists them all.
    runners = json.loads(lab.run("salt-run", "doc.runner", "--out=json").stdout)
    has_migrate = "virt.migrate" in runners
    ran = []
    for command in commands:
        if "virt.migrate" in command and not has_migrate:
            continue
        _stage(lab, command)
        tool, args = _argv(lab, command)
        proc = lab.run(tool, *args, check=False, timeout=900)
        assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        ran.append(command)
    assert len(ran) >= 10 and (not has_migrate or any("virt.migrate" in c for c in ran)), ran
    # The migrated VM is on the other hypervisor now, running.
    if has_migrate:
        states = json.loads(lab.run("salt-run", "virt.list", "--out=json").stdout)
        assert any("centos" in (grouped.get("running") or []) for grouped in states.values())
