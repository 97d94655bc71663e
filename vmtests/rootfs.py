"""Debian sid root filesystem for the vmtest guests, built with debootstrap.

The tree is cached under ``<cache>/rootfs/<hash>`` where the hash covers the
package list, the suite/mirror and the init script below, and is built into a
``.tmp`` directory that is renamed only when complete.  The guest mounts it
read-only over virtio-9p.  The init script only mounts the pseudo file systems
and the 9p shares and then execs the guest runner from the project tree
(``/project/vmtests/guest/init.sh``), so changing guest logic never rebuilds
the root filesystem.

The host's apt sources are never touched: debootstrap fetches sid packages
into the target directory only, from the host's own Debian mirror
(:mod:`mirror`), or debootstrap's default when the host names none. The
mirror is not part of the hash: any mirror serves the same packages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cachelock
import mirror

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("KHO_VMTEST_CACHE",
                            Path.home() / ".cache" / "kho-inspect"))
SUITE = "sid"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PACKAGES = sorted([
    "python3", "python3-drgn", "python3-bpfcc", "bpfcc-tools", "kexec-tools",
    "python3-pytest", "python3-tabulate", "procps", "util-linux", "mount",
    "kmod", "device-tree-compiler", "less", "file",
    # bcc unpacks /sys/kernel/kheaders.tar.xz with xz; kdump saves with
    # makedumpfile
    "xz-utils", "makedumpfile",
])

# Lives at /kho-init inside the rootfs; the kernel runs it as init.
INIT = r"""#!/bin/sh
# vmtests guest init (part of the rootfs hash: keep it small and stable).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
for d in /tmp /run /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs "$d"; done
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs tmpfs /dev/shm 2>/dev/null
o=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $o,ro,cache=none project /project
mount -t 9p -o $o,ro,cache=none kernel /kernel
mount -t 9p -o $o,rw,cache=none results /results
if [ -x /project/vmtests/guest/init.sh ]; then
    exec /project/vmtests/guest/init.sh "$@"
fi
echo "kho-init: /project/vmtests/guest/init.sh missing" >&2
echo o > /proc/sysrq-trigger
poweroff -f
"""


def key() -> str:
    h = hashlib.sha256()
    h.update(f"{SUITE} minbase\n".encode())
    h.update("\n".join(PACKAGES).encode())
    h.update(INIT.encode())
    return h.hexdigest()[:12]


def path() -> Path:
    return CACHE / "rootfs" / key()


def cached() -> Path | None:
    p = path()
    return p if (p / ".vmtests-done").exists() else None


def log(msg: str) -> None:
    print(f"vmtests: {msg}", file=sys.stderr, flush=True)


def build() -> Path:
    """Return the cached rootfs, debootstrapping it first if needed."""
    out = path()
    if (out / ".vmtests-done").exists():
        return out
    with cachelock.locked(CACHE, f"rootfs-{key()}"):
        return _build_locked(out)


def _build_locked(out: Path) -> Path:
    if (out / ".vmtests-done").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    logf = CACHE / "rootfs" / f"debootstrap-{key()}.log"
    log(f"debootstrap {SUITE} into {tmp} (log: {logf})")
    cmd = ["debootstrap", "--variant=minbase", f"--keyring={KEYRING}",
           "--include=" + ",".join(PACKAGES), SUITE, str(tmp)]
    uri = mirror.host_mirror()
    if uri:
        cmd.append(uri)
    with open(logf, "w") as lf:
        r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT)
    if r.returncode:
        tail = logf.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError("debootstrap failed:\n" + "\n".join(tail))
    # Guest-side setup: mount points, init, apt tolerance for a frozen mirror.
    for d in ("project", "kernel", "results", "sys/kernel/debug"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    init = tmp / "kho-init"
    init.write_text(INIT)
    init.chmod(0o755)
    (tmp / "etc/apt/apt.conf.d/99vmtests").write_text(
        'Acquire::Check-Valid-Until "false";\n')
    (tmp / "etc/hostname").write_text("khovm\n")
    # Drop the downloaded .debs: the cache is big enough as it is.
    for deb in (tmp / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (tmp / ".vmtests-done").write_text(" ".join(PACKAGES) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log(f"rootfs ready: {out}")
    return out


if __name__ == "__main__":
    print(build())
