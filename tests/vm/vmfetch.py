# SPDX-License-Identifier: MIT
"""Everything the VM stage needs from Debian, fetched once and cached.

- qemu-system-x86 and busybox-static are installed with apt-get when absent
  (a missing QEMU is a hard failure of the stage, never a skip);
- the current 6.1 kernel package (the one linux-image-amd64 depends on) is
  fetched with `apt-get download`, and only what the guest needs is kept in
  tests/vm/cache/<package>/: the uncompressed vmlinux (booted through its PVH
  entry point: no firmware linuxboot, no in-guest decompression) and the six
  VFIO modules.

Set UGPU_VM_REFRESH=1 to ask apt which kernel is current even when one is
cached (by default a cached kernel is reused, so runs work offline).
"""
import glob
import lzma
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("UGPU_VM_CACHE", os.path.join(HERE, "cache"))

# Load order matters: each needs the ones before it.
MODULES = [
    "virt/lib/irqbypass",
    "drivers/vfio/vfio",
    "drivers/vfio/vfio_iommu_type1",
    "drivers/vfio/vfio_virqfd",
    "drivers/vfio/pci/vfio-pci-core",
    "drivers/vfio/pci/vfio-pci",
]
# UGPU_VM_QEMU: another QEMU binary (then nothing is installed for it).
QEMU = os.environ.get("UGPU_VM_QEMU", "qemu-system-x86_64")
BUSYBOX = "/bin/busybox"


class FetchError(Exception):
    pass


def log(msg):
    print(f"vm: {msg}", flush=True)


def _run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def _apt_install(pkgs):
    if os.geteuid() != 0:
        raise FetchError(f"{' '.join(pkgs)} missing and not root: install them "
                         f"(apt-get install {' '.join(pkgs)})")
    log(f"installing {' '.join(pkgs)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        _run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *pkgs], env=env,
             stdout=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, OSError) as e:
        raise FetchError(f"apt-get install {' '.join(pkgs)} failed: {e}") from e


def ensure_host_tools():
    """QEMU and a static busybox on the host; installs them if needed."""
    missing = []
    if not shutil.which(QEMU):
        if "UGPU_VM_QEMU" in os.environ:
            raise FetchError(f"UGPU_VM_QEMU={QEMU} is not an executable")
        missing.append("qemu-system-x86")
    if not os.access(BUSYBOX, os.X_OK):
        missing.append("busybox-static")
    if missing:
        _apt_install(missing)
    if not shutil.which(QEMU):
        raise FetchError(f"{QEMU} still missing after installing qemu-system-x86")
    if not os.access(BUSYBOX, os.X_OK):
        raise FetchError(f"{BUSYBOX} still missing after installing busybox-static")
    return shutil.which(QEMU), BUSYBOX


def _kernel_package():
    def ask():
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("Depends: linux-image-6."):
                return line.split()[1]
        return None
    pkg = ask()
    if not pkg:
        _run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL)
        pkg = ask()
    if not pkg:
        raise FetchError("apt-cache depends linux-image-amd64 names no linux-image-6.* package")
    return pkg


def _cached_kernels():
    return sorted(d for d in glob.glob(os.path.join(CACHE, "linux-image-*"))
                  if os.path.exists(os.path.join(d, "complete")))


def _extract(deb, dest):
    """Unpack only the kernel image and the VFIO modules out of @deb."""
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
        _run(["tar", "-x", "-C", tmp, "--wildcards", "./boot/vmlinuz-*",
              *[f"./lib/modules/*/kernel/{m}.ko*" for m in MODULES]], stdin=tar.stdout)
        tar.stdout.close()
        if tar.wait() != 0:
            raise FetchError(f"dpkg-deb --fsys-tarfile {deb} failed")
        vmlinuz = glob.glob(os.path.join(tmp, "boot", "vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise FetchError(f"{deb}: expected one boot/vmlinuz-*, found {vmlinuz}")
        data = open(vmlinuz[0], "rb").read()
        # bzImage = real-mode setup + decompressor + an XZ stream of the ELF vmlinux.
        start = data.find(b"\xfd7zXZ\x00")
        if start < 0:
            raise FetchError(f"{vmlinuz[0]}: no XZ payload (kernel not XZ-compressed?)")
        elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        if elf[:4] != b"\x7fELF":
            raise FetchError(f"{vmlinuz[0]}: XZ payload is not an ELF vmlinux")
        os.makedirs(os.path.join(dest, "mods"), exist_ok=True)
        with open(os.path.join(dest, "vmlinux"), "wb") as f:
            f.write(elf)
        shutil.copy(vmlinuz[0], os.path.join(dest, "vmlinuz"))
        for m in MODULES:
            found = glob.glob(os.path.join(tmp, "lib", "modules", "*", "kernel", m + ".ko*"))
            if not found:
                raise FetchError(f"{deb}: module {m}.ko missing")
            name = os.path.basename(m) + ".ko"
            src = found[0]
            out = os.path.join(dest, "mods", name)
            if src.endswith(".xz"):
                with lzma.open(src) as i, open(out, "wb") as o:
                    shutil.copyfileobj(i, o)
            elif src.endswith(".zst"):
                _run(["zstd", "-q", "-d", "-f", src, "-o", out])
            else:
                shutil.copy(src, out)


def ensure_kernel():
    """Return the cache dir holding vmlinux, vmlinuz and mods/*.ko."""
    os.makedirs(CACHE, exist_ok=True)
    cached = _cached_kernels()
    if cached and os.environ.get("UGPU_VM_REFRESH") != "1":
        return cached[-1]
    pkg = _kernel_package()
    dest = os.path.join(CACHE, pkg)
    if os.path.exists(os.path.join(dest, "complete")):
        return dest
    log(f"downloading {pkg} (apt-get download) into {CACHE}")
    # Built aside and renamed into place: two stages fetching at once (two
    # build dirs) never see a half-written kernel.
    with tempfile.TemporaryDirectory(dir=CACHE) as dl:
        try:
            _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pkg], cwd=dl,
                 stdout=subprocess.DEVNULL)
        except (subprocess.CalledProcessError, OSError) as e:
            raise FetchError(f"apt-get download {pkg} failed: {e}") from e
        debs = glob.glob(os.path.join(dl, "*.deb"))
        if len(debs) != 1:
            raise FetchError(f"apt-get download {pkg} produced {debs}")
        staged = os.path.join(dl, "staged")
        _extract(debs[0], staged)
        with open(os.path.join(staged, "complete"), "w") as f:
            f.write(pkg + "\n")
        if os.path.isdir(dest) and not os.path.exists(os.path.join(dest, "complete")):
            shutil.rmtree(dest)  # left by an interrupted older version
        try:
            os.rename(staged, dest)
        except OSError:
            if not os.path.exists(os.path.join(dest, "complete")):
                raise
    log(f"kernel cached in {dest}")
    return dest


if __name__ == "__main__":
    ensure_host_tools()
    print(ensure_kernel())
