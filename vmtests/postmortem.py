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
the filtering removed.  It then asks for a page the filtering did remove
(``map --fdt-phys`` inside a hole of the ELF dump): that must be one line
naming the page and the filtering, from both files.
"""

from __future__ import annotations

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


def elf_holes(path: Path) -> list[tuple[int, int]]:
    """[start, end) physical ranges a makedumpfile ELF dump declares but does
    not hold: a PT_LOAD's memory past its file data (p_memsz > p_filesz),
    which is how makedumpfile -E leaves out the pages it filtered."""
    with open(path, "rb") as f:
        eh = f.read(64)
        if eh[:4] != b"\x7fELF" or eh[4] != 2:
            return []
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    out = []
    for i in range(len(table) // 56):
        ptype, _, _, _, paddr, filesz, memsz, _ = struct.unpack_from(
            "<IIQQQQQQ", table, i * 56)
        if ptype == 1 and memsz > filesz:
            out.append((paddr + filesz, paddr + memsz))
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


def names_filtering(line: str | None) -> bool:
    """Does a one-line error say which page the filtering removed?"""
    return bool(line and "filtered" in line
                and re.search(r"0x[0-9a-f]{3,}", line))


def filtered_parts(live, got, where: str = "") -> tuple:
    """(*live*, *got*, lines): every part the dump's view could not decode
    because the filtering removed a page it needs (a dict in *got* whose
    ``"error"`` names the page and the filtering, e.g. a sub-node blob
    pointing at memory its client freed after restoring it) replaced by
    the same marker in both documents; *lines* say where and what."""
    if isinstance(got, dict) and isinstance(got.get("name"), str):
        where = f"{where}/{got['name']}"            # a sub-node
    if isinstance(got, dict) and isinstance(got.get("error"), str) \
            and names_filtering(got["error"]):
        return "filtered", "filtered", [f"{where or '/'}: {got['error']}"]
    lines: list[str] = []
    if isinstance(live, dict) and isinstance(got, dict):
        a, b = dict(live), dict(got)
        for k in set(live) & set(got):
            a[k], b[k], more = filtered_parts(
                live[k], got[k], where if k == "subnodes" else f"{where}/{k}")
            lines += more
        return a, b, lines
    if isinstance(live, list) and isinstance(got, list) \
            and len(live) == len(got):
        out = [filtered_parts(x, y, where) for x, y in zip(live, got)]
        return ([o[0] for o in out], [o[1] for o in out],
                [ln for o in out for ln in o[2]])
    return live, got, lines


def same(view: str, live: dict, got: dict) -> tuple[str | None, list]:
    """(How *got* (from a dump) differs from the *live* view, or None;
    the parts of it the filtering explains, :func:`filtered_parts`)."""
    live, got, lines = filtered_parts(live, got)
    if view == "check" and isinstance(got.get("findings"), list):
        # a check the dump cannot make (the page it reads was filtered
        # out) is a not-checked note there, not in the live view
        keep, gone = [], []
        for f in got["findings"]:
            (gone if f.get("id") == "not-checked" and f not in
             live.get("findings", []) and names_filtering(f.get("message"))
             else keep).append(f)
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
        return f"{view}: {', '.join(diff)} differ from the live view", lines
    if view == "status":
        new = [p for p in got.get("problems", [])
               if p not in live.get("problems", [])]
        unexplained = [p for p in new if not names_filtering(p)]
        if unexplained:
            return (f"status: problem not in the live view: "
                    f"{unexplained[0]}", lines)
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
                                        "makedumpfile_s": d.get("seconds")}
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
            if r.returncode == 2 and names_filtering(line):
                per[view]["filtered"] = line
                notes.append(f"{name} {view}: {line}")
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
            diff, explained = same(view, live, got)
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
            if r.returncode != 2 or not names_filtering(line) \
                    or f"{page:#x}" not in line:
                fails.append(f"{name}: map --fdt-phys {page:#x} (a page "
                             f"the filtering removed) rc={r.returncode}: "
                             + (line or r.stderr.strip()[-200:])
                             + " (must be one line naming the page and "
                             "the filtering)")
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
