"""saltvirt.coexist: telling salt-virt's and saltext-virt's ``virt`` files apart, and the message."""

from saltvirt import coexist


def test_owner_by_place_and_by_content(tmp_path):
    saltext = tmp_path / "saltext" / "virt"
    (saltext / "modules").mkdir(parents=True)
    theirs = saltext / "modules" / "virt.py"
    theirs.write_text("import libvirt\n")
    ours = tmp_path / "extmods" / "modules" / "virt.py"
    ours.parent.mkdir(parents=True)
    ours.write_text('"""doc"""\nfrom saltvirt import domain\n')
    site = tmp_path / "virt.py"
    site.write_text("def node_info():\n    return {}\n")
    assert coexist.owner(str(theirs), str(saltext)) == "saltext-virt"
    assert coexist.owner(str(ours), str(saltext)) == "salt-virt"
    assert coexist.owner(str(ours), None) == "salt-virt"
    assert coexist.owner(str(site), str(saltext)) == "other"
    assert coexist.owner(None, str(saltext)) is None
    # A sibling directory whose name merely starts like saltext's is not inside it.
    twin = tmp_path / "saltext" / "virtual.py"
    twin.write_text("import os\n")
    assert coexist.owner(str(twin), str(saltext)) == "other"


def test_message_without_saltext_virt():
    text = coexist.message(None, {"modules": {"implementation": "salt-virt", "path": "/x"}})
    assert "not installed" in text and "MIXED" not in text


def test_message_names_the_active_implementation_and_how_to_choose():
    ext = {"version": "0.1.0", "path": "/site/saltext/virt"}
    active = {"modules": {"implementation": "saltext-virt", "path": "/a"},
              "states": {"implementation": "saltext-virt", "path": "/b"}}
    text = coexist.message(ext, active)
    assert "saltext-virt 0.1.0 (/site/saltext/virt)" in text
    assert "execution module: saltext-virt, state module: saltext-virt" in text
    assert "MIXED" not in text
    assert coexist.CHOOSE in text


def test_message_warns_when_the_kinds_are_mixed():
    ext = {"version": "0.1.0", "path": "/site/saltext/virt"}
    active = {"modules": {"implementation": "salt-virt", "path": "/a"},
              "states": {"implementation": "saltext-virt", "path": "/b"}}
    assert "MIXED" in coexist.message(ext, active)
    active["states"]["implementation"] = None  # disable_states: [virt]
    assert "state module: none (disabled or missing)" in coexist.message(ext, active)


def test_saltext_virt_absent_here():
    # The test environment has no saltext-virt (the functional tests install it separately).
    assert coexist.saltext_virt() is None
