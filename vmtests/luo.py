"""S13: LUO's preserved memory owned by LUO, on the host.

One boot of its own on kernels with LUO (``CONFIG_LIVEUPDATE``: 6.19+),
booted with ``liveupdate=1`` (without it LUO offers no /dev/liveupdate; the
other scenarios run without it, since LUO's own records, written at the
kexec, would change what they compare). guest/luo.py preserves a memfd in a
LUO session and checks its pages' owner before the kexec (the live walk of
LUO's sessions) and after it (the serialized session in the incoming
``LUO`` sub-node, and the walk of the incoming sessions).
"""

from __future__ import annotations

import time
from pathlib import Path

import qemu
from results import read_json

TIMEOUT = 600


def run(build, rootfs: Path, project: Path, workdir: Path
        ) -> tuple[str, str, float]:
    t = time.monotonic()
    res = workdir / "results"
    res.mkdir(parents=True, exist_ok=True)
    g = qemu.Guest(bzimage=build.bzimage, rootfs=rootfs, project=project,
                   kernel_dir=build.dir, results=res, workdir=workdir,
                   init_args=["stage=luo-1"], extra_append="liveupdate=1")
    try:
        rc = g.wait_exit(TIMEOUT)
        why = None if rc is not None else f"timeout after {TIMEOUT}s"
    finally:
        g.kill()
    secs = round(time.monotonic() - t, 1)
    v1 = read_json(res / "luo-1.result.json")
    v2 = read_json(res / "luo-2.result.json")
    tail = f" (console: {workdir}/console.log)"
    if not v1:
        return "fail", f"stage 1 wrote nothing ({why or 'QEMU exited'})" \
            + tail, secs
    if v1["status"] != "pass":
        return "fail", f"stage 1: {v1['reason']}" + tail, secs
    if not v2:
        return "fail", (f"stage 1: {v1['reason']}; stage 2 wrote nothing "
                        f"({why or 'QEMU exited'})") + tail, secs
    if v2["status"] != "pass":
        return "fail", f"stage 2: {v2['reason']}" + tail, secs
    return "pass", (f"{v1['uname']}: stage 1: {v1['reason']}; stage 2: "
                    f"{v2['reason']}"), secs
