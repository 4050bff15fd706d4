#!/usr/bin/env python3
"""Prints the entries of src/reactor/event_loop/resp/command_table.rs for
the commands named on the command line, from what a running redis-server
(7.0, at 127.0.0.1:$PORT, default 6379) says of them in COMMAND INFO and
COMMAND DOCS. Usage: scripts/command_table.py get set ... > entries.rs
"""
import os, socket, sys

def call(sock, *args):
    msg = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args))
    sock.sendall(msg)
    return read(sock.makefile("rb"))

def read(f):
    line = f.readline()[:-2]
    t, rest = line[:1], line[1:]
    if t in b"+-":
        return rest.decode()
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [read(f) for _ in range(n)]
    raise ValueError(line)

def rs(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

def main():
    port = int(os.environ.get("PORT", "6379"))
    for name in sys.argv[1:]:
        s = socket.create_connection(("127.0.0.1", port))
        info = call(s, "COMMAND", "INFO", name)[0]
        s.close()
        s = socket.create_connection(("127.0.0.1", port))
        docs = call(s, "COMMAND", "DOCS", name)
        s.close()
        d = dict(zip(docs[1][0::2], docs[1][1::2]))
        _, arity, flags, first, last, step, acl = info[:7]
        print("    CommandInfo {")
        print(f"        name: {rs(name)},")
        print(f"        arity: {arity},")
        print("        flags: &[" + ", ".join(rs(x) for x in flags) + "],")
        print(f"        first_key: {first},")
        print(f"        last_key: {last},")
        print(f"        step: {step},")
        print("        acl: &[" + ", ".join(rs(x) for x in acl) + "],")
        print(f"        summary: {rs(d.get('summary', ''))},")
        print(f"        since: {rs(d.get('since', ''))},")
        print(f"        group: {rs(d.get('group', ''))},")
        print(f"        complexity: {rs(d.get('complexity', ''))},")
        print("    },")

main()
