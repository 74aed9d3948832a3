#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Seed corpus of fuzz_ugpud_request (tests/fuzz/corpus/fuzz_ugpud_request/):
sessions a client really has with ugpud, in the target's input format
(fuzz_ugpud_request.c). Usage: mkcorpus_ugpud.py OUTDIR"""
import os
import struct
import sys

MAGIC = 0x64757067
HELLO, DEV_QUERY, MEM_STATS, BO_CREATE, BO_DESTROY, BO_READ, BO_WRITE, BO_QUERY, BO_PIN, \
    BO_UNPIN, BO_MIGRATE, CLIENTS, KILL, BO_MAP, BO_UNMAP, VM_CREATE, VM_DESTROY, VM_BIND, \
    VM_UNBIND, VM_QUERY, QUEUE_CREATE, QUEUE_DESTROY, SUBMIT, FENCE_WAIT, QUEUE_QUERY, \
    SESSION, RESUME, DEVICE_PM = range(1, 29)
# shared virtual memory of clients (numbered from 40, docs/daemon.md)
SVM_VM_CREATE, SVM_FAULTS, SVM_FAULT_DONE, SVM_MAP, SVM_UNMAP, FENCE_EVENTFD = range(40, 46)
seq = 0


def rec(who, op, body=b"", nfds=0, oversized=False):
    global seq
    seq += 1
    msg = struct.pack("<IHHIiII", MAGIC, op, 0, seq, 0, len(body), 0) + body
    ctl = who | (nfds << 1) | (0x20 if oversized else 0)
    return struct.pack("<BH", ctl, len(msg)) + msg


def hello(who, version=1, device=0):
    return rec(who, HELLO, struct.pack("<II32s", version, device, b"fuzz"))


def create(who, size, p0=0, p1=0, flags=0):
    return rec(who, BO_CREATE, struct.pack("<QIIII32s", size, p0, p1, flags, 0, b"bo"))


def bo(who, op, handle, arg=0, off=0, ln=0, data=b""):
    return rec(who, op, struct.pack("<IIQQ", handle, arg, off, ln) + data)


H1 = (1 << 16) | 1  # the first handle of a connection
H2 = (1 << 16) | 2
H3 = (1 << 16) | 3


def obj(who, op, handle):
    return rec(who, op, struct.pack("<II", handle, 0))


def kernels(who):
    va = 0x100000
    return (hello(who) + create(who, 65536, 1) + rec(who, VM_CREATE, struct.pack("<II32s", 0, 0, b"vm"))
            + rec(who, VM_BIND, struct.pack("<IIQQQII", H2, H1, 0, va, 65536, 0, 0))
            + rec(who, QUEUE_CREATE, struct.pack("<II32s", H2, 0, b"q"))
            + rec(who, SUBMIT, struct.pack("<IIQQQ", H3, 2, va, 65536, 7))
            + rec(who, FENCE_WAIT, struct.pack("<IIQ", H3, 0, 1))
            + rec(who, FENCE_WAIT, struct.pack("<IIQ", H3, 5, 1))
            + rec(who, FENCE_EVENTFD, struct.pack("<IIQ", H3, 0, 1))
            + rec(who, FENCE_EVENTFD, struct.pack("<IIQ", H3, 0, 9))
            + rec(who, SUBMIT, struct.pack("<IIQQQ", H3, 1, va + (1 << 20), 4096, 0))
            + obj(who, QUEUE_QUERY, H3) + obj(who, VM_QUERY, H2)
            + rec(who, VM_UNBIND, struct.pack("<IIQQQII", H2, 0, 0, va, 65536, 0, 0))
            + obj(who, VM_DESTROY, H2) + obj(who, QUEUE_DESTROY, H3) + obj(who, VM_DESTROY, H2))
def svm(who):
    """A mirror VM: a kernel faults in its span (the faults wait for the
    client), a fence wait ends early, the faults are fetched, a staging BO
    is mapped for the range, the faults answered (one wrongly), the map
    dropped; then a plain VM asked for faults, a mirror VM create without
    the flag."""
    va = 0x40000000
    mirror = struct.pack("<II32sQQ", 1, 0, b"svm", 0x10000, 1 << 40)
    fault = struct.pack("<QIIIi", va, 0, 0, 1, 0)
    return (hello(who) + rec(who, SVM_VM_CREATE, mirror)
            + rec(who, QUEUE_CREATE, struct.pack("<II32s", H1, 0, b"q"))
            + rec(who, SUBMIT, struct.pack("<IIQQQ", H2, 1, va, 65536, 0))
            + rec(who, FENCE_WAIT, struct.pack("<IIQ", H2, 50, 1))
            + obj(who, SVM_FAULTS, H1)
            + create(who, 65536, 1, 2)
            + rec(who, SVM_MAP, struct.pack("<IIQQII", H1, H3, va, 65536, 1, 0))
            + rec(who, SVM_FAULT_DONE, struct.pack("<II", H1, 1) + fault)
            + rec(who, SVM_FAULT_DONE, struct.pack("<II", H1, 2) + fault)
            + rec(who, FENCE_WAIT, struct.pack("<IIQ", H2, 50, 1))
            + rec(who, SVM_UNMAP, struct.pack("<IIQQII", H1, 0, va, 65536, 0, 0))
            + rec(who, VM_CREATE, struct.pack("<II32s", 0, 0, b"vm")) + obj(who, SVM_FAULTS, (1 << 16) | 4)
            + rec(who, SVM_VM_CREATE, struct.pack("<II32sQQ", 0, 0, b"x", 0, 0))
            + obj(who, QUEUE_DESTROY, H2) + obj(who, VM_DESTROY, H1))


seeds = {
    "hello": hello(0),
    "bad-version": hello(0, version=2),
    "before-hello": create(0, 4096),
    "bo-life": hello(0) + create(0, 8192, 1, 2) + bo(0, BO_WRITE, H1, off=100, ln=5, data=b"hello")
    + bo(0, BO_READ, H1, off=100, ln=5) + bo(0, BO_QUERY, H1) + bo(0, BO_PIN, H1)
    + bo(0, BO_UNPIN, H1) + bo(0, BO_MIGRATE, H1, arg=2) + bo(0, BO_DESTROY, H1),
    "map": hello(1) + create(1, 65536, 1, 2) + bo(1, BO_MAP, H1) + bo(1, BO_MIGRATE, H1, arg=1)
    + bo(1, BO_UNMAP, H1) + bo(1, BO_MIGRATE, H1, arg=1),
    "cross-handles": hello(0) + hello(1) + create(0, 4096) + bo(1, BO_READ, H1, ln=16)
    + bo(1, BO_DESTROY, H1),
    "quota": hello(1) + create(1, 12 << 20) + create(1, 8 << 20) + create(1, 8 << 20, 2),
    "admin": hello(0) + hello(1) + rec(0, CLIENTS) + rec(1, CLIENTS)
    + rec(0, KILL, struct.pack("<II", 2, 0)) + create(1, 4096),
    "kernels": kernels(0),
    "kernels-left-behind": kernels(1)[:-40] + hello(0) + obj(0, VM_DESTROY, H2),
    "stats": hello(0) + rec(0, DEV_QUERY) + rec(0, MEM_STATS),
    "fds-and-oversized": hello(0) + rec(0, MEM_STATS, nfds=3) + rec(0, BO_WRITE, oversized=True),
    # sessions: the token, a resume of a session that is not detached, a
    # resume after a hello
    "session": hello(0) + rec(0, SESSION) + rec(1, RESUME, struct.pack("<IIQ32s", 1, 0, 12345, b"r"))
    + rec(0, RESUME, struct.pack("<IIQ32s", 1, 0, 1, b"r")),
    # host suspend for all clients (the target flips the gate for suspend
    # and resume): requests refused while suspended, an admin's prepare and
    # cancel, a non-admin refused
    "device-pm": hello(0) + hello(1) + create(1, 65536, 1, 2)
    + rec(0, DEVICE_PM, struct.pack("<II", 1, 0)) + rec(0, DEVICE_PM, struct.pack("<II", 4, 0))
    + rec(0, DEVICE_PM, struct.pack("<II", 2, 0)) + bo(1, BO_READ, H1, ln=16) + bo(1, BO_QUERY, H1)
    + rec(0, DEVICE_PM, struct.pack("<II", 3, 0)) + bo(1, BO_READ, H1, ln=16)
    + rec(1, DEVICE_PM, struct.pack("<II", 1, 0)) + rec(0, DEVICE_PM, struct.pack("<II", 9, 5)),
    "svm": svm(0),
    # a client that leaves its mirror VM, faults and map to its release
    "svm-left-behind": svm(1)[:-60],
}
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)
print(f"{len(seeds)} seeds in {out}")
