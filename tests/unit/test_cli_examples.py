"""scripts/check_cli_examples.py: it passes a documented bundle and lists every gap of a bad one."""

import os
import subprocess
import sys
import textwrap

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "check_cli_examples.py")

GOOD = {
    "_modules/demo.py": '''
        __virtualname__ = "virt"
        __func_alias__ = {"list_": "list"}


        def __virtual__():
            return __virtualname__


        def _helper():
            return 1


        def start(name):
            """
            Start a VM.

            CLI Example:

            .. code-block:: bash

                salt '*' virt.start web1
            """


        def list_():
            """
            The VMs.

            CLI Examples:

            .. code-block:: bash
                :linenos:

                salt '*' virt.list
            """
    ''',
    "_runners/demo.py": '''
        def query(host=None):
            """
            Everything about every hypervisor.

            CLI Example:

            .. code-block:: bash

                salt-run demo.query
            """
    ''',
    "_states/demo.py": '''
        def running(name):
            """
            Ensure a VM runs.

            .. code-block:: yaml

                web1:
                  demo.running
            """
    ''',
}

BAD = {
    "_modules/demo.py": '''
        __virtualname__ = "virt"
        __func_alias__ = {"list_": "list"}


        def no_doc(name):
            pass


        def no_example(name):
            """Start a VM."""


        def no_block(name):
            """
            Stop a VM.

            CLI Example:

                salt '*' virt.no_block web1
            """


        def list_():
            """
            The VMs.

            .. code-block:: bash

                salt '*' virt.list
            """


        def empty_block():
            """
            CLI Example:

            .. code-block:: bash

            Nothing above.
            """
    ''',
    "_runners/demo.py": '''
        def query(host=None):
            """Everything about every hypervisor."""
    ''',
    "_states/demo.py": '''
        def running(name):
            """
            Ensure a VM runs.

            CLI Example:

            .. code-block:: bash

                salt '*' state.apply vms
            """
    ''',
}


def _tree(root, files):
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return root


def _check(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_documented_bundle_passes(tmp_path):
    proc = _check(_tree(tmp_path, GOOD))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 files" in proc.stdout


def test_every_gap_is_listed_and_fails(tmp_path):
    proc = _check(_tree(tmp_path, BAD))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    expected = {
        "virt.no_doc": "no docstring",
        "virt.no_example": "no 'CLI Example:'",
        "virt.no_block": "not followed by a .. code-block:: bash",
        "virt.list (list_)": "no 'CLI Example:'",
        "virt.empty_block": "not followed by a .. code-block:: bash",
        "demo.query": "no 'CLI Example:'",
        "demo.running": "no SLS example",
    }
    for name, problem in expected.items():
        assert any(f": {name}: " in line and problem in line for line in lines), (name, proc.stdout)
    assert len(lines) == len(expected), proc.stdout
    assert "7 public function(s)" in proc.stderr


def test_single_file_and_usage_errors(tmp_path):
    root = _tree(tmp_path, BAD)
    proc = _check(root / "_runners" / "demo.py")
    assert proc.returncode == 1 and "demo.query" in proc.stdout and "virt." not in proc.stdout
    assert _check(root / "_modules").returncode == 2  # a directory that is not a repository root
    other = tmp_path / "elsewhere.py"
    other.write_text("def f():\n    pass\n")
    assert _check(other).returncode == 2


def test_this_repository_layout_is_found():
    """The default root is the repository: its entry-point files are what gets checked."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import check_cli_examples
    finally:
        sys.path.pop(0)
    root = os.path.dirname(os.path.dirname(os.path.abspath(SCRIPT)))
    names = {os.path.relpath(p, root) for p in check_cli_examples.files_under(root)}
    assert {"_modules/virt.py", "_modules/guestfs.py", "_runners/virt.py", "_states/virt.py"} <= names
