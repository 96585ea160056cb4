"""saltvirt.domain.platform: boot (kernel, UEFI), boot_dev, stop_on_reboot, clock and
hypervisor_features -- arguments, trust, XML, and virt.update's comparison of them."""

import os

import libvirt
import pytest

from saltvirt.domain import pending, platform, xmlpolicy
from saltvirt.domain import update as upd
from saltvirt.domain.model import Disk, Domain
from saltvirt.domain.xmlview import DomainXml
from saltvirt.errors import InvalidArgument
from saltvirt.provision.spec import UpdateSpec, VmSpec, platform_settings
from saltvirt.settings import HostSettings
from saltvirt.storage import paths

VM_DIR = "/srv/salt-images/web1"
NVRAM = f"{VM_DIR}/nvram.fd"


@pytest.fixture
def roots(tmp_path):
    for sub in ("images/web1", "golden", "firmware", "elsewhere"):
        (tmp_path / sub).mkdir(parents=True)
    for name in ("golden/vmlinuz", "golden/initrd.gz", "firmware/CODE.fd", "firmware/VARS.fd",
                 "elsewhere/vmlinuz", "images/web1/nvram.fd"):
        (tmp_path / name).write_bytes(b"x")
    return paths.Roots(str(tmp_path / "images"), image_roots=[str(tmp_path / "golden")],
                       firmware_roots=[str(tmp_path / "firmware")])


def normalize(**kw):
    return platform.normalize(nvram_path=NVRAM, **kw)


# --------------------------------------------------------------------------- arguments


def test_classic_arguments_become_settings():
    settings = normalize(
        boot={"kernel": "/k", "initrd": "/i", "cmdline": "console=ttyS0", "efi": True}, boot_dev="cdrom hd",
        stop_on_reboot=True, hypervisor_features={"kvm-hint-dedicated": True, "kvm-hidden": False},
        clock={"utc": False, "adjustment": 3600, "timers": {"rtc": {"tickpolicy": "catchup", "slew": 4636},
                                                           "hpet": {"present": False}, "pit": None}})
    assert settings == {
        "boot:kernel": "/k", "boot:initrd": "/i", "boot:cmdline": "console=ttyS0", "boot:efi": True,
        "boot_dev": ["cdrom", "hd"], "stop_on_reboot": True,
        "hypervisor_features:kvm-hint-dedicated": True, "hypervisor_features:kvm-hidden": False,
        "clock": {"offset": "localtime", "timezone": None, "adjustment": "3600",
                  "timers": {"hpet": {"present": "no"}, "rtc": {"tickpolicy": "catchup", "slew": "4636"}}},
        "nvram_path": NVRAM,
    }


def test_absent_arguments_leave_settings_alone_and_efi_false_drops_every_firmware():
    assert normalize() == {}
    assert normalize(boot={"kernel": None}) == {"boot:kernel": None}
    assert normalize(boot={"efi": False}) == {"boot:efi": False, "boot:loader": None, "boot:nvram": None}
    assert normalize(boot=["network", "hd"]) == {"boot_dev": ["network", "hd"]}
    assert normalize(clock={"timezone": "Europe/Paris"})["clock"] == {
        "offset": "timezone", "timezone": "Europe/Paris", "adjustment": None, "timers": {}}
    assert normalize(clock={})["clock"]["offset"] == "utc"  # classic default: utc


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"boot": {"kernal": "/k"}}, r"boot: unknown key\(s\) kernal"),
    ({"boot": {"efi": "yes"}}, "boot:efi must be True or False, not 'yes'"),
    ({"boot": {"efi": True, "loader": "/l"}}, "either efi .* or loader/nvram, not both"),
    ({"boot": {"nvram": "/n"}}, "boot:nvram .* needs boot:loader"),
    ({"boot": {"kernel": "/k", "cmdline": ["a"]}}, "boot:cmdline must be a string"),
    ({"boot": ["hd"], "boot_dev": "cdrom"}, "boot .* and boot_dev both given"),
    ({"boot_dev": "hd usb"}, r"boot_dev: unknown device\(s\) usb"),
    ({"boot_dev": ""}, "boot_dev must be a space-separated list"),
    ({"clock": "utc"}, "clock must be a dictionary"),
    ({"clock": {"offset": "utc"}}, r"clock: unknown key\(s\) offset"),
    ({"clock": {"timezone": "UTC", "adjustment": 5}}, "adjustment goes with utc or local time"),
    ({"clock": {"adjustment": "soon"}}, "adjustment must be seconds or 'reset'"),
    ({"clock": {"timers": {"hpet2": {}}}}, "unknown timer 'hpet2'"),
    ({"clock": {"timers": {"rtc": {"speed": 1}}}}, r"clock:timers:rtc: unknown key\(s\) speed"),
    ({"clock": {"timers": {"rtc": "catchup"}}}, "clock:timers:rtc must be a dictionary"),
    ({"hypervisor_features": {"kvm-turbo": True}}, "unknown feature 'kvm-turbo'"),
    ({"hypervisor_features": {"kvm-hidden": "on"}}, "must be True, False or None"),
    ({"hypervisor_features": ["kvm-hidden"]}, "hypervisor_features must be a dictionary"),
])
def test_bad_arguments_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        normalize(**kwargs)


# --------------------------------------------------------------------------- trust


def test_kernels_come_from_the_image_roots_loaders_from_the_firmware_dirs(roots, tmp_path):
    golden, firmware = tmp_path / "golden", tmp_path / "firmware"
    settings = platform.normalize(
        boot={"kernel": f"{golden}/vmlinuz", "initrd": f"{golden}/initrd.gz",
              "loader": f"{firmware}/CODE.fd", "nvram": f"{firmware}/VARS.fd"}, roots=roots, nvram_path=NVRAM)
    assert settings["boot:loader"] == f"{firmware}/CODE.fd" and settings["boot:kernel"] == f"{golden}/vmlinuz"


@pytest.mark.parametrize(("boot", "message"), [
    ({"kernel": "{t}/elsewhere/vmlinuz"}, "boot:kernel .*/elsewhere/vmlinuz is outside the allowed directories"),
    ({"kernel": "/etc/shadow"}, "boot:kernel /etc/shadow is outside the allowed directories"),
    ({"kernel": "{t}/firmware/CODE.fd"}, "boot:kernel .* is outside"),  # firmware dirs are for loaders only
    ({"kernel": "http://example.com/vmlinuz"}, "must be an absolute path on the hypervisor"),
    ({"initrd": "{t}/golden/../elsewhere/vmlinuz", "kernel": "{t}/golden/vmlinuz"}, "boot:initrd .* is outside"),
    ({"loader": "/etc/passwd"}, "boot:loader /etc/passwd is outside the allowed directories .*OVMF"),
    ({"loader": "{t}/firmware/CODE.fd", "nvram": "{t}/images/web1/nvram.fd"},
     "boot:nvram .* is under .*where VMs keep their disks and keys: refused"),
])
def test_paths_outside_the_roots_are_refused(roots, tmp_path, boot, message):
    boot = {k: v.format(t=tmp_path) for k, v in boot.items()}
    with pytest.raises(InvalidArgument, match=message):
        platform.normalize(boot=boot, roots=roots, nvram_path=NVRAM)


def test_a_symlink_out_of_the_firmware_dir_is_refused(roots, tmp_path):
    os.symlink("/etc/shadow", tmp_path / "firmware" / "evil.fd")
    with pytest.raises(InvalidArgument, match="boot:loader .*evil.fd is outside"):
        platform.normalize(boot={"loader": str(tmp_path / "firmware" / "evil.fd")}, roots=roots)


def test_the_default_firmware_roots_are_the_distributions():
    assert "/usr/share/OVMF" in paths.Roots("/srv/salt-images").firmware_roots
    assert paths.Roots("/srv/salt-images").firmware("/usr/share/OVMF/OVMF_CODE_4M.fd").endswith("OVMF_CODE_4M.fd")


def test_specs_take_the_classic_arguments_and_map_them(roots, tmp_path):
    spec = VmSpec.from_kwargs("virt.init", name="web1", cpu=1, mem=256, boot={"efi": True}, boot_dev="cdrom hd",
                              stop_on_reboot=True, clock={"utc": False}, hypervisor_features={"kvm-hidden": True})
    settings = platform_settings(spec, roots, NVRAM)
    assert settings["boot:efi"] and settings["nvram_path"] == NVRAM and settings["boot_dev"] == ["cdrom", "hd"]
    update = UpdateSpec.from_kwargs("virt.update", name="web1", boot={"kernel": None})
    assert platform_settings(update, roots, NVRAM) == {"boot:kernel": None}  # the rest: unmanaged


def test_kvm_hint_dedicated_needs_host_passthrough():
    dom = Domain("web1", platform={"hypervisor_features:kvm-hint-dedicated": True})
    with pytest.raises(InvalidArgument, match="kvm-hint-dedicated needs the host-passthrough CPU mode"):
        dom.to_xml()
    dom.cpu_mode = "host-passthrough"
    assert "<hint-dedicated state=\"on\" />" in dom.to_xml()


# --------------------------------------------------------------------------- XML


def full_settings():
    return normalize(boot={"kernel": "/var/lib/libvirt/images/vmlinuz", "cmdline": "console=ttyS0", "efi": True},
                     boot_dev="network hd", stop_on_reboot=True, hypervisor_features={"kvm-hidden": True},
                     clock={"timezone": "Europe/Paris", "timers": {"rtc": {"tickpolicy": "catchup", "threshold": 9}}})


def test_what_is_written_reads_back_the_same():
    for settings in (full_settings(),
                     normalize(boot={"loader": "/usr/share/OVMF/CODE.fd", "nvram": "/usr/share/OVMF/VARS.fd"}),
                     normalize(boot={"efi": False}, clock={"utc": True}, stop_on_reboot=False)):
        view = DomainXml.parse(Domain("web1", type="qemu").to_xml())
        platform.write(view, settings)
        assert platform.differences(platform.read(DomainXml.parse(view.to_xml())), settings) == []


@pytest.mark.parametrize("clock, libvirt_xml", [
    ({"adjustment": 3600, "utc": False}, "<clock offset='variable' adjustment='3600' basis='localtime'/>"),
    ({"adjustment": -60}, "<clock offset='variable' adjustment='-60' basis='utc'/>"),
    ({"adjustment": -60}, "<clock offset='variable' adjustment='-60'/>"),  # basis defaults to utc
])
def test_libvirts_variable_offset_is_the_clock_asked_for(clock, libvirt_xml):
    """libvirt stores utc/localtime with seconds as offset='variable' (the classic virt.defined
    example ``clock: {adjustment: 3600, utc: False}``): no difference, and a real one still seen."""
    view = DomainXml.parse(Domain("web1", type="qemu").to_xml().replace("</domain>", libvirt_xml + "</domain>"))
    wanted = normalize(clock=clock)
    assert platform.differences(platform.read(view), wanted) == []
    other = normalize(clock=dict(clock, adjustment=7200))
    assert [key for key, *_ in platform.differences(platform.read(view), other)] == ["clock"]


def test_a_new_domain_carries_its_settings_and_its_own_variable_store():
    settings = full_settings()
    dom = Domain("web1", type="qemu", kernel=settings["boot:kernel"], cmdline=settings["boot:cmdline"],
                 boot=settings["boot_dev"], on_reboot="destroy", platform=platform.beyond_fields(settings))
    xml = dom.to_xml()
    assert '<os firmware="efi">' in xml and f"<nvram>{NVRAM}</nvram>" in xml
    back = Domain.from_xml(xml)
    assert back == dom
    assert back.to_info()["os"]["efi"] is True and back.to_info()["os"]["nvram"] == NVRAM
    assert platform.differences(back.platform_settings(), settings) == []


def test_an_unchanged_loader_keeps_its_attributes_and_the_store_keeps_its_path():
    view = DomainXml.parse(_read("uefi-in.xml"))
    platform.write(view, normalize(boot={"loader": "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
                                         "nvram": "/usr/share/OVMF/OVMF_VARS_4M.fd"}))
    assert view.find("os/loader").get("secure") == "yes"
    assert view.find("os/nvram").text == "/var/lib/libvirt/qemu/nvram/win11_VARS.fd"
    assert view.find("os/nvram").get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"


def test_libvirts_picked_firmware_is_not_the_callers_setting():
    live = DomainXml.parse(_read("uefi-in.xml"))
    live.find("os").set("firmware", "efi")
    settings = platform.read(live)
    assert settings["boot:efi"] and settings["boot:loader"] is None and settings["boot:nvram"] is None


def _read(name):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "data", "xml", name)) as fh:
        return fh.read()


# --------------------------------------------------------------------------- virt.update


def domain(**platform_settings):
    return Domain("web1", type="qemu", disks=[Disk("vda", f"{VM_DIR}/system.qcow2", format="qcow2")],
                  platform=platform_settings)


def test_update_finds_each_difference_for_next_boot_then_nothing():
    config = domain()
    want = upd.Wanted(platform=full_settings())
    changes = upd.diff(config, want, VM_DIR)
    assert {c.key for c in changes} == {"boot:kernel", "boot:cmdline", "boot:efi", "boot_dev", "stop_on_reboot",
                                        "clock", "hypervisor_features:kvm-hidden"}
    assert {c.when for c in changes} == {upd.NEXT_BOOT}
    view = DomainXml.parse(config.to_xml())
    for change in changes:
        platform.write(view, change.device)
    assert upd.diff(Domain.from_xml(view.to_xml()), want, VM_DIR) == []
    assert "clock none -> timezone Europe/Paris, timers rtc (on next boot)" in upd.describe(changes)


def test_update_leaves_bios_alone_for_efi_false_and_defaults_alone():
    want = upd.Wanted(platform=normalize(boot={"efi": False}, boot_dev="hd", stop_on_reboot=False))
    assert upd.diff(domain(), want, VM_DIR) == []


def test_pending_ignores_how_libvirt_spells_the_firmware_it_picked():
    config = domain(**{"boot:efi": True, "nvram_path": NVRAM})
    live_view = DomainXml.parse(config.to_xml())
    live_view.find("os").attrib.pop("firmware")  # libvirt 9's live XML: the pick, spelled out
    loader = live_view.make("os/loader")
    loader.text, loader.attrib["type"] = "/usr/share/OVMF/OVMF_CODE_4M.fd", "pflash"
    live = Domain.from_xml(live_view.to_xml())
    assert pending.pending(live, config) == []
    assert pending.pending(live, domain()) == ["uefi True -> False"]


class FakeDom:
    def __init__(self, xml):
        self.xml = xml

    def XMLDesc(self, flags):
        assert flags & libvirt.VIR_DOMAIN_XML_INACTIVE
        return self.xml

    def isActive(self):
        return True

    def name(self):
        return "web1"


class FakeConn:
    defined = None

    def defineXML(self, xml):
        self.defined = xml


def test_apply_redefines_with_the_setting_and_makes_the_stores_directory(tmp_path):
    nvram = str(tmp_path / "web1" / "nvram.fd")
    config = domain()
    conn = FakeConn()
    changes = upd.diff(config, upd.Wanted(platform=platform.normalize(boot={"efi": True}, nvram_path=nvram)),
                       VM_DIR)
    upd.apply(conn, FakeDom(config.to_xml()), changes)
    assert '<os firmware="efi">' in conn.defined and f"<nvram>{nvram}</nvram>" in conn.defined
    assert os.path.isdir(tmp_path / "web1")


def test_boot_loaders_and_caller_xml_share_one_firmware_setting(tmp_path):
    config = {"virt:images": str(tmp_path / "images"), "virt:domain_xml:firmware_roots": [str(tmp_path / "fw")]}
    settings = HostSettings(lambda key, default=None: config.get(key, default), {"id": "hv1"})
    roots = settings.roots([])
    assert roots.firmware_roots == [str(tmp_path / "fw")]
    with pytest.raises(InvalidArgument, match="add its directory to virt:domain_xml:firmware_roots"):
        roots.firmware("/usr/share/OVMF/OVMF_CODE_4M.fd")
    assert xmlpolicy.DEFAULT_FIRMWARE_ROOTS == paths.DEFAULT_FIRMWARE_ROOTS


def test_kvm_hint_dedicated_reads_the_cpu_dicts_mode_too():
    """Issue #16: ``cpu: {mode: host-passthrough}`` counts like the plain cpu_mode; another mode
    in the dict is still refused with the message naming the fix."""
    from saltvirt.domain import tuning

    def dom(mode):
        _count, section = tuning.cpu_section({"mode": mode, "maximum": 2})
        return Domain("web1", platform={"hypervisor_features:kvm-hint-dedicated": True}, sections=[section])

    xml = dom("host-passthrough").to_xml()
    assert '<cpu mode="host-passthrough"' in xml and "<hint-dedicated state=\"on\" />" in xml
    with pytest.raises(InvalidArgument, match="kvm-hint-dedicated needs the host-passthrough CPU mode"):
        dom("host-model").to_xml()
    # The dict's mode wins over a plain cpu_mode, both ways.
    refused = dom("host-model")
    refused.cpu_mode = "host-passthrough"
    with pytest.raises(InvalidArgument, match="kvm-hint-dedicated needs the host-passthrough"):
        refused.check()


def test_the_state_prediction_reads_the_cpu_dicts_mode():
    from saltvirt.provision.spec import check_values
    features = {"kvm-hint-dedicated": True}

    def spec(cpu):
        return VmSpec(name="web1", cpu=cpu, mem=512, hypervisor_features=features)

    check_values(spec({"mode": "host-passthrough", "maximum": 2}))
    with pytest.raises(InvalidArgument, match="VM web1: hypervisor_features kvm-hint-dedicated needs the host-pass"):
        check_values(spec({"mode": "host-model", "maximum": 2}))
    with pytest.raises(InvalidArgument, match="kvm-hint-dedicated needs the host-passthrough"):
        check_values(spec(2))
    # An existing VM whose cpu argument names no mode keeps its own: no refusal predicted.
    check_values(UpdateSpec(name="web1", cpu=2, hypervisor_features=features), update=True)
