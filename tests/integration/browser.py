"""Headless Chromium driven over the DevTools protocol, for the web console tests.

Opens a URL, waits (in real time) until the page's title matches ``--until`` or the noVNC
status shows a failure, waits for the VNC canvas to show something, takes a screenshot, and
prints JSON: ``{"title", "status", "canvas_lit", "waited"}``. Runs inside the lab's network
namespace (``nsenter --net=/run/netns/$LAB_NETNS python browser.py URL OUT.png``).

Chromium's ``--screenshot`` with ``--virtual-time-budget`` does not wait for WebSocket traffic,
so a loaded machine got "Connecting..." screenshots; this waits for the real thing. The protocol
runs over ``--remote-debugging-pipe`` (NUL-separated JSON on file descriptors 3 and 4): no
port, no extra client library.
"""

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1024,600", "--remote-debugging-pipe",
]

# Page state: title, noVNC's status line, and how many canvas pixels are not black.
PROBE = """
(() => {
  const status = document.getElementById('noVNC_status');
  let lit = 0;
  for (const canvas of document.querySelectorAll('canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] + data[i + 1] + data[i + 2] > 300) lit++;
    }
  }
  return JSON.stringify({title: document.title, status: status ? status.textContent : '',
                         failed: !!(status && status.classList.contains('noVNC_status_error')),
                         canvas_lit: lit});
})()
"""


class DevTools:
    def __init__(self, chromium, profile):
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire():  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=wire, pass_fds=(3, 4),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0

    def call(self, method, session=None, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self):
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self):
        with contextlib.suppress(Exception):  # already gone
            self.call("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("screenshot")
    parser.add_argument("--until", default=r"^QEMU \(", help="regex the page title must match")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--chromium", default="chromium")
    args = parser.parse_args()

    profile = tempfile.mkdtemp(prefix="chromium-")
    tools = DevTools(args.chromium, profile)
    try:
        target = tools.call("Target.createTarget", url="about:blank")["targetId"]
        session = tools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        tools.call("Page.enable", session)
        started = time.monotonic()
        tools.call("Page.navigate", session, url=args.url)
        state, matched_at = {}, None
        while time.monotonic() - started < args.timeout:
            result = tools.call("Runtime.evaluate", session, expression=PROBE, returnByValue=True)
            state = json.loads(result.get("result", {}).get("value") or "{}")
            if state.get("failed"):
                break
            if re.search(args.until, state.get("title", "")):
                matched_at = matched_at or time.monotonic()
                # connected: give the first screen updates a moment to arrive
                if state.get("canvas_lit") or time.monotonic() - matched_at > 5:
                    break
            time.sleep(0.25)
        time.sleep(0.5)  # let the compositor catch up with the last canvas update
        shot = tools.call("Page.captureScreenshot", session, format="png")
        with open(args.screenshot, "wb") as fh:
            fh.write(base64.b64decode(shot["data"]))
        state["waited"] = round(time.monotonic() - started, 2)
        print(json.dumps(state), flush=True)
    finally:
        tools.close()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
