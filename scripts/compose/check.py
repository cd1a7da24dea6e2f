#!/usr/bin/env python3
"""The JSON side of scripts/compose-test.sh: compares what the running stack shows
(RabbitMQ's management API, the archive's lines, the relay's answers) with what the
repository says. Standard library only.
Each subcommand prints what it checked and exits 1 saying what differs."""

import argparse
import base64
import json
import sys
import urllib.error
import urllib.parse
import urllib.request


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def api(base, path, user="guest", password="guest"):
    req = urllib.request.Request(base.rstrip("/") + "/api/" + path)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def q(name):
    return urllib.parse.quote(name, safe="")


def topology(args):
    """Every exchange, queue and binding of definitions.json is on the broker, with the
    same type, durability and arguments; with --pristine, nothing has connected yet."""
    defs = json.load(open(args.definitions))
    problems = []
    for ex in defs.get("exchanges", []):
        try:
            got = api(args.api, f"exchanges/{q(ex['vhost'])}/{q(ex['name'])}")
        except urllib.error.HTTPError as e:
            problems.append(f"exchange {ex['name']}: {e.code} from the management API")
            continue
        for key in ("type", "durable", "auto_delete", "internal", "arguments"):
            if got.get(key) != ex.get(key):
                problems.append(
                    f"exchange {ex['name']}: {key} is {got.get(key)!r}, definitions.json says {ex.get(key)!r}"
                )
    for qu in defs.get("queues", []):
        try:
            got = api(args.api, f"queues/{q(qu['vhost'])}/{q(qu['name'])}")
        except urllib.error.HTTPError as e:
            problems.append(f"queue {qu['name']}: {e.code} from the management API")
            continue
        for key in ("durable", "auto_delete", "arguments"):
            if got.get(key) != qu.get(key):
                problems.append(
                    f"queue {qu['name']}: {key} is {got.get(key)!r}, definitions.json says {qu.get(key)!r}"
                )
    have = {
        (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in api(args.api, "bindings")
    }
    for b in defs.get("bindings", []):
        key = (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        if key not in have:
            problems.append(f"binding {key} is missing")
    if args.pristine:
        conns = api(args.api, "connections")
        if conns:
            problems.append(
                f"{len(conns)} connection(s) already open: the topology could come from a client, not from definitions.json"
            )
    if problems:
        fail("the broker's topology differs from definitions.json:\n  " + "\n  ".join(problems))
    print(
        f"broker has every object of definitions.json: {len(defs.get('exchanges', []))} exchanges, "
        f"{len(defs.get('queues', []))} queues, {len(defs.get('bindings', []))} bindings"
        + (", and no client has connected yet" if args.pristine else "")
    )


def connections(args):
    """The named connections (client-provided names) include every expected prefix."""
    names = [
        (c.get("client_properties") or {}).get("connection_name", "")
        for c in api(args.api, "connections")
    ]
    missing = [p for p in args.expect if not any(n.startswith(p) for n in names)]
    if missing:
        fail(f"no connection named {missing}; open connections: {names}")
    print(f"named connections: {sorted(n for n in names if n)}")


def consumers(args):
    """A queue has at least one consumer (the worker's liveness)."""
    got = api(args.api, f"queues/%2F/{q(args.queue)}")
    if not got.get("consumers"):
        fail(f"queue {args.queue} has no consumer")
    print(f"{args.queue}: {got['consumers']} consumer(s)")


def archived(args):
    """Every event of --ids (lines `<id> <type>`, `-` for an answer without an id)
    appears exactly once as a JSON line of the archive files read from stdin, with that
    type; every line parses."""
    want = [line.split() for line in open(args.ids) if line.strip()]
    by_id = {}
    by_type = {}
    for n, line in enumerate(sys.stdin, 1):
        line = line.strip()
        if not line:
            continue
        try:
            ev = json.loads(line)
        except json.JSONDecodeError as e:
            fail(f"archive line {n} is not JSON ({e}): {line[:120]}")
        by_id.setdefault(ev.get("id"), []).append(ev.get("type"))
        by_type[ev.get("type")] = by_type.get(ev.get("type"), 0) + 1
    problems = []
    for event_id, typ in want:
        if event_id == "-":
            # CometChat's before_message is answered `{}`: found by its type.
            if not by_type.get(typ):
                problems.append(f"no event of type {typ}")
        elif event_id not in by_id:
            problems.append(f"{event_id} ({typ}) not archived")
        elif len(by_id[event_id]) > 1:
            fail(f"{event_id} archived {len(by_id[event_id])} times")
        elif by_id[event_id] != [typ]:
            problems.append(f"{event_id} archived with type {by_id[event_id][0]}, expected {typ}")
    if problems:
        if args.quiet:
            sys.exit(1)
        fail(f"{len(problems)} of {len(want)} events not in the archive as expected: {problems}")
    if args.quiet:
        return
    print(f"all {len(want)} events archived once, with their types, as JSON lines ({sum(by_type.values())} lines in all)")


def response_id(args):
    """The event id from `hookrelay send` output (`200 {...json...}`), `-` when the
    answer carries none (CometChat's before_message gets `{}`)."""
    status, _, body = sys.stdin.read().strip().partition(" ")
    if status != "200":
        fail(f"answered {status} {body}")
    answer = json.loads(body)
    if answer.get("duplicate"):
        fail(f"answered as a duplicate: {body}")
    print(answer.get("id", "-"))


def main():
    p = argparse.ArgumentParser(description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("topology")
    t.add_argument("--api", required=True)
    t.add_argument("--definitions", required=True)
    t.add_argument("--pristine", action="store_true")
    t.set_defaults(f=topology)
    c = sub.add_parser("connections")
    c.add_argument("--api", required=True)
    c.add_argument("--expect", action="append", required=True)
    c.set_defaults(f=connections)
    k = sub.add_parser("consumers")
    k.add_argument("--api", required=True)
    k.add_argument("--queue", required=True)
    k.set_defaults(f=consumers)
    a = sub.add_parser("archived")
    a.add_argument("--ids", required=True)
    a.add_argument("--quiet", action="store_true")
    a.set_defaults(f=archived)
    r = sub.add_parser("response-id")
    r.set_defaults(f=response_id)
    args = p.parse_args()
    args.f(args)


if __name__ == "__main__":
    main()
