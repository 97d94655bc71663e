"""S12: a page run across a NUMA node boundary, on the host.

One boot of its own, on a kernel built with NUMA (vmtests/kho-numa.config,
7.3 only): a 2 GiB guest in two QEMU nodes, node 0 ending at 1040 MiB, half
way into the 32 MiB-aligned 32 MiB from 1024 MiB. The kho_workload module
preserves those 8192 pages with kho_preserve_pages, which (7.1+) splits them
where the node changes; guest/numa.py records kho_inspect's prediction
(``check --next``), KHO-kexecs into the same kernel, restores the run with
kho_restore_pages and records what the kernel did.

Nobody can own such a run: the top of node 0 holds node 0's own struct
pages, and while the kernel boots it spreads its allocations over both
nodes, so the bottom of node 1 holds other KHO clients' blocks (KHO's FDT,
test_kho's folios...), which the run would preserve a second time.
``crashkernel=16M@1040M`` keeps the bottom 16 MiB of node 1 away from
every allocation instead, and the module preserves the run without
allocating it (KHO does not check who owns what it preserves).

The verdict, from three views that must agree:

* the prediction: ``check --next`` in the first kernel names the blocks
  kho_restore_pages will step over (``next-numa``);
* the kernel: after the restore, the module reads the head of every block
  of the run in the kernel (page->private) and lists those still marked;
* kho_inspect after the boot: ``check --incoming`` lists them as preserved,
  not restored, and owned by ``kho_workload``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import kmod
import qemu
from results import read_json

MEMORY = "2G"
#: node 0 ends at 1040 MiB: half way into the 32 MiB from 1024 MiB
NODE0, NODE1 = "1040M", "1008M"
#: the bottom of node 1 reserved before anything is allocated there (the
#: base must be 16 MiB-aligned: CRASH_ALIGN)
APPEND = "crashkernel=16M@1040M"
QEMU_NUMA = ("-object", f"memory-backend-ram,id=m0,size={NODE0}",
             "-object", f"memory-backend-ram,id=m1,size={NODE1}",
             "-numa", "node,nodeid=0,cpus=0,memdev=m0",
             "-numa", "node,nodeid=1,memdev=m1")
TIMEOUT = 600


def _item(list_text: str) -> dict | None:
    for ln in list_text.splitlines():
        kv = dict(f.split("=", 1) for f in ln.split() if "=" in f)
        if kv.get("kind") == "numa":
            return kv
    return None


def judge(res: Path, why: str | None) -> tuple[str, str]:
    a = read_json(res / "numa-1.json")
    if not a:
        return "fail", ("the first kernel wrote nothing "
                        f"({why or 'QEMU exited'})")
    if len(a.get("nodes", [])) < 2:
        return "fail", f"the guest has nodes {a.get('nodes')}, not two"
    if a.get("insmod") or a.get("numa") != "ok":
        return "fail", (f"module: insmod {a.get('insmod')}, numa: "
                        f"{a.get('numa')}")
    nv = a.get("naive") or {"error": "not run"}
    if nv.get("error") or nv.get("differs"):
        return "fail", ("map against the naive reader: "
                        + (nv.get("error") or nv.get("differs")))
    item = _item(a["list"])
    chk = read_json(res / "numa-1-check.json")
    if chk is None or not item:
        return "fail", (f"stage 1: check rc={a['check']['rc']}: "
                        f"{a['check']['stderr']}")
    said = [f for f in chk["findings"] if f["id"] == "next-numa"]
    if not said:
        return "fail", (f"check --next {a['uname']} did not flag the run at "
                        f"{item['phys']} (findings: "
                        f"{sorted({f['id'] for f in chk['findings']})})")
    if said[0]["owner"] != "kho_workload":
        return "fail", f"next-numa names owner {said[0]['owner']}"
    predicted = {f["phys"] for f in said}
    b = read_json(res / "numa-2.json")
    if not b:
        return "fail", (f"predicted {sorted(map(hex, predicted))}; the second "
                        f"kernel wrote nothing ({why or 'QEMU exited'}; "
                        f"kexec: {a.get('kexec_load')} {a.get('kexec_e')})")
    item2 = _item(b["list"])
    if not item2 or item2.get("state") != "restored":
        return "fail", (f"stage 2: the module's restore: {item2} "
                        f"(dmesg: {' | '.join(b['dmesg'][-3:])})")
    left = item2.get("unrestored", "")
    kernel = set() if left in ("", "none") else {
        int(x.split("/")[0], 16) for x in left.split(",")}
    chk2 = read_json(res / "numa-2-check.json")
    if chk2 is None:
        return "fail", f"check --incoming rc={b['check']['rc']}: " \
                       f"{b['check']['stderr']}"
    lo = int(item["phys"], 16)
    hi = lo + int(item["nr_pages"]) * 4096
    seen = {f["phys"] for f in chk2["findings"]
            if f["id"] == "unrestored" and f["phys"] is not None
            and lo <= f["phys"] < hi and f["owner"] == "kho_workload"}
    if not (predicted == kernel == seen):
        return "fail", (f"predicted {sorted(map(hex, predicted))}, the "
                        f"kernel left {sorted(map(hex, kernel))} marked, "
                        f"check --incoming saw {sorted(map(hex, seen))}")
    return "pass", ((f"map == naive reader ({nv['blocks']} blocks); "
                     if nv.get("blocks") is not None else "") +
                    f"run {item['phys']} +{item['nr_pages']} pages across "
                    f"nodes: check --next predicted "
                    f"{', '.join(map(hex, sorted(predicted)))} skipped; "
                    f"{b['uname']}'s kho_restore_pages returned the run and "
                    "left exactly that block marked (module, in the kernel; "
                    "check --incoming: unrestored, kho_workload)")


def run(build, rootfs: Path, project: Path, workdir: Path
        ) -> tuple[str, str, float]:
    t = time.monotonic()
    res = workdir / "results"
    res.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kmod.build_module(build), res / "kho_workload.ko")
    g = qemu.Guest(bzimage=build.bzimage, rootfs=rootfs, project=project,
                   kernel_dir=build.dir, results=res, workdir=workdir,
                   init_args=["stage=numa-1"], memory=MEMORY,
                   extra_append=APPEND, extra_qemu=QEMU_NUMA)
    try:
        rc = g.wait_exit(TIMEOUT)
        why = None if rc is not None else f"timeout after {TIMEOUT}s"
    finally:
        g.kill()
    st, reason = judge(res, why)
    if st == "fail":
        reason += f" (console: {workdir}/console.log)"
    return st, reason, round(time.monotonic() - t, 1)
