"""S7 kdump, host side: boot the kdump guest, then judge the dumps it saved.

Users analyse what makedumpfile wrote from a crash kernel, filtered
(``-d 31``: zero, cache, private-cache, user and free pages dropped), in the
kdump-compressed format (``-c``) or as ELF (``-E``).  :func:`boot` starts a
guest of its own (``stage=kdump``, ``crashkernel=``; the guest side is
``guest/kdump.py``): it loads the crash kernel, builds KHO state, takes the
live views, panics; the crash kernel saves both dumps.  :data:`BOOTS` runs
it twice: the crashing kernel cold-booted, and KHO-booted (``incoming``
applies there).  :func:`judge` runs
``status``, ``map``, ``tracker``, ``check`` and ``incoming`` (``--json``,
``--core DUMP -s VMLINUX``) on each dump: each must equal the guest's live
view taken just before the panic, or be one line (exit 2) naming the page
the filtering removed.  An error that blames the filtering counts only if
the dump really lacks what it names (:func:`filtered_why`: System RAM the
dump holds no data for, by the dump's own page bitmap or PT_LOADs, read
here, not by kho_inspect).  It then asks for a page the filtering did
remove (``map --fdt-phys`` inside a hole of the ELF dump): that must be
one line naming the page and the filtering, from both files.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import struct
import time
from pathlib import Path

import qemu
from results import read_json

#: 256 MiB of crash kernel count, twice over, in KHO's scratch scaling
#: (scratch_scale=200% of the memblock reservations, and the per-node area
#: again of the low one): kho=1 with crashkernel=256M does not fit in 2 or
#: 4 GiB ("KHO: Failed to reserve scratch area"), it does in 6.
MEMORY = "6G"
CRASHKERNEL = "256M"
TIMEOUT = 1500          # boot, live views, panic, crash kernel, 2 dumps
CRASH_START = 300       # panic to the crash kernel's first result file
DUMPS = ("kdump-c-d31", "kdump-E-d31.elf")      # guest/kdump.py DUMPS
#: The boots: the crashing kernel cold-booted, and KHO-booted (a KHO kexec
#: first, so that ``incoming`` applies): workdir name -> guest stage.
BOOTS = {"kdump": "stage=kdump", "kdump-kho": "stage=kdump-kexec"}
VIEWS = ("status", "map", "tracker", "check")
PAGE = 4096


def boot(build, rootfs: Path, project: Path, workdir: Path,
         module: Path | None, stage: str = "stage=kdump"
         ) -> tuple[str | None, str]:
    """Run the kdump guest (*stage*: a value of :data:`BOOTS`) to its end;
    (why it did not end by itself, or None; the console's tail)."""
    results = workdir / "results"
    results.mkdir(parents=True, exist_ok=True)
    if module and module.exists():
        shutil.copy2(module, results / module.name)
    g = qemu.Guest(bzimage=build.bzimage, rootfs=rootfs, project=project,
                   kernel_dir=build.dir, results=results, workdir=workdir,
                   init_args=[stage], memory=MEMORY,
                   extra_append=f"crashkernel={CRASHKERNEL}")
    why = None
    try:
        t0 = time.monotonic()
        panicked = g.wait_for(lambda: "panic_at" in (read_json(
            results / "kdump.json") or {}), TIMEOUT)
        if panicked and not g.wait_for(
                (results / "crash.json").exists, CRASH_START):
            why = (f"no crash kernel: nothing from it {CRASH_START}s after "
                   "the panic; QEMU killed")
        left = TIMEOUT - (time.monotonic() - t0)
        if why is None and g.wait_exit(max(left, 1)) is None:
            why = f"timeout after {TIMEOUT}s; QEMU killed"
    finally:
        g.kill()
    return why, g.console_tail(40)


def elf_loads(path: Path) -> list[tuple[int, int, int, int]]:
    """(p_paddr, p_vaddr, p_filesz, p_memsz) of every PT_LOAD of an ELF64
    little-endian core; [] for anything else (another format, no file)."""
    try:
        with open(path, "rb") as f:
            eh = f.read(64)
            if len(eh) < 64 or eh[:4] != b"\x7fELF" or eh[4:6] != b"\2\1":
                return []
            phoff, = struct.unpack_from("<Q", eh, 32)
            phentsize, phnum = struct.unpack_from("<HH", eh, 54)
            if phentsize != 56:
                return []
            f.seek(phoff)
            table = f.read(56 * phnum)
    except OSError:
        return []
    out = []
    for i in range(len(table) // 56):
        ptype, _, _, vaddr, paddr, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", table, i * 56)
        if ptype == 1:                                  # PT_LOAD
            out.append((paddr, vaddr, filesz, memsz))
    return out


def elf_holes(path: Path) -> list[tuple[int, int]]:
    """[start, end) physical ranges a makedumpfile ELF dump declares but does
    not hold: a PT_LOAD's memory past its file data (p_memsz > p_filesz),
    which is how makedumpfile -E leaves out the pages it filtered."""
    return [(p + fs, p + ms) for p, _, fs, ms in elf_loads(path) if ms > fs]


def merged(ranges) -> list[tuple[int, int]]:
    """[start, end) *ranges* sorted, the empty ones dropped, those that
    touch or overlap joined."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    return out


def elf_held(loads) -> list[tuple[int, int]]:
    """The [start, end) physical ranges an ELF dump holds data for: its
    PT_LOADs' file data (*loads*: :func:`elf_loads`; a PT_LOAD with
    p_filesz 0, or the p_memsz past p_filesz, holds none)."""
    return merged((p, p + fs) for p, _, fs, _ in loads)


def kdump_held(path: Path) -> list[tuple[int, int]] | None:
    """The [start, end) physical ranges a kdump-compressed dump
    (makedumpfile -c) holds pages for: the set bits of its second page
    bitmap (a clear one is libkdumpfile's "Excluded page"); None if *path*
    is not such a file."""
    try:
        with open(path, "rb") as f:
            h = f.read(440)
            if len(h) < 440 or h[:8] != b"KDUMP   ":
                return None
            # struct disk_dump_header (64-bit): block_size, sub_hdr_size,
            # bitmap_blocks after the utsname and timeval; the header's
            # block, the sub-header's, then both bitmaps
            block, sub, blocks = struct.unpack_from("<iiI", h, 428)
            if block < 512 or block & (block - 1) or sub < 0 \
                    or blocks < 2 or blocks % 2:
                return None
            size = blocks // 2 * block
            f.seek((1 + sub) * block + size)
            bitmap = f.read(size)
    except OSError:
        return None
    if len(bitmap) < size:
        return None
    out, start = [], None
    for i, byte in enumerate(bitmap):
        if byte == (0 if start is None else 0xff):
            continue                    # no run starts or ends in it
        for bit in range(8):
            pfn = i * 8 + bit
            if byte >> bit & 1 and start is None:
                start = pfn
            elif not byte >> bit & 1 and start is not None:
                out.append((start * block, pfn * block))
                start = None
    if start is not None:
        out.append((start * block, len(bitmap) * 8 * block))
    return out


def filtered_page(elf: Path, ram: list) -> int | None:
    """A page the filtering removed: the middle of the largest hole of the
    ELF dump inside the guest's System RAM (free memory, most likely, so
    excluded from the compressed dump too)."""
    best = None
    for a, b in elf_holes(elf):
        for ra, rb in ram or []:
            lo, hi = max(a, ra), min(b, rb)
            if hi - lo >= 2 * PAGE and (best is None
                                        or hi - lo > best[1] - best[0]):
                best = (lo, hi)
    if best is None:
        return None
    return ((best[0] + best[1]) // 2) & ~(PAGE - 1)


def one_line(stderr: str) -> str | None:
    """The error line of a CLI that failed as it should (one line, no
    traceback), or None."""
    lines = stderr.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("kho-inspect: error: "):
        return None
    return lines[0]


#: Where kho_inspect names the read that failed (memory.fault_message:
#: "cannot read WHAT WHERE: WHY in SOURCE (page filtered out of the dump,
#: ..."): WHERE is " at phys 0xADDR" with " (+0xSIZE)" when it has one, or
#: " at 0xADDR", drgn's address of the read (virtual, or physical for a
#: physical read)
FAULT_AT = re.compile(r" at (phys )?0x([0-9a-f]+)(?: \(\+0x([0-9a-f]+)\))?: ")
KERNEL_HALF = 1 << 63       # x86-64: a kernel virtual address, not physical


def minus(ranges, cut) -> list[tuple[int, int]]:
    """[start, end) *ranges* without what the ranges in *cut* cover."""
    out = []
    for a, b in ranges:
        for c, d in merged(cut):
            if c < b and a < d:
                if a < c:
                    out.append((a, c))
                a = max(a, d)
        if a < b:
            out.append((a, b))
    return out


def filtered_why(line: str | None, held, ram, virt=()) -> str | None:
    """Why the filtering does not explain *line*, an error that blames it,
    or None when it does: every read the line names (:data:`FAULT_AT`;
    [ADDR, ADDR + SIZE), or the byte at ADDR) must take a byte of System
    RAM (*ram*, [start, end) ranges) that the dump holds no data for
    (*held*: its [start, end) physical ranges, :func:`elf_held` or
    :func:`kdump_held`; None: unknown). A kernel virtual address is placed
    through *virt*, the ELF dump's (p_vaddr, p_paddr, p_memsz) PT_LOADs."""
    if not line or "filtered" not in line:
        return "it does not blame the filtering"
    reads = FAULT_AT.findall(line)
    if not reads:
        return "it names no address"
    if held is None:
        return "what the dump holds is unknown"
    for phys, addr, size in reads:
        a = int(addr, 16)
        if not phys and a >= KERNEL_HALF:
            a = next((p + a - v for v, p, m in virt if v <= a < v + m), None)
            if a is None:
                return (f"no PT_LOAD of the ELF dump maps virtual address "
                        f"0x{addr}")
        end = a + (int(size, 16) if size else 1)
        lacks = minus([(a, end)], held)
        if not lacks:
            return f"the dump holds [{a:#x}, {end:#x})"
        if not any(c < rb and ra < d for c, d in lacks for ra, rb in ram):
            return f"what the dump lacks of [{a:#x}, {end:#x}) is not RAM"
    return None


def filtered_explained(line: str | None, held, ram, virt=()) -> bool:
    """Does the filtering explain *line* (:func:`filtered_why`)?"""
    return filtered_why(line, held, ram, virt) is None


def filtered_parts(live, got, why, where: str = "") -> tuple:
    """(*live*, *got*, lines, unexplained): every part the dump's view could
    not decode because the filtering removed a page it needs (a dict in
    *got* whose ``"error"`` blames the filtering and *why* (line -> why the
    filtering does not explain it, or None: :func:`filtered_why` for this
    dump) accepts, e.g. a sub-node blob pointing at memory its client freed
    after restoring it) replaced by the same marker in both documents;
    *lines* say where and what; *unexplained*, the errors that blame the
    filtering wrongly, and why."""
    if isinstance(got, dict) and isinstance(got.get("name"), str):
        where = f"{where}/{got['name']}"            # a sub-node
    if isinstance(got, dict) and isinstance(got.get("error"), str) \
            and "filtered" in got["error"]:
        at, w = f"{where or '/'}: {got['error']}", why(got["error"])
        if w is None:
            return "filtered", "filtered", [at], []
        return live, got, [], [f"{at} ({w})"]
    lines: list[str] = []
    bad: list[str] = []
    if isinstance(live, dict) and isinstance(got, dict):
        a, b = dict(live), dict(got)
        for k in set(live) & set(got):
            a[k], b[k], more, wrong = filtered_parts(
                live[k], got[k], why,
                where if k == "subnodes" else f"{where}/{k}")
            lines += more
            bad += wrong
        return a, b, lines, bad
    if isinstance(live, list) and isinstance(got, list) \
            and len(live) == len(got):
        out = [filtered_parts(x, y, why, where) for x, y in zip(live, got)]
        return ([o[0] for o in out], [o[1] for o in out],
                [ln for o in out for ln in o[2]],
                [ln for o in out for ln in o[3]])
    return live, got, lines, bad


def same(view: str, live: dict, got: dict, why) -> tuple[str | None, list]:
    """(How *got* (from a dump) differs from the *live* view, or None;
    the parts of it the filtering explains, :func:`filtered_parts`, which
    *why* judges)."""
    live, got, lines, bad = filtered_parts(live, got, why)
    if view == "check" and isinstance(got.get("findings"), list):
        # a check the dump cannot make (the page it reads was filtered
        # out) is a not-checked note there, not in the live view
        keep, gone = [], []
        for f in got["findings"]:
            msg = f.get("message")
            if f.get("id") == "not-checked" and f not in \
                    live.get("findings", []) and "filtered" in (msg or ""):
                w = why(msg)
                if w is None:
                    gone.append(f)
                    continue
                bad.append(f"check: {msg} ({w})")
            keep.append(f)
        if gone:
            counts = dict(got.get("counts") or {})
            counts["info"] = counts.get("info", 0) - len(gone)
            got = dict(got, findings=keep, counts=counts)
            lines += [f"check: {f['message']}" for f in gone]
    if lines and isinstance(got.get("notes"), list):
        # the view's own word on such errors ("expected after restore")
        got = dict(got, notes=[n for n in got["notes"]
                               if n in (live.get("notes") or [])])
    if view in ("map", "tracker"):
        keys = ["ranges"] + (["generation", "map_phys", "bitmap_bytes"]
                             if view == "map" else ["layout", "finalized"])
    else:                       # the whole document, but for its source
        # (check: where the FDT was read differs too: debugfs live,
        # kho_out.fdt in a dump)
        keys = sorted((set(live) | set(got))
                      - {"source", "fdt_source", "problems",
                         "scratch_accounting"})
    diff = [k for k in keys if live.get(k) != got.get(k)]
    # status's scratch accounting moves while the kernel runs (free lists):
    # only what does not move must be equal
    la, ga = live.get("scratch_accounting"), got.get("scratch_accounting")
    if isinstance(la, dict) and isinstance(ga, dict):
        diff += [f"scratch_accounting.{k}" for k in
                 ("cma_total", "scratch_size", "origin", "ram")
                 if la.get(k) != ga.get(k)]
    elif la != ga:
        diff.append("scratch_accounting")
    if diff:
        return (f"{view}: {', '.join(diff)} differ from the live view"
                + "".join(f"; the filtering does not explain {b}"
                          for b in bad),
                lines)
    if view == "status":
        new = [p for p in got.get("problems", [])
               if p not in live.get("problems", [])]
        unexplained = [(p, why(p)) for p in new if why(p) is not None]
        if unexplained:
            p, w = unexplained[0]
            return (f"status: problem not in the live view: {p}"
                    + (f" (the filtering does not explain it: {w})"
                       if "filtered" in p else ""), lines)
        lines += new
    return None, lines


def judge(workdir: Path, vmlinux: Path, cli, cli_broken,
          why_none: str | None) -> tuple[str, str, dict]:
    """S7's verdict from the guest's files in *workdir*/results and the
    host CLI (*cli*, like vmtests/run's host_cli) on the dumps: (status,
    reason, details)."""
    res = workdir / "results"
    why_none = why_none or "QEMU exited"
    kd = read_json(res / "kdump.json")
    if not kd:
        return "fail", f"no kdump.json from the guest ({why_none})", {}
    v = kd.get("scenarios", {}).get("S7")
    if v:                           # failed (or cannot) before the panic
        return (v.get("status", "fail"), "guest: " + v.get("reason", ""),
                {"lacks": v.get("lacks")})
    cr = read_json(res / "crash.json")
    if not cr:
        return "fail", (f"panicked (kexec_crash_loaded="
                        f"{kd.get('kexec_crash_loaded')}) but the crash "
                        f"kernel wrote no crash.json ({why_none})"), {}
    if cr.get("error"):
        return "fail", "crash kernel: " + cr["error"], {}
    broken = cli_broken()
    if broken:
        return "fail", broken, {}
    details: dict = {"dumps": {}}
    fails, notes, sizes = [], [], []
    # what each dump holds, read here (not by kho_inspect): an error that
    # blames the filtering must name RAM the dump lacks (filtered_why)
    loads = elf_loads(res / DUMPS[1])
    virt = [(v, p, m) for p, v, _, m in loads]
    whys, held_from = {}, {}
    for name in DUMPS:
        held, held_from[name] = kdump_held(res / name), "its page bitmap"
        if held is None:                # the ELF dump; a -c one unread
            held, held_from[name] = ((elf_held(loads), f"{DUMPS[1]} "
                                      "PT_LOADs") if loads else (None, None))
        whys[name] = functools.partial(filtered_why, held=held,
                                       ram=kd.get("ram") or [], virt=virt)
    for name in DUMPS:
        d = cr.get("dumps", {}).get(name) or {}
        path = res / name
        if d.get("rc") != 0 or not path.exists():
            last = (d.get("output") or "").strip().splitlines() or ["?"]
            fails.append(f"makedumpfile {d.get('options', name)} rc="
                         f"{d.get('rc')}"
                         + ("" if path.exists() else f", no {name}")
                         + f": {last[-1][:150]}")
            continue
        sizes.append(f"{name} {path.stat().st_size / 2**20:.1f} MiB")
        per = details["dumps"][name] = {"size": path.stat().st_size,
                                        "makedumpfile_s": d.get("seconds"),
                                        "held_from": held_from[name]}
        for view in VIEWS + ("incoming",):
            t = time.monotonic()
            r = cli(view, "--json", "--core", str(path), "-s", str(vmlinux))
            per[view] = {"rc": r.returncode,
                         "s": round(time.monotonic() - t, 1)}
            (workdir / f"host-{name}-{view}.stderr").write_text(r.stderr)
            (workdir / f"host-{name}-{view}.json").write_text(r.stdout)
            livej = res / f"s7-live-{view}.json"
            live_rc = (kd.get("live", {}).get(view) or {}).get("rc")
            line = one_line(r.stderr)
            if view == "incoming" and live_rc == 2:
                # a cold boot: nothing incoming, live or in the dump
                want = (kd["live"]["incoming"].get("stderr") or "").strip()
                if r.returncode == 2 and line == want:
                    per[view]["na"] = line
                    continue
                fails.append(f"{name}: incoming rc={r.returncode} "
                             f"({(line or r.stderr.strip()[-150:])}); live "
                             f"it was: {want}")
                continue
            if "Traceback" in r.stderr:
                fails.append(f"{name}: {view} rc={r.returncode}: traceback: "
                             + r.stderr.strip().splitlines()[-1][:200])
                continue
            if r.returncode == 2 and line and "filtered" in line:
                w = whys[name](line)
                if w is None:
                    per[view]["filtered"] = line
                    notes.append(f"{name} {view}: {line}")
                else:
                    fails.append(f"{name}: {view} rc=2: {line} (the "
                                 f"filtering does not explain it: {w})")
                continue
            if r.returncode != (live_rc or 0) or line:
                fails.append(f"{name}: {view} rc={r.returncode}: "
                             + (line or r.stderr.strip()[-200:]))
                continue
            live, got = read_json(livej), read_json(
                workdir / f"host-{name}-{view}.json")
            if live is None or got is None:
                fails.append(f"{name}: {view}: no JSON to compare (live "
                             f"rc={live_rc}, dump rc={r.returncode})")
                continue
            diff, explained = same(view, live, got, whys[name])
            if explained:
                per[view]["filtered"] = explained
                notes += [f"{name} {view}: "
                          + ln.replace(f"{res}/", "") for ln in explained]
            if diff:
                fails.append(f"{name}: {diff}")
            else:
                per[view]["same"] = not explained
                if view in ("map", "tracker"):
                    per[view]["ranges"] = len(got.get("ranges", []))
    # the fault policy on a page the filtering did remove
    elf = res / DUMPS[1]
    page = filtered_page(elf, kd.get("ram")) if elf.exists() else None
    details["filtered_page"] = page
    if page is None and elf.exists():
        fails.append(f"{DUMPS[1]}: no hole in the ELF dump: nothing "
                     "filtered?")
    elif page is not None:
        for name in DUMPS:
            if name not in details["dumps"]:    # makedumpfile failed
                continue
            r = cli("map", "--core", str(res / name), "--fdt-phys",
                    hex(page))
            line = one_line(r.stderr)
            details["dumps"][name]["filtered_probe"] = line or r.stderr[-300:]
            w = whys[name](line)
            if r.returncode != 2 or w is not None \
                    or f"{page:#x}" not in line:
                fails.append(f"{name}: map --fdt-phys {page:#x} (a page "
                             f"the filtering removed) rc={r.returncode}: "
                             + (line or r.stderr.strip()[-200:])
                             + " (must be one line naming the page and "
                             "the filtering" + (f"; {w}" if w else "")
                             + ")")
    (workdir / "s7-details.json").write_text(json.dumps(details, indent=1)
                                             + "\n")
    if fails:
        return "fail", "; ".join(fails), details
    m = details["dumps"].get(DUMPS[0], {}).get("map", {}).get("ranges")
    inc = next((d["incoming"]["na"] for d in details["dumps"].values()
                if d.get("incoming", {}).get("na")), None)
    matched = [v for v in VIEWS + ("incoming",) if all(
        d.get(v, {}).get("same") for d in details["dumps"].values())]
    return "pass", (
        f"{', '.join(sizes)}: " + (", ".join(matched) + " == live"
                                   if matched else "nothing matched live")
        + (f" ({m} ranges)" if m is not None else "")
        + ("; " + "; ".join(notes) if notes else "")
        + ("; incoming n/a (cold boot)" if inc else "")
        + f"; filtered page {page:#x}: one line from both"), details
