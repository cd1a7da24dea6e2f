#!/usr/bin/env python3
"""Regenerates tests/fixtures/vectors/standard-webhooks.json: signatures over the
standard-webhooks fixtures made by the official `standardwebhooks` library (PyPI), an
implementation hookrelay did not write. The Rust tests (crates/hookrelay-vendors/tests/
standard_webhooks.rs) check hookrelay's verifier against them; they never run Python.

    python3 -m venv /tmp/sw && /tmp/sw/bin/pip install standardwebhooks==1.1.0
    /tmp/sw/bin/python scripts/gen-standard-webhooks-vectors.py

Fixed inputs (secrets, ids, the timestamp 1791969697 = 2026-10-14T09:21:37Z, the
fixtures' clock), so a rerun with the same library version writes the same file.
"""
import base64
import json
import pathlib
from datetime import datetime, timezone
from importlib.metadata import version

from standardwebhooks.webhooks import Webhook

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "vectors" / "standard-webhooks.json"

# The demo secret of a standard-webhooks source (also the forward worker's demo secret).
DEMO = "whsec_ZGVtby1mb3J3YXJkLXNpZ25pbmcta2V5LWNoYW5nZS1tZQ=="
# A second secret, as during a rotation, and one nobody configured.
ROTATED = "whsec_" + base64.b64encode(b"hookrelay-rotated-standard-webhooks-key").decode()
STRANGER = "whsec_" + base64.b64encode(b"a-key-no-source-of-ours-holds").decode()
TS = 1791969697
WHEN = datetime.fromtimestamp(TS, tz=timezone.utc)


def sign(secret, msg_id, body, ts=WHEN):
    return Webhook(secret).sign(msg_id=msg_id, timestamp=ts, data=body)


def headers(msg_id, ts, sig, prefix="webhook"):
    return {
        "Content-Type": "application/json",
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(ts),
        f"{prefix}-signature": sig,
    }


cases = []
for f in sorted((FIXTURES / "standard-webhooks").glob("*.json")):
    body = f.read_text()
    name = f.stem
    msg_id = f"msg_{name}"
    sig = sign(DEMO, msg_id, body)
    rel = f"standard-webhooks/{f.name}"
    cases.append({"name": f"{name}: signed", "file": rel, "secrets": [DEMO],
                  "headers": headers(msg_id, TS, sig), "accept": True})
    cases.append({"name": f"{name}: svix-* spelling", "file": rel, "secrets": [DEMO],
                  "headers": headers(msg_id, TS, sig, "svix"), "accept": True})
    # A sender mid-rotation signs with both keys; the source knows only the new one.
    both = sign(ROTATED, msg_id, body) + " " + sig
    cases.append({"name": f"{name}: two signatures, one matching", "file": rel,
                  "secrets": [DEMO], "headers": headers(msg_id, TS, both), "accept": True})
    # The source accepts either of two secrets; the sender uses the second.
    cases.append({"name": f"{name}: rotation, second secret", "file": rel,
                  "secrets": [ROTATED, DEMO], "headers": headers(msg_id, TS, sig),
                  "accept": True})
    cases.append({"name": f"{name}: unknown secret", "file": rel, "secrets": [DEMO],
                  "headers": headers(msg_id, TS, sign(STRANGER, msg_id, body)),
                  "accept": False})
    cases.append({"name": f"{name}: signed for another id", "file": rel, "secrets": [DEMO],
                  "headers": headers(msg_id + "x", TS, sig), "accept": False})
    cases.append({"name": f"{name}: signed at another time", "file": rel, "secrets": [DEMO],
                  "headers": headers(msg_id, TS + 1, sig), "accept": False})
    cases.append({"name": f"{name}: v2 entry only", "file": rel, "secrets": [DEMO],
                  "headers": headers(msg_id, TS, "v2," + sig.split(",", 1)[1]),
                  "accept": False})

# The library's own checks agree (with its clock at the vectors' time).
import standardwebhooks.webhooks as wh  # noqa: E402

class _Frozen(datetime):
    @classmethod
    def now(cls, tz=None):
        return WHEN

wh.datetime = _Frozen
for c in cases:
    body = (FIXTURES / c["file"]).read_text()
    h = {k.replace("svix-", "webhook-"): v for k, v in c["headers"].items()}
    ok = False
    for s in c["secrets"]:
        try:
            Webhook(s).verify(body, h)
            ok = True
        except Exception:
            pass
    assert ok == c["accept"], c["name"]

OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(json.dumps({
    "description": "Standard Webhooks signatures made by the official library; regenerate "
                   "with scripts/gen-standard-webhooks-vectors.py. `accept`: whether a "
                   "source holding `secrets` must accept the request at `now`.",
    "library": f"standardwebhooks {version('standardwebhooks')} (PyPI)",
    "now": TS,
    "cases": cases,
}, indent=2, ensure_ascii=False) + "\n")
print(f"{OUT.relative_to(ROOT)}: {len(cases)} cases")
