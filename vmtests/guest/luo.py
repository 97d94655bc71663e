"""S13, in the guest: LUO's preserved memory, owned by LUO, before and after
a KHO kexec (kernels with LUO, booted with ``liveupdate=1``).

``stage=luo-1`` (cold boot): a LUO session "kho-inspect-luo" preserving a
memfd of :data:`PAGES` written pages (include/uapi/linux/liveupdate.h:
CREATE_SESSION ``_IO(0xBA, 0)`` {u32 size; s32 fd; u8 name[64]}, PRESERVE_FD
``_IO(0xBA, 0x40)`` {u32 size; s32 fd; u64 token}), both fds kept open
through the kexec so that the reboot path serializes the session. The
oracle: /proc/self/pagemap of a mapping of the memfd, read after the
preserve (which pins, and may migrate, its folios). kho-v1 6.19/7.0
serializes the map again (finalize) after the preserve. ``check --json``
must find no error, no unclaimed block, and every memfd page owned by
``LUO`` (the live walk of LUO's sessions: the sub-node holds them only from
the kexec on), and its blocks must be what guest/naive.py reads in the
map. Then ``kexec -s -l`` the same kernel with ``stage=luo-2``.

``stage=luo-2`` (KHO boot, the session not retrieved): ``check --incoming
--json`` must list every memfd page as preserved, not restored and owned by
``LUO``, and no marked block nobody claims.

Each stage writes ``luo-N.result.json`` (status, reason); vmtests/luo.py
turns them into S13's verdict.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import struct
from pathlib import Path

import naive
import own_boot
from own_boot import RESULTS, kexec_exec, kexec_load, next_cmdline, save

FINALIZE = Path("/sys/kernel/debug/kho/out/finalize")
PLAN = "luo-plan.json"
PAGES = 16
SESSION, TOKEN = "kho-inspect-luo", 0x58
_fds: list = []                 # closing the session fd unpreserves


def log(msg: str) -> None:
    print(f"luo: {msg}", flush=True)


def cli(*args) -> tuple[int, dict | None, str]:
    r = own_boot.cli("luo", *args)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    return r.returncode, doc, r.stderr.strip()[-300:]


def preserve_memfd() -> dict:
    """The session and its memfd; the memfd's pages as pagemap gives them."""
    lu = os.open("/dev/liveupdate", os.O_RDWR)
    try:
        buf = bytearray(struct.pack("<Ii64s", 72, -1, SESSION.encode()))
        fcntl.ioctl(lu, 0xBA00, buf)
    finally:
        os.close(lu)                    # the session fd lives on its own
    sfd = struct.unpack_from("<i", buf, 4)[0]
    mfd = os.memfd_create("kho-luo-memfd", 0)
    os.write(mfd, b"".join(bytes([i + 1]) * 4096 for i in range(PAGES)))
    fcntl.ioctl(sfd, 0xBA40, bytearray(struct.pack("<IiQ", 16, mfd, TOKEN)))
    _fds.extend((sfd, mfd))
    with mmap.mmap(mfd, PAGES * 4096, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
        if any(mm[i * 4096] != i + 1 for i in range(PAGES)):
            raise RuntimeError("the preserved memfd reads back wrong")
        addr = next(int(ln.split("-")[0], 16)
                    for ln in open("/proc/self/maps") if "kho-luo-memfd" in ln)
        phys = []
        with open("/proc/self/pagemap", "rb") as f:
            for i in range(PAGES):
                f.seek(((addr >> 12) + i) * 8)
                e = int.from_bytes(f.read(8), "little")
                phys.append((e & ((1 << 55) - 1)) * 4096 if e >> 63 else None)
    return {"session": SESSION, "token": TOKEN, "phys": phys}


def not_owned(ranges, plan: dict, want: str = "LUO") -> list[str]:
    """The memfd pages of *plan* whose block in *ranges* is not *want*'s."""
    bad = []
    for p in plan["phys"]:
        own = [r.get("owner") for r in ranges if p is not None and
               r["phys"] <= p < r["phys"] + r["count"] * (4096 << r["order"])]
        if not own or want not in (own[0] or "").split(","):
            bad.append(f"0x{p or 0:x}: {own[0] if own else 'not listed'}")
    return bad


def _errors(doc: dict) -> list[str]:
    return [f"{f['id']}: {f['message'][:120]}" for f in doc["findings"]
            if f["severity"] == "error" or f["id"] == "unclaimed"]


def stage1() -> dict:
    if not os.path.exists("/dev/liveupdate"):
        return {"status": "fail", "reason": "no /dev/liveupdate although "
                "the kernel has LUO and was booted with liveupdate=1"}
    plan = preserve_memfd()
    save(PLAN, plan)
    if FINALIZE.exists():
        FINALIZE.write_text("1\n")      # 6.19/7.0: serialize the map again
    rc, doc, err = cli("check", "--json")
    (RESULTS / "luo-check1.json").write_text(json.dumps(doc))
    if doc is None:
        return {"status": "fail", "reason": f"check rc={rc}: {err}"}
    bad = _errors(doc) + [f"memfd page {b}" for b in
                          not_owned(doc["ranges"], plan)]
    nv = naive.check(doc["ranges"])     # the map read again, naively
    if nv.get("error") or nv.get("differs"):
        bad.append("check's ranges against the naive reader: "
                   + (nv.get("error") or nv["differs"]))
    if rc != 0 or bad:
        return {"status": "fail", "reason": f"check rc={rc}: "
                + "; ".join(bad[:3])}
    return {"status": "pass", "reason": (
        f"session {SESSION}: all {PAGES} memfd pages (pagemap) owned by "
        f"LUO; LUO owns {doc['owners']['LUO']['blocks']} blocks; no error, "
        "nothing unclaimed" + (f"; map == naive reader "
                               f"({nv['blocks']} blocks)"
                               if nv.get("blocks") is not None else ""))}


def stage2() -> dict:
    plan = json.loads((RESULTS / PLAN).read_text())
    rc, doc, err = cli("check", "--incoming", "--json")
    (RESULTS / "luo-check2.json").write_text(json.dumps(doc))
    if doc is None:
        return {"status": "fail", "reason": f"check --incoming rc={rc}: "
                f"{err}"}
    rows = [f for f in doc["findings"] if f["id"] in ("unrestored",
                                                      "unclaimed")]
    bad = not_owned(rows, plan)
    unclaimed = [f["message"] for f in rows if f["id"] == "unclaimed"]
    if bad or unclaimed:
        return {"status": "fail", "reason": "check --incoming: "
                + "; ".join([f"memfd page {b}" for b in bad[:3]]
                            + unclaimed[:2])}
    return {"status": "pass", "reason": (
        f"check --incoming: all {PAGES} memfd pages preserved, not "
        f"restored, owned by LUO; {len(rows)} blocks unrestored, none "
        "unclaimed")}


def main(args: dict) -> None:
    stage = args.get("stage")
    try:
        res = stage1() if stage == "luo-1" else stage2()
    except (OSError, RuntimeError, ValueError) as e:
        res = {"status": "fail", "reason": f"{type(e).__name__}: {e}"}
    res["uname"] = os.uname().release
    save(f"{stage}.result.json", res)
    log(f"{stage}: {res['status']}: {res['reason']}")
    if stage != "luo-1" or res["status"] != "pass":
        return
    name = f"{stage}.result.json"
    if kexec_load("luo", next_cmdline("luo-1", "luo-2"), res, name):
        kexec_exec("luo", res, name)
    # still here: no kexec
    res.update(status="fail", reason=f"stage 1 passed, no kexec: "
               f"{res.get('kexec_e') or res['kexec_load']['stderr']}")
    save(name, res)
