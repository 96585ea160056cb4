"""VNC consoles on the lab: a real VNC client, VNC passwords, and the web console in Chromium.

Two VMs are created once for the module, in parallel: ``open`` (``enable_vnc=True``, the seed's
walkthrough: it gets a generated password by default) on hypervisor1 and ``locked``
(``graphics={type: vnc, password: True}``) on hypervisor2, plus a VM with a console that is never
started. Clients run inside the lab's network namespace, where
the consoles (127.0.0.2/127.0.0.3) and the master's console proxy (127.0.0.1:6080) are:
``vnc_client.py`` (vncdotool) and ``browser.py`` (headless Chromium over the DevTools protocol).

Screenshots go to ``$CONSOLE_ARTIFACTS`` (default: pytest's tmp directory).
"""

import concurrent.futures
import datetime
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from PIL import Image, ImageChops

LAB_NETNS = os.environ.get("LAB_NETNS", "svlab")
LAB_DIR = os.environ.get("LAB_DIR", "/var/lib/svlab")
HERE = os.path.dirname(os.path.abspath(__file__))
PROXY_LOG = os.path.join(LAB_DIR, "master/var/cache/salt/master/saltvirt/console/proxy.log")


def in_netns(*argv):
    return ["nsenter", f"--net=/run/netns/{LAB_NETNS}", *map(str, argv)]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    path = os.environ.get("CONSOLE_ARTIFACTS") or str(tmp_path_factory.mktemp("console"))
    os.makedirs(path, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def vms(lab):
    suffix = uuid.uuid4().hex[:6]
    names = {"open": f"vnc-{suffix}", "locked": f"vncpw-{suffix}", "stopped": f"vncoff-{suffix}"}
    lab.run("salt-run", "virt.console_proxy", "stop")  # virt.console must start it on demand
    calls = {
        "open": ("virt.init", names["open"], 1, 128, "salt://centos.qcow2", "enable_qcow=True",
                 "host=hypervisor1", "enable_vnc=True"),
        "locked": ("virt.init", names["locked"], 1, 128, "salt://centos.qcow2", "enable_qcow=True",
                   "host=hypervisor2", "graphics={type: vnc, password: True}"),
        "stopped": ("virt.init", names["stopped"], 1, 128, "salt://centos.qcow2", "enable_qcow=True",
                    "host=hypervisor1", "enable_vnc=True", "start=False", "seed=False"),
    }
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = {key: pool.submit(lab.run_json, *args) for key, args in calls.items()}
        try:
            results = {key: future.result()[1] for key, future in futures.items()}
            # The generated passwords are never returned: the caller asks for them explicitly.
            assert "vnc_password" not in json.dumps(results)
            for key in ("open", "locked"):
                results[key]["vnc_password"] = console_info(
                    lab, names[key], "show_password=True", "web=False")["password"]
            yield {key: dict(results[key], name=names[key]) for key in names}
        finally:
            cleanup = [("salt-run", "virt.console_proxy", "stop")]
            cleanup += [("salt-run", "virt.purge", name) for name in names.values()]
            for done in [pool.submit(lab.run, *args, check=False) for args in cleanup]:
                done.result()
            lab.run("salt-key", "-y", "-d", "vnc*-" + suffix, check=False)


# --------------------------------------------------------------------------- helpers


def vnc_capture(server, out, password=None):
    env = dict(os.environ, VNC_PASSWORD=password or "")
    proc = subprocess.run(in_netns(sys.executable, os.path.join(HERE, "vnc_client.py"), server, out),
                          capture_output=True, text=True, timeout=60, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"vnc_client printed no result:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1])


def text_lines(image, threshold=100):
    """Number of bands of rows holding bright pixels: lines of text on a console screen."""
    gray = image.convert("L")
    width, height = gray.size
    data = gray.tobytes()
    bands, inside = 0, False
    for y in range(height):
        lit = any(p > threshold for p in data[y * width:(y + 1) * width])
        if lit and not inside:
            bands += 1
        inside = lit
    return bands


def bright_pixels(image, threshold=100):
    return sum(p > threshold for p in image.convert("L").tobytes())


def wait_for_boot_screen(server, out, password=None, timeout=60):
    """Capture until the screen shows several lines of boot text; return the image."""
    deadline = time.monotonic() + timeout
    result, image = None, None
    while time.monotonic() < deadline:
        result = vnc_capture(server, out, password)
        if result["ok"]:
            image = Image.open(out)
            image.load()
            if text_lines(image) >= 4:
                return image
        time.sleep(1)
    raise AssertionError(f"no boot text on {server} within {timeout}s: {result}, "
                         f"{text_lines(image) if image else 0} text lines")


def chromium(url, screenshot):
    """Open ``url`` in headless Chromium inside the lab (browser.py drives it over the DevTools
    protocol and waits for the VNC connection in real time); return (page state, screenshot)."""
    proc = subprocess.run(in_netns(sys.executable, os.path.join(HERE, "browser.py"), url, screenshot),
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"browser.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    image = Image.open(screenshot)
    image.load()
    return json.loads(lines[-1]), image


def canvas_shows_console(image):
    """noVNC's canvas with a text console: mostly black with bright text. A page that failed
    to connect shows noVNC's grey background and logo instead."""
    region = image.convert("L").crop((60, 60, image.width - 24, image.height - 40))
    data = region.tobytes()
    black = sum(p < 16 for p in data) / len(data)
    return black > 0.6 and text_lines(region) >= 4, f"black {black:.2f}, {text_lines(region)} text lines"


SHOWN = "shown on the terminal of the salt-run that asked, only"


def console_info(lab, name, *args):
    """``salt-run virt.console``'s return, with the secrets it printed on the terminal put back
    where the return only says that they were shown."""
    proc, data = lab.run_json("virt.console", name, *args)
    shown = dict(re.findall(rf"^{re.escape(name)}: (.+?) \(shown here only, not returned\): (\S+)$",
                            proc.stdout, re.M))
    if "web" in data and "url" in data["web"]:
        assert data["web"]["url"] == SHOWN
        data["web"]["url"] = shown.pop("web console URL")
    if "password" in data:
        assert data["password"] == SHOWN
        data["password"] = shown.pop("VNC password")
    assert not shown, shown
    return data


def proxy_log():
    with open(PROXY_LOG) as fh:
        return fh.read()


# --------------------------------------------------------------------------- tests


def test_init_and_query_report_the_console(lab, vms):
    open_gfx = vms["open"]["graphics"][0]
    assert open_gfx["type"] == "vnc" and open_gfx["port"] >= 5900
    # the hypervisor's configured VNC address (virt:vnc:listen), reachable from the master
    assert open_gfx["listen"] == open_gfx["host"] == "127.0.0.2"
    # enable_vnc=True alone: authenticated by default
    assert open_gfx["password_set"] is True and open_gfx["local_only"] is False

    locked_gfx = vms["locked"]["graphics"][0]
    assert locked_gfx["host"] == "127.0.0.3" and locked_gfx["password_set"] is True
    password = vms["locked"]["vnc_password"]
    assert re.fullmatch(r"[A-Za-z0-9]{8}", password)

    text = lab.run("salt-run", "virt.query").stdout
    for key in ("open", "locked"):
        gfx = vms[key]["graphics"][0]
        line = rf"\n    {vms[key]['name']}\n(        .*\n)*?        Graphics: vnc - {gfx['host']}:{gfx['port']}\n"
        assert re.search(line, text), text

    # The password was returned once: nothing reports it afterwards.
    locked = vms["locked"]["name"]
    calls = [
        ("salt-run", "virt.query", "--out=json"),
        ("salt-run", "virt.vm_info", locked, "--out=json"),
        ("salt", "hypervisor2", "virt.vm_info", locked, "--out=json"),
        ("salt", "hypervisor2", "virt.get_xml", locked, "--out=json"),
        ("salt", "hypervisor2", "virt.console_info", locked, "--out=json"),
    ]
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        outputs = [proc.stdout for proc in pool.map(lambda args: lab.run(*args), calls)]
    for out in outputs:
        assert password not in out
    # Asked for explicitly (the fixture did), it came back sealed: not in the job cache.
    cached = subprocess.run(["grep", "-rlF", password, os.path.join(LAB_DIR, "master/var/cache/salt/master/jobs")],
                            capture_output=True, text=True)
    assert cached.returncode == 1 and cached.stdout == "", cached.stdout
    info = json.loads(outputs[2])["hypervisor2"][locked]
    assert info["graphics"][0]["password_set"] is True


RFB_PROBE = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
version = sock.recv(12)
sock.sendall(b"RFB 003.008\\n")
count = sock.recv(1)[0]
types = list(sock.recv(count)) if count else []
print(version.decode().strip(), *types)
"""


def rfb_security_types(host, port):
    """The security types a console offers in the RFB handshake (1: None, 2: VNC password)."""
    proc = subprocess.run(in_netns(sys.executable, "-c", RFB_PROBE, host, port),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    version, *types = proc.stdout.split()
    assert version == "RFB", proc.stdout
    return [int(t) for t in types[1:]]


def test_no_console_opens_without_its_password(vms, artifacts):
    for key in ("open", "locked"):
        gfx = vms[key]["graphics"][0]
        # A plain socket speaking RFB: "None" (1) is not offered, only VNC authentication (2).
        assert rfb_security_types(gfx["host"], gfx["port"]) == [2], key
        refused = vnc_capture(f"{gfx['host']}::{gfx['port']}", os.path.join(artifacts, f"vnc-{key}-no.png"))
        assert not refused["ok"] and "password required" in refused["error"], refused


def test_vnc_client_sees_the_boot_screen(vms, artifacts):
    gfx = vms["open"]["graphics"][0]
    out = os.path.join(artifacts, "vnc-open.png")
    image = wait_for_boot_screen(f"{gfx['host']}::{gfx['port']}", out, password=vms["open"]["vnc_password"])
    blank = Image.new(image.mode, image.size)
    assert ImageChops.difference(image, blank).getbbox() is not None
    assert bright_pixels(image) > 2000
    assert image.size[0] >= 640 and image.size[1] >= 400


def test_vnc_password_is_required(vms, artifacts):
    gfx = vms["locked"]["graphics"][0]
    server = f"{gfx['host']}::{gfx['port']}"
    out = os.path.join(artifacts, "vnc-locked.png")
    refused = vnc_capture(server, out)
    assert not refused["ok"] and "password required" in refused["error"]
    wrong = vnc_capture(server, out, password="wrong123")
    assert not wrong["ok"] and "Authentication failed" in wrong["error"]
    assert not os.path.exists(out)
    image = wait_for_boot_screen(server, out, password=vms["locked"]["vnc_password"])
    assert bright_pixels(image) > 2000


def test_console_runner_gives_a_tunnel_and_a_web_url(lab, vms):
    gfx = vms["open"]["graphics"][0]
    before = time.time()
    data = console_info(lab, vms["open"]["name"])
    assert data["hypervisor"] == "hypervisor1"
    assert (data["host"], data["port"], data["password_set"]) == ("127.0.0.2", gfx["port"], True)
    assert data["vncviewer"]["tunnel"] == f"ssh -N -L 5901:127.0.0.2:{gfx['port']} 127.0.0.2"
    assert data["vncviewer"]["viewer"] == "vncviewer localhost:5901"
    assert data["vncviewer"]["direct"] == f"vncviewer 127.0.0.2::{gfx['port']}"
    url = data["web"]["url"]
    assert url.startswith("http://127.0.0.1:6080/vnc.html#") and "token%3D" in url
    assert data["web"]["ttl"] == 300
    # The URL was printed for the caller, never returned: not in the job cache either.
    token = url.split("token%3D")[1]
    cached = subprocess.run(["grep", "-rlF", "-e", token, os.path.join(LAB_DIR, "master/var/cache/salt/master/jobs")],
                            capture_output=True, text=True)
    assert cached.returncode == 1 and cached.stdout == "", cached.stdout
    # started on demand, listening on the master's loopback only
    _p, status = lab.run_json("virt.console_proxy")
    assert status["running"] is True and status["listen"] == "127.0.0.1" and status["port"] == 6080
    assert status["pending_tokens"] >= 1
    listening = subprocess.run(in_netns("ss", "-Hltn"), capture_output=True, text=True).stdout
    assert re.search(r"\s127\.0\.0\.1:6080\s", listening) and not re.search(r"\s(0\.0\.0\.0|\*):6080\s", listening)
    # the token expires 5 minutes after it was issued
    expires = data["web"]["expires"]
    stamp = datetime.datetime.fromisoformat(expires).timestamp()
    assert before + 290 <= stamp <= time.time() + 310

    other = console_info(lab, vms["open"]["name"], "local_port=5999", "web=False")
    assert other["vncviewer"]["tunnel"].startswith("ssh -N -L 5999:127.0.0.2:")
    assert "web" not in other


def test_web_console_in_chromium_works_once(lab, vms, artifacts):
    name = vms["open"]["name"]
    url = console_info(lab, name)["web"]["url"]
    page, image = chromium(url, os.path.join(artifacts, "web-open.png"))
    assert page["title"] == f"QEMU ({name}) - noVNC", page
    assert page["status"].startswith("Connected") and page["canvas_lit"] > 2000
    shows, why = canvas_shows_console(image)
    assert shows, why

    # The same URL again: the token was used up.
    page, image = chromium(url, os.path.join(artifacts, "web-reused.png"))
    assert page["title"] == "noVNC" and "Failed to connect" in page["status"], page
    assert page["canvas_lit"] == 0
    assert not canvas_shows_console(image)[0]


def test_expired_web_console_url_is_refused(lab, vms, artifacts):
    name = vms["open"]["name"]
    data = console_info(lab, name, "ttl=1")
    assert data["web"]["ttl"] == 1
    time.sleep(2)
    page, image = chromium(data["web"]["url"], os.path.join(artifacts, "web-expired.png"))
    assert page["title"] == "noVNC" and "Failed to connect" in page["status"], page
    assert not canvas_shows_console(image)[0]
    assert f"console token for {name} expired" in proxy_log()


def test_each_url_opens_only_its_own_vm(lab, vms, artifacts):
    opened = {}
    for key in ("open", "locked"):
        name = vms[key]["name"]
        url = console_info(lab, name)["web"]["url"]
        # noVNC reads the password from the fragment, which never reaches the server.
        assert url.endswith("&password=" + vms[key]["vnc_password"]), key
        page, image = chromium(url, os.path.join(artifacts, f"web-{key}.png"))
        opened[key] = page["title"]
        shows, why = canvas_shows_console(image)
        assert shows, f"{key}: {why}"
    assert opened == {"open": f"QEMU ({vms['open']['name']}) - noVNC",
                      "locked": f"QEMU ({vms['locked']['name']}) - noVNC"}
    log = proxy_log()
    for key, address in (("open", "127.0.0.2"), ("locked", "127.0.0.3")):
        port = vms[key]["graphics"][0]["port"]
        assert re.search(rf"token for VM {vms[key]['name']} \(on hypervisor\d\) -> {address}:{port}\b", log)


def test_console_of_a_stopped_vm_is_a_clear_error(lab, vms):
    proc = lab.run("salt-run", "virt.console", vms["stopped"]["name"], check=False)
    assert proc.returncode != 0
    assert f"VM {vms['stopped']['name']} on hypervisor1 is shutoff" in proc.stdout + proc.stderr
    proc = lab.run("salt-run", "virt.console", "no-such-vm", check=False)
    assert proc.returncode != 0 and "no VM named no-such-vm" in proc.stdout + proc.stderr


def test_console_secrets_never_reach_the_event_bus(lab, vms):
    """An event reader (publisher_acl users, salt-api's /events) sees neither the password nor
    the one-time URL while an operator asks for both."""
    bin_dir = os.path.join(os.path.dirname(HERE), "..", "lab", "bin")
    listener = subprocess.Popen([os.path.join(bin_dir, "salt-run"), "state.event", "pretty=False"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)
        data = console_info(lab, vms["locked"]["name"], "show_password=True")
        time.sleep(2)
    finally:
        listener.terminate()
        bus = listener.communicate(timeout=30)[0]
    token = data["web"]["url"].split("token%3D")[1].split("&")[0]
    assert "virt.console" in bus or "salt/run/" in bus  # the listener did see the runner's job
    assert data["password"] == vms["locked"]["vnc_password"]
    assert vms["locked"]["vnc_password"] not in bus and token not in bus
