"""A tenant's minion speaking to the lab's master the way any minion can: a key the master
accepted (as it accepts a seeded VM's) and Salt's own request channel.

Run inside the lab's network namespace::

    tenant_minion.py CONFIG_DIR keys            # make the key pair (prints the public key)
    tenant_minion.py CONFIG_DIR events JSON     # send [{tag, data}, ...] as one batch
    tenant_minion.py CONFIG_DIR serve           # the same for each line of stdin, connected
                                                # beforehand (prints "ready", then "sent" each time)

A batch is the form salt-syndic forwards its master's events in: the master puts each event on
its bus with the tag and data as sent, ``data['id']`` included.
"""

import json
import os
import sys

import salt.channel.client
import salt.config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def _opts(config_dir):
    opts = salt.config.minion_config(os.path.join(config_dir, "minion"))
    # What a running minion works out when it connects (its master's request port).
    opts["master_ip"] = opts["master"]
    opts["master_uri"] = f"tcp://{opts['master']}:{opts['master_port']}"
    return opts


def main(argv):
    config_dir, action = argv[1], argv[2]
    opts = _opts(config_dir)
    if action == "keys":
        os.makedirs(opts["pki_dir"], mode=0o700, exist_ok=True)
        if not os.path.exists(os.path.join(opts["pki_dir"], "minion.pem")):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            with open(os.path.join(opts["pki_dir"], "minion.pem"), "wb") as fh:
                fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
            with open(os.path.join(opts["pki_dir"], "minion.pub"), "wb") as fh:
                fh.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
        with open(os.path.join(opts["pki_dir"], "minion.pub")) as fh:
            print(fh.read())
        return 0
    if action == "events":
        load = {"cmd": "_minion_event", "id": opts["id"], "events": json.loads(argv[3])}
        with salt.channel.client.ReqChannel.factory(opts) as channel:
            print(json.dumps(channel.send(load, timeout=60)))
        return 0
    if action == "serve":
        with salt.channel.client.ReqChannel.factory(opts) as channel:
            channel.send({"cmd": "_minion_event", "id": opts["id"], "events": []}, timeout=60)  # signed in
            print("ready", flush=True)
            for line in sys.stdin:
                channel.send({"cmd": "_minion_event", "id": opts["id"], "events": json.loads(line)}, timeout=60)
                print("sent", flush=True)
        return 0
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
