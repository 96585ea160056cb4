"""A real VNC client for the console tests (vncdotool): capture one screen, print JSON.

Runs inside the lab's network namespace (the consoles listen on its 127.0.0.N addresses):

    nsenter --net=/run/netns/$LAB_NETNS python vnc_client.py HOST::PORT OUT.png

The password, if any, comes from the environment variable VNC_PASSWORD (not argv: ps shows it).
Prints ``{"ok": true}`` or ``{"ok": false, "error": "..."}``; exits 0 either way.
"""

import json
import os
import sys
import warnings

warnings.simplefilter("ignore")  # vncdotool's DES use warns under recent cryptography

from vncdotool import api  # noqa: E402


def main(server, out):
    password = os.environ.get("VNC_PASSWORD") or None
    result = {"ok": False}
    try:
        client = api.connect(server, password=password, timeout=20)
        client.captureScreen(out)
        result = {"ok": True}
        client.disconnect()  # only after success: on a refused connection it would wait
    except Exception as exc:  # report every failure the same way: as data
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        api.shutdown()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
