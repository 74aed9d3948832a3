#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The VM stage: boot a QEMU guest with two devices bound to vfio-pci and run
the guest test programs (tests/vm/guest/vm_*.c) in it.

Guest: Debian's linux-image 6.1 (uncompressed vmlinux, PVH boot) under TCG,
q35 + intel-iommu (intremap, caching-mode) with intel_iommu=on, two
ivshmem-plain devices whose BAR2 is a host file (memory-backend-file), each on
its own pcie-root-port so each can be hot-unplugged on its own (shm0, 64 MiB,
shared by the guest tests in slices; shm1, 32 MiB, for the driver's own
hot-unplug test), and QEMU's edu DMA device. The initramfs holds busybox, the
six VFIO modules, tests/vm/init and the test programs. The kernel command line
tells init which root port holds which ivshmem (ugpu_shm_ports=), so it can
export their BDFs by role (UGPU_VM_SHM, UGPU_VM_SHM1) whatever bus numbers the
guest assigns.

Host side, driven by "@@" lines on the guest console (see tests/vm/init):
  @@HOST unplug <role>              role ivshmem (shm0), ivshmem1 (shm1) or edu:
                                    QMP device_del; DEVICE_DELETED must follow;
                                    the outcome is sent back on the guest's
                                    ttyS1 ("deleted <id> <secs>" / "timeout <id>")
  @@HOST check-vram <off> <len> <seed> [<role>]
                                    after QEMU exits, the memory-backend file of
                                    <role> (default ivshmem) must hold
                                    vm_pattern(seed) at [off, off+len)
Before boot the host writes vm_pattern(VM_SHM_HOST_SEED) at VM_SHM_HOST_OFF of
shm0's file.

Prints progress as it goes and ends with "vm: N passed, N failed"; exits
non-zero on any failure, including when QEMU cannot be installed or booted.

usage: run.py --bin-dir DIR --work-dir DIR [--tests a,b] [--timeout S]
"""
import argparse
import array
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import gzip

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmfetch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = time.monotonic()

# Must match tests/vm/guest/vm_test.h.
SHM_SIZE = 64 << 20
SHM_HOST_OFF = 32 << 20
SHM_HOST_LEN = 1 << 20
SHM_HOST_SEED = 0x484F5354
MASK = (1 << 64) - 1

SHM1_SIZE = 32 << 20     # VM_SHM1_SIZE in vm_test.h

# QEMU device ids the guest refers to by role in @@HOST requests.
DEVICE_IDS = {"ivshmem": "shm0", "ivshmem1": "shm1", "edu": "edu0"}

# The ivshmem devices: role -> (QEMU id, memory-backend id, file in the work
# dir, size, root port id, root port address on pcie.0). The order is the
# order of ugpu_shm_ports= on the kernel command line, which tests/vm/init
# maps to UGPU_VM_SHM and UGPU_VM_SHM1.
SHM_DEVICES = {
    "ivshmem": ("shm0", "vram0", "vram.bin", SHM_SIZE, "rp1", "01.0"),
    "ivshmem1": ("shm1", "vram1", "vram1.bin", SHM1_SIZE, "rp2", "02.0"),
}

BOOT_BOUND = 60          # seconds from QEMU start to @@INIT (it takes ~3 s)
BOOT_NOTE_S = 5          # not on a terminal: a boot progress line this often
UNPLUG_BOUND = 15        # seconds from device_del to DEVICE_DELETED
RUN_MARGIN = 15          # poweroff and slack on top of boot + the tests' bounds
RUN_BOUND_MAX = 285      # the QEMU run, even when every test hangs: the stage
                         # must end within 5 minutes


def ts():
    return f"[{time.monotonic() - T0:6.1f}s]"


def say(msg):
    print(f"vm: {ts()} {msg}", flush=True)


class BootProgress:
    """The guest's boot as it goes, until its init reports (a few seconds
    usually, up to BOOT_BOUND on a loaded machine): on a terminal, one line
    redrawn in place (time against the bound, the console's last line),
    cleared before anything else is printed; in a log, a line every
    BOOT_NOTE_S seconds."""

    def __init__(self, bound):
        self.bound = bound
        self.tty = sys.stdout.isatty()
        self.last_note = 0.0
        self.drawn = False
        self.console = ""

    def line(self, text):
        if text.strip():
            self.console = text.strip()[:60]

    def tick(self, elapsed):
        if self.tty:
            width = 20
            fill = min(width, int(width * elapsed / self.bound))
            sys.stdout.write(f"\r\033[Kvm: {ts()} booting [{'#' * fill}{'.' * (width - fill)}] "
                             f"{elapsed:5.1f}s of {self.bound}s  {self.console}")
            sys.stdout.flush()
            self.drawn = True
        elif elapsed - self.last_note >= BOOT_NOTE_S:
            self.last_note = elapsed
            say(f"booting: {elapsed:.0f}s of {self.bound}s; console: {self.console or '(nothing yet)'}")

    def done(self):
        if self.drawn:
            sys.stdout.write("\r\033[K")
            sys.stdout.flush()
            self.drawn = False


def loud_fail(msg):
    """A failure of the stage itself (no QEMU, no kernel): never a skip."""
    bar = "vm: " + "!" * 72
    print(f"{bar}\nvm: [{time.monotonic() - T0:6.1f}s] FAIL: {msg}\n"
          f"vm: the VM stage cannot run, so it FAILS (it never skips)\n{bar}", flush=True)


def pattern_words(seed, n):
    """vm_pattern(seed, i) for i in [0, n), as an array of uint64."""
    out = array.array("Q", bytes(8 * n))
    for i in range(n):
        v = ((i + 1) * 0x9E3779B97F4A7C15 + seed) & MASK
        out[i] = v ^ (v >> 29)
    return out


# --- initramfs --------------------------------------------------------------

class Cpio:
    """Minimal newc writer: the host may have no cpio (busybox's would do too,
    but this keeps the file list explicit and the archive reproducible)."""

    def __init__(self):
        self.chunks = []
        self.ino = 1
        self.dirs = set()

    def _entry(self, name, mode, data=b""):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{x:08x}" for x in (
            self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        blob = hdr.encode() + name_b
        blob += b"\0" * (-len(blob) % 4)
        blob += data + b"\0" * (-len(data) % 4)
        self.chunks.append(blob)

    def mkdir(self, path):
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i])
            if p and p not in self.dirs:
                self.dirs.add(p)
                self._entry(p, stat.S_IFDIR | 0o755)

    def add(self, path, data, mode=0o755):
        path = path.strip("/")
        if "/" in path:
            self.mkdir(os.path.dirname(path))
        self._entry(path, stat.S_IFREG | mode, data)

    def add_file(self, path, src, mode=0o755):
        with open(src, "rb") as f:
            self.add(path, f.read(), mode)

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return b"".join(self.chunks)


def shared_libs(binary):
    """Paths of the shared objects (and loader) a dynamic binary needs; [] if static."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0 or "not a dynamic executable" in out.stdout + out.stderr:
        return []
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            p = line.split("=>")[1].split("(")[0].strip()
        else:
            p = line.split("(")[0].strip()
        if p.startswith("/"):
            libs.append(p)
    return libs


def build_initramfs(kdir, bin_dir, tests, out):
    c = Cpio()
    for d in ("bin", "mods", "proc", "sys", "dev", "tmp", "etc"):
        c.mkdir(d)
    c.add_file("init", os.path.join(HERE, "init"))
    c.add_file("bin/busybox", vmfetch.BUSYBOX)
    for m in vmfetch.MODULES:
        name = os.path.basename(m) + ".ko"
        c.add_file(f"mods/{name}", os.path.join(kdir, "mods", name), 0o644)
    libs = set()
    missing = []
    for name, _ in tests:
        b = os.path.join(bin_dir, f"vm_{name}")
        if not os.path.exists(b):
            missing.append(name)
            continue
        c.add_file(f"bin/vm_{name}", b)
        libs.update(shared_libs(b))
    # Fallback for a binary that could not be linked statically: its shared
    # libraries and the dynamic loader go in at their host paths.
    for lib in sorted(libs):
        c.add_file(lib, os.path.realpath(lib))
    c.add("etc/vm-tests", "".join(f"{n} {t}\n" for n, t in tests).encode(), 0o644)
    data = c.finish()
    with open(out, "wb") as f:
        f.write(gzip.compress(data, compresslevel=1))
    return missing, sorted(libs)


# --- QMP --------------------------------------------------------------------

class Qmp:
    """QMP client: commands are fire-and-forget, events are collected by a
    reader thread and waited for with a bound."""

    def __init__(self, path, bound=10.0):
        deadline = time.monotonic() + bound
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.settimeout(bound)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        self.cv = threading.Condition()
        self.events = []
        json.loads(self.f.readline())  # greeting
        self._send("qmp_capabilities")
        json.loads(self.f.readline())
        self.s.settimeout(None)  # the reader blocks; QEMU's exit closes the socket
        threading.Thread(target=self._reader, daemon=True).start()

    def _send(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()

    def _reader(self):
        try:
            for line in self.f:
                try:
                    m = json.loads(line)
                except ValueError:
                    continue
                if "event" in m:
                    with self.cv:
                        self.events.append((time.monotonic(), m))
                        self.cv.notify_all()
                elif "error" in m:
                    say(f"QMP error: {m['error']}")
        except OSError:
            pass

    def cmd(self, name, **args):
        say(f"QMP {name} {json.dumps(args)}")
        self._send(name, **args)

    def wait_event(self, pred, timeout):
        """First event satisfying pred within timeout: (time, event) or None."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for t, e in self.events:
                    if pred(e):
                        return t, e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class GuestChannel:
    """Host -> guest lines on the guest's ttyS1 (a QEMU unix socket chardev).
    What the guest's tty echoes back is read and dropped."""

    def __init__(self, path, bound=10.0):
        deadline = time.monotonic() + bound
        while True:
            self.s = socket.socket(socket.AF_UNIX)
            try:
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        try:
            while self.s.recv(4096):
                pass
        except OSError:
            pass

    def reply(self, line):
        with self.lock:
            try:
                self.s.sendall((line + "\n").encode())
            except OSError as e:
                say(f"guest channel: cannot send {line!r}: {e}")

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


# --- the run ----------------------------------------------------------------

class Result:
    def __init__(self, name):
        self.name = name
        self.rc = None
        self.secs = None
        self.host_failures = []
        self.vram_checks = []
        self.unplugs = []

    def host_fail(self, msg):
        say(f"[{self.name}] HOST CHECK FAILED: {msg}")
        self.host_failures.append(msg)


def read_tests(selected, path):
    tests = []
    with open(path) as f:
        for line in f:
            line = line.split("#")[0].split()
            if not line:
                continue
            tests.append((line[0], int(line[1])))
    if selected:
        want = selected.split(",")
        unknown = [w for w in want if w not in [n for n, _ in tests]]
        if unknown:
            raise SystemExit(f"vm: unknown test(s) {unknown}; tests.list has "
                             f"{[n for n, _ in tests]}")
        tests = [t for t in tests if t[0] in want]
    return tests


def qemu_cmd(qemu, kdir, initrd, work_dir, qmp_path, chan_path, append):
    shm = []
    for n, (dev, mem, fname, size, port, addr) in enumerate(SHM_DEVICES.values(), 1):
        shm += [
            "-object", f"memory-backend-file,id={mem},size={size},share=on,"
                       f"mem-path={os.path.join(work_dir, fname)}",
            "-device", f"pcie-root-port,id={port},slot={n},chassis={n},addr={addr}",
            "-device", f"ivshmem-plain,id={dev},memdev={mem},bus={port}",
        ]
    return [
        qemu, "-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "512",
        "-machine", "q35,kernel-irqchip=split",
        "-nodefaults", "-display", "none", "-no-user-config", "-no-reboot",
        # ttyS0: the console the host reads; ttyS1: host -> guest replies.
        "-serial", "stdio", "-serial", f"unix:{chan_path},server=on,wait=off",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        *shm,
        "-device", f"edu,id={DEVICE_IDS['edu']},addr=04.0",
        "-kernel", os.path.join(kdir, "vmlinux"),
        "-initrd", initrd,
        "-append", append,
    ]


def prepare_vram(work_dir):
    """Fresh memory-backend files: zeros, plus the host's pattern in shm0's."""
    for role, (_, _, fname, size, _, _) in SHM_DEVICES.items():
        with open(os.path.join(work_dir, fname), "wb") as f:
            f.truncate(size)
            if role == "ivshmem":
                f.seek(SHM_HOST_OFF)
                f.write(pattern_words(SHM_HOST_SEED, SHM_HOST_LEN // 8).tobytes())


def check_vram(work_dir, res):
    for role, off, length, seed in res.vram_checks:
        dev, _, fname, size, _, _ = SHM_DEVICES[role]
        if off % 8 or length % 8 or off + length > size:
            res.host_fail(f"check-vram {dev} {off:#x}+{length:#x}: bad range")
            continue
        with open(os.path.join(work_dir, fname), "rb") as f:
            f.seek(off)
            got = array.array("Q", f.read(length))
        want = pattern_words(seed, length // 8)
        if got == want:
            say(f"[{res.name}] host: {dev}'s memory-backend file holds the guest's pattern at "
                f"{off:#x}+{length:#x} ({length >> 10} KiB)")
        else:
            bad = [i for i in range(len(want)) if i >= len(got) or got[i] != want[i]]
            res.host_fail(f"{dev}'s memory-backend file at {off:#x}+{length:#x}: {len(bad)} of "
                          f"{len(want)} words differ (first at word {bad[0]})")


def run(args):
    tests = read_tests(args.tests, args.list)
    bound = args.timeout or (BOOT_BOUND + sum(t for _, t in tests) + RUN_MARGIN)
    if not args.timeout and bound > RUN_BOUND_MAX:
        say(f"FAIL: {args.list}: boot bound {BOOT_BOUND}s + the tests' timeouts "
            f"{sum(t for _, t in tests)}s + {RUN_MARGIN}s = {bound}s, over the stage's "
            f"{RUN_BOUND_MAX}s: shorten the timeouts (tests take about a second each)")
        print(f"vm: 0 passed, {len(tests)} failed", flush=True)
        return 1
    os.makedirs(args.work_dir, exist_ok=True)
    say("checking QEMU, busybox and the cached guest kernel")
    try:
        qemu, _ = vmfetch.ensure_host_tools()
        kdir = vmfetch.ensure_kernel()
    except (vmfetch.FetchError, subprocess.CalledProcessError, OSError) as e:
        loud_fail(f"cannot set up the VM: {e}")
        print(f"vm: 0 passed, {len(tests)} failed", flush=True)
        return 1
    say(f"kernel {os.path.basename(kdir)}, {qemu}")

    initrd = os.path.join(args.work_dir, "initramfs.gz")
    missing, libs = build_initramfs(kdir, args.bin_dir, tests, initrd)
    say(f"initramfs {os.path.getsize(initrd) >> 10} KiB, tests: {' '.join(n for n, _ in tests)}"
        + (f"; shared libs copied: {' '.join(libs)}" if libs else "; all static"))
    for m in missing:
        say(f"[{m}] vm_{m} not built in {args.bin_dir} (it will FAIL)")
    prepare_vram(args.work_dir)
    qmp_path = os.path.join(args.work_dir, "qmp.sock")
    chan_path = os.path.join(args.work_dir, "guest.sock")
    for sock in (qmp_path, chan_path):
        if os.path.exists(sock):
            os.unlink(sock)
    ports = ",".join(f"0000:00:{p[5]}" for p in SHM_DEVICES.values())
    append = f"console=ttyS0 intel_iommu=on iommu=pt quiet panic=-1 ugpu_shm_ports={ports}"
    if args.tests:
        append += " ugpu_tests=" + args.tests
    cmd = qemu_cmd(qemu, kdir, initrd, args.work_dir, qmp_path, chan_path, append)
    console = open(os.path.join(args.work_dir, "console.log"), "w")
    console.write(" ".join(cmd) + "\n")

    results = {n: Result(n) for n, _ in tests}
    order = [n for n, _ in tests]
    cur = None
    marks = {}
    say(f"booting QEMU (TCG), whole-run bound {bound}s; console log {console.name}")
    t_start = time.monotonic()
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    except OSError as e:
        console.close()
        loud_fail(f"cannot start {qemu}: {e}")
        print(f"vm: 0 passed, {len(tests)} failed", flush=True)
        return 1
    qmp = None
    chan = None
    setup_fail = None
    try:
        try:
            qmp = Qmp(qmp_path)
            chan = GuestChannel(chan_path)
        except OSError as e:
            say(f"FAIL: QMP or guest channel socket: {e}")
        buf = b""
        deadline = t_start + bound
        eof = False
        boot = BootProgress(BOOT_BOUND)
        while not eof:
            left = deadline - time.monotonic()
            if "init" not in marks:
                left = min(left, t_start + BOOT_BOUND - time.monotonic())
                boot.tick(time.monotonic() - t_start)
            if left <= 0:
                what = "guest init" if "init" not in marks else f"test {cur or '(between tests)'}"
                boot.done()
                say(f"TIMEOUT waiting for {what}; killing QEMU")
                break
            r, _, _ = select.select([p.stdout], [], [], min(left, 1.0))
            if not r:
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            boot.done()  # what the lines below print starts a line of its own
            if not chunk:
                eof = True
            buf += chunk
            lines = buf.split(b"\n")
            buf = lines.pop() if not eof else b""
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                if "init" not in marks:
                    boot.line(line)
                console.write(line + "\n")
                console.flush()
                cur = handle_line(line, cur, results, marks, qmp, chan, t_start)
                if line.startswith("@@SETUP-FAIL"):
                    setup_fail = line
    finally:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            say("QEMU did not die within 10s of SIGKILL")
        if qmp:
            qmp.close()
        if chan:
            chan.close()
        console.close()
    wall = time.monotonic() - t_start
    if p.returncode not in (0, None, -signal.SIGKILL):
        say(f"QEMU exited with status {p.returncode}")
    if setup_fail:
        say(f"FAIL: guest setup: {setup_fail}")

    for name in order:
        check_vram(args.work_dir, results[name])

    passed = failed = 0
    print("vm: ---- results ----", flush=True)
    for name in order:
        r = results[name]
        if r.rc is None:
            verdict, why = "FAIL", "no result (guest died or timed out before it ended)"
        elif r.rc == 0 and not r.host_failures:
            verdict, why = "PASS", ""
        elif r.rc == 77:
            # In the VM every device is there: a skip is a failure of the stage.
            verdict, why = "FAIL", "skipped inside the VM (exit 77)"
        elif r.rc == 137:
            verdict, why = "FAIL", "killed by the guest timeout"
        elif r.rc == 127:
            verdict, why = "FAIL", "not built"
        elif r.rc != 0:
            verdict, why = "FAIL", f"exit status {r.rc}"
        else:
            verdict, why = "FAIL", "; ".join(r.host_failures)
        if r.rc not in (None, 0) and r.host_failures:
            why += "; host: " + "; ".join(r.host_failures)
        secs = f"{r.secs:5.1f}s" if r.secs is not None else "   -  "
        print(f"vm:   {verdict} {name:<12} {secs} {why}", flush=True)
        if verdict == "PASS":
            passed += 1
        else:
            failed += 1
    if not order:
        say("FAIL: no test selected")
    boot = marks.get("init")
    print(f"vm: boot (QEMU start -> guest init) {boot:.1f}s" if boot is not None
          else "vm: guest never reached init", flush=True)
    print(f"vm: QEMU wall {wall:.1f}s, stage wall {time.monotonic() - T0:.1f}s", flush=True)
    print(f"vm: {passed} passed, {failed} failed", flush=True)
    return 1 if failed or setup_fail or boot is None or not order else 0


def handle_line(line, cur, results, marks, qmp, chan, t_start):
    """Echo one console line and act on the @@ protocol; returns the current test."""
    if line.startswith("@@INIT"):
        marks["init"] = time.monotonic() - t_start
        say(f"guest init reached: {marks['init']:.1f}s after QEMU start "
            f"(guest uptime {line.split()[1]}s)")
        return cur
    if line.startswith("@@BEGIN "):
        cur = line.split()[1]
        marks["begin"] = time.monotonic()
        say(f"[{cur}] start")
        return cur
    if line.startswith("@@END "):
        parts = line.split()
        name = parts[1]
        rc = int(parts[2].split("=")[1])
        r = results.get(name)
        if r:
            r.rc = rc
            r.secs = time.monotonic() - marks.get("begin", time.monotonic())
            finish_host_checks(r)
            state = "ok" if rc == 0 and not r.host_failures else f"FAILED (rc={rc})"
            say(f"[{name}] end: {state} in {r.secs:.1f}s")
        return None
    if line.startswith("@@HOST "):
        r = results.get(cur) if cur else None
        if r is None:
            say(f"host request outside a test ignored: {line}")
            return cur
        host_request(line.split()[1:], r, qmp, chan)
        return cur
    if line.startswith("@@DONE"):
        say(f"guest done (guest uptime {line.split()[1]}s)")
        return cur
    print(f"    {line}", flush=True)
    return cur


def host_request(words, r, qmp, chan):
    if not words:
        r.host_fail("empty @@HOST request")
    elif words[0] == "unplug" and len(words) == 2 and words[1] in DEVICE_IDS:
        dev = DEVICE_IDS[words[1]]
        if qmp is None or chan is None:
            r.host_fail(f"unplug {dev}: no QMP connection or guest channel")
            return
        t = threading.Thread(target=unplug, args=(dev, r, qmp, chan), daemon=True)
        r.unplugs.append(t)
        t.start()
    elif words[0] == "check-vram" and len(words) in (4, 5):
        role = words[4] if len(words) == 5 else "ivshmem"
        if role not in SHM_DEVICES:
            r.host_fail(f"check-vram: {role} is not an ivshmem role ({' '.join(SHM_DEVICES)})")
            return
        try:
            r.vram_checks.append((role, *(int(w, 0) for w in words[1:4])))
        except ValueError:
            r.host_fail(f"bad check-vram request {words}")
    else:
        r.host_fail(f"unknown host request {' '.join(words)}")


def unplug(dev, r, qmp, chan):
    """device_del, then tell the guest (which waits for it) whether QEMU
    reported the device gone: the guest must not power off before that."""
    t_del = time.monotonic()
    qmp.cmd("device_del", id=dev)
    ev = qmp.wait_event(lambda e: e.get("event") == "DEVICE_DELETED"
                        and e.get("data", {}).get("device") == dev, UNPLUG_BOUND)
    if ev is None:
        r.host_fail(f"no QMP DEVICE_DELETED for {dev} within {UNPLUG_BOUND}s of device_del")
        chan.reply(f"timeout {dev}")
    else:
        say(f"[{r.name}] host: QMP DEVICE_DELETED {dev} {ev[0] - t_del:.2f}s after device_del")
        chan.reply(f"deleted {dev} {ev[0] - t_del:.3f}")


def finish_host_checks(r):
    for t in r.unplugs:
        t.join(UNPLUG_BOUND + 5)
        if t.is_alive():
            r.host_fail("unplug handler still running")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", required=True, help="where the vm_* guest programs are")
    ap.add_argument("--work-dir", required=True, help="initramfs, memory file, console log")
    ap.add_argument("--tests", default=os.environ.get("UGPU_VM_TESTS", ""),
                    help="comma-separated subset of tests.list")
    ap.add_argument("--list", default=os.path.join(HERE, "tests.list"),
                    help="the test list (default tests/vm/tests.list)")
    ap.add_argument("--timeout", type=int, default=0, help="whole-run bound in seconds")
    args = ap.parse_args()
    say("stage start")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
