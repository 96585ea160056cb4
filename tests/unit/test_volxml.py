"""saltvirt.storage.volxml: a caller's volume XML checked before libvirt sees it. Every refusal
next to the legitimate document it differs from; a file's content never quoted."""

import os

import pytest

from saltvirt.errors import InvalidArgument
from saltvirt.storage import paths, poolxml, volxml


@pytest.fixture
def host(tmp_path):
    for sub in ("pools/p1", "golden", "images"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "golden" / "base.qcow2").write_bytes(b"")
    return tmp_path


@pytest.fixture
def dir_pool(host):
    return poolxml.PoolXml.parse(f"<pool type='dir'><name>p1</name><target><path>{host}/pools/p1</path></target>"
                                 "</pool>")


@pytest.fixture
def roots(host):
    return paths.Roots(str(host / "images"), [str(host / "pools" / "p1")], image_roots=[str(host / "golden")])


def vol(inner, name="data.qcow2", attrs=""):
    return (f"<volume{attrs}><name>{name}</name><capacity unit='MiB'>64</capacity>"
            f"<target><format type='qcow2'/></target>{inner}</volume>")


def test_a_plain_volume_with_permissions_and_a_backing_store_is_accepted(host, dir_pool, roots):
    # A symlink in the image roots to a file there: accepted, and libvirt gets the real path.
    os.symlink(host / "golden" / "base.qcow2", host / "golden" / "current")
    xml = ("<volume type='file'><name>data.qcow2</name><capacity unit='MiB'>64</capacity>"
           "<allocation>0</allocation><target><path>{t}/data.qcow2</path><format type='qcow2'/>"
           "<permissions><mode>0640</mode><owner>107</owner><group>107</group></permissions>"
           "<compat>1.1</compat><features><lazy_refcounts/></features></target>"
           "<backingStore><path>{g}/current</path><format type='qcow2'/></backingStore></volume>"
           ).format(t=host / "pools" / "p1", g=host / "golden")
    name, document = volxml.check(xml, dir_pool, roots)
    assert name == "data.qcow2"
    assert f"<path>{host}/golden/base.qcow2</path>" in document and "current" not in document
    assert "<lazy_refcounts />" in document and "<mode>0640</mode>" in document


def test_virsh_vol_dumpxml_output_can_be_fed_back(host, dir_pool, roots):
    xml = ("<volume type='file'><name>d.img</name><key>{p}</key><source></source>"
           "<capacity unit='bytes'>1048576</capacity><allocation unit='bytes'>0</allocation>"
           "<physical unit='bytes'>1048576</physical><target><path>{p}</path><format type='raw'/>"
           "<permissions><mode>0600</mode><owner>0</owner><group>0</group></permissions>"
           "<timestamps><atime>1.5</atime><mtime>1.5</mtime><ctime>1.5</ctime></timestamps></target></volume>"
           ).format(p=host / "pools" / "p1" / "d.img")
    assert volxml.check(xml, dir_pool, roots)[0] == "d.img"


@pytest.mark.parametrize(("xml", "message"), [
    (vol("", name="../escape"), r"<name> \.\./escape: a volume name is a file name"),
    (vol("", name="a/b"), r"<name> a/b: a volume name is a file name"),
    (vol("", name=""), r"<name>: a volume name is a file name"),
    (vol("", attrs=" type='bogus'"), "<volume> type bogus: must be one of file"),
    (vol("", attrs=" mode='x'"), "<volume> attribute mode: not accepted"),
    (vol("<backingStore><path>/etc/shadow</path><format type='raw'/></backingStore>"),
     "<backingStore><path> /etc/shadow: must lie under the image roots"),
    (vol("<backingStore><path>/var/lib/x</path></backingStore>"), "needs <format type="),
    (vol("<backingStore><format type='raw'/></backingStore>"), r"<backingStore>: needs a <path>"),
    (vol("<backingStore><path>{g}/base.qcow2</path><format type='raw'/><permissions/></backingStore>"),
     "<volume/backingStore> child permissions: not accepted"),
    (vol("<source><extent start='0' end='1'/></source>"), "<volume/source>: a volume's <source> lists host"),
    (vol("<foo/>"), "<volume> child foo: not accepted in a volume definition"),
    (vol("<x:cmd xmlns:x='urn:x'/>"), r"<volume> child \{urn:x\}cmd: not accepted"),
    (vol("<backingStore><path>{g}/base.qcow2</path><path>/etc/shadow</path><format type='raw'/></backingStore>"),
     "<volume/backingStore/path>: given twice"),
    (vol("", name="a.img</name><name>../b"), "<volume/name>: given twice"),
])
def test_each_refusal_names_its_element(host, dir_pool, roots, xml, message):
    with pytest.raises(volxml.Refused, match=message):
        volxml.check(xml.replace("{g}", str(host / "golden")), dir_pool, roots)
    # The same document without the offending part: accepted.
    assert volxml.check(vol(""), dir_pool, roots)[0] == "data.qcow2"


def test_target_paths_stay_in_the_pools_directory(host, dir_pool, roots):
    target = host / "pools" / "p1"
    os.symlink("/etc", target / "etc")
    for path in ("/etc/shadow", f"{target}/etc/shadow", f"{target}/../p2/x", "relative"):
        xml = f"<volume><name>v</name><capacity>1</capacity><target><path>{path}</path></target></volume>"
        with pytest.raises(volxml.Refused, match="<target><path> .*must lie in the pool's own directory"):
            volxml.check(xml, dir_pool, roots)
    xml = f"<volume><name>v</name><capacity>1</capacity><target><path>{target}/v</path></target></volume>"
    assert volxml.check(xml, dir_pool, roots)[0] == "v"
    # A pool without a directory of its own (a volume group): no target path at all.
    logical = poolxml.PoolXml.parse("<pool type='logical'><name>vg</name><source><name>lab_vg</name></source>"
                                    "<target><path>/dev/lab_vg</path></target></pool>")
    with pytest.raises(volxml.Refused, match="must lie in the pool's own directory"):
        volxml.check("<volume><name>v</name><capacity>1</capacity><target><path>/dev/lab_vg/v</path>"
                     "</target></volume>", logical, roots)
    assert volxml.check("<volume><name>v</name><capacity>1</capacity></volume>", logical, roots)[0] == "v"


def test_encryption_and_bad_permissions_are_refused(dir_pool, roots):
    with pytest.raises(volxml.Refused, match="encryption uses a libvirt secret"):
        volxml.check(vol("").replace("</target>", "<encryption format='luks'><secret type='passphrase' "
                                     "uuid='0a81f5b2-8403-7b23-c8d6-21ccc2f80d6f'/></encryption></target>"),
                     dir_pool, roots)
    for perms in ("<mode>4755</mode>", "<owner>root</owner>", "<mode>rwx</mode>"):
        with pytest.raises(volxml.Refused, match="<target><permissions>: mode is an octal mode"):
            volxml.check(vol("").replace("</target>", f"<permissions>{perms}</permissions></target>"),
                         dir_pool, roots)
    accepted = vol("").replace("</target>", "<permissions><mode>0755</mode><label>l</label></permissions></target>")
    assert volxml.check(accepted, dir_pool, roots)[0] == "data.qcow2"


def test_every_problem_is_reported_at_once(dir_pool, roots):
    xml = vol("<foo/><backingStore><path>/etc/shadow</path></backingStore>", name="../x")
    with pytest.raises(volxml.Refused) as info:
        volxml.check(xml, dir_pool, roots)
    assert len(info.value.problems) == 4
    assert str(info.value).startswith("volume XML refused, nothing created: ")


@pytest.mark.parametrize("xml", [
    "", None, "<domain><name>x</name></domain>", "<volume><name>x</name>",
    "<!DOCTYPE v [<!ENTITY e SYSTEM 'file:///etc/shadow'>]><volume><name>&e;</name></volume>",
])
def test_what_is_not_a_volume_definition_is_refused(dir_pool, roots, xml):
    with pytest.raises(InvalidArgument):
        volxml.check(xml, dir_pool, roots)


def test_a_files_content_is_never_quoted(dir_pool, roots):
    secret = "s3cr3t-value"
    refused = (vol(f"<{secret}/>", name=secret), vol(f"<backingStore><path>/etc/{secret}</path>"
                                                     "<format type='raw'/></backingStore>"))
    for xml in (*refused, f"<volume><name>{secret}</name", f"<nota{secret}/>"):
        with pytest.raises(InvalidArgument) as info:
            volxml.check(xml, dir_pool, roots, quote=False)
        assert secret not in str(info.value)
    for xml in refused:  # a string argument: the values are quoted, to help
        with pytest.raises(InvalidArgument, match=secret):
            volxml.check(xml, dir_pool, roots)
