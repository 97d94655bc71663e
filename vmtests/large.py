"""S11: a kernel holding more than a million preserved blocks, on the host.

One boot of its own per kernel: a 6 GiB guest with small KHO scratch areas
(guest/large.py) where the kho_workload module preserves 1,064,960 order-0
blocks (16 gapless runs of 65,536, and 16,384 one every other page) while
``trace --summary`` counts the calls, then 65,536 more untraced. The host
dumps it over QMP and runs every command on the dump as a user would
(bench/large_map.py measures them); the guest then KHO-kexecs into the same
kernel without loading the module, and the host dumps that kernel too.

The verdict compares each view with the module's own ``list`` (its
independent truth: what it asked KHO to preserve, read in the guest):

* ``trace --summary`` counted every traced ``kho_preserve_folio`` call;
* ``map`` (the reference decoder), over the memory of the list's blocks,
  holds exactly the list's blocks (same phys and order: none missing,
  merged, split or reaching in; other clients' blocks elsewhere);
* ``map`` == what tests/naive_radix.py or naive_v1.py read in the guest
  (guest/naive.py), the whole map;
* ``tracker`` (the drgn walker) == ``map``;
* ``check``: no error, no unclaimed block, ``kho_workload`` owns exactly
  the list's blocks (its scatter items and its blob);
* ``capture``'s image decodes to the same map;
* stage 2: ``incoming``'s markers hold every block of the list (nothing
  restored them) and nothing stage 1's map did not hold; a kernel without
  page magic (6.16/6.17) cannot tell markers apart, which is named.

Time and peak memory of each command are recorded as ratios to the decoder
(bench/large_map.py), in the run directory's ``bench-large.txt``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import kmod
import qemu
from results import read_json

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "bench"))
import large_map  # noqa: E402

#: the guest's runner, for S1's rule (its check_map) on the module's list:
#: diff_over_truth; loaded by path under a name of its own, as
#: vmtests/guest on sys.path would shadow the host's large, numa, luo...
_spec = importlib.util.spec_from_file_location("guest_stage",
                                               HERE / "guest" / "stage.py")
guest_stage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guest_stage)
#: runs as the naive readers give them (tests/naive_radix.py, nothing from
#: kho_inspect), to hold the map against what it read in the guest
_spec = importlib.util.spec_from_file_location(
    "naive_radix", HERE.parent / "tests" / "naive_radix.py")
naive_radix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive_radix)

MEMORY = "6G"
#: lowmem, global, per-node scratch: the default (a share of the kernel's
#: own memblock reservations, 1.6 GiB in a 6 GiB guest) would leave too
#: little outside scratch for 4 GiB of preserved blocks
SCRATCH = "kho_scratch=64M,512M,64M"
WAIT = 900                  # boot + scatter, or kexec + boot, to a request
DUMP_TIMEOUT = 900
#: the scale the issue asks for
MIN_BLOCKS = 1_000_000
PAGE = 4096


def scatter_items(list_text: str) -> list[tuple[int, int, int]]:
    """``(id, blocks, preserve_ns)`` of the module's scatter items, by id;
    ``preserve_ns`` is the module's own ktime around the preserve loop
    alone."""
    out = []
    for ln in list_text.splitlines():
        kv = dict(f.split("=", 1) for f in ln.split() if "=" in f)
        if kv.get("kind") == "scatter":
            out.append((int(kv["id"]), int(kv["nr_pages"]),
                        int(kv.get("preserve_ns", 0))))
    return sorted(out)


def module_blocks(list_text: str) -> tuple[set[int], int]:
    """The order-0 blocks the module's scatter items preserved (their
    phys), and how many blocks its other preserved items hold (the blob:
    one folio each)."""
    scatter, other = set(), 0
    for ln in list_text.splitlines():
        if ln.startswith("#") or not ln.strip():
            continue
        kv = dict(f.split("=", 1) for f in ln.split() if "=" in f)
        if kv.get("state") != "preserved":
            continue
        if kv["kind"] == "scatter":
            phys, stride = int(kv["phys"], 16), int(kv["stride"])
            scatter.update(phys + i * stride * PAGE
                           for i in range(int(kv["nr_pages"])))
        elif kv["kind"] in ("blob", "folio"):
            other += 1
        else:
            raise ValueError(f"unexpected item in the large plan: {ln}")
    return scatter, other


def module_runs(list_text: str) -> tuple[list[tuple[int, int, int]], int]:
    """The ``(phys, order, count)`` runs of the blocks the module's
    preserved items hold (a scatter item's order-0 blocks: one run when
    gapless, one run a block otherwise; a blob's or folio's one block),
    and how many of those blocks are the scatter items'; ValueError when
    two items overlap."""
    runs, scatter = [], 0
    for ln in list_text.splitlines():
        if ln.startswith("#") or not ln.strip():
            continue
        kv = dict(f.split("=", 1) for f in ln.split() if "=" in f)
        if kv.get("state") != "preserved":
            continue
        phys = int(kv["phys"], 16)
        if kv["kind"] == "scatter":
            n, stride = int(kv["nr_pages"]), int(kv["stride"])
            runs += ([(phys, 0, n)] if stride == 1 else
                     [(phys + i * stride * PAGE, 0, 1) for i in range(n)])
            scatter += n
        elif kv["kind"] in ("blob", "folio"):
            runs.append((phys, int(kv["order"]), 1))
        else:
            raise ValueError(f"unexpected item in the large plan: {ln}")
    spans = sorted((p, p + n * (PAGE << o)) for p, o, n in runs)
    for (_, end), (p, _) in zip(spans, spans[1:]):
        if p < end:
            raise ValueError(f"its items overlap at 0x{p:x}")
    return runs, scatter


def map_differs(mine: list[tuple[int, int, int]], ranges) -> str | None:
    """Why the map's *ranges* (JSON) are not exactly the module's blocks
    *mine* (:func:`module_runs`) over the memory those cover, or None:
    S1's rule (guest/stage.py, diff_over_truth), as runs, n log n."""
    missing, extra = guest_stage.diff_over_truth(
        mine, [(r["phys"], r["order"], r["count"]) for r in ranges or []])
    said = [f"{sum(n for *_, n in runs)} {what} (e.g. 0x{runs[0][0]:x} "
            f"order {runs[0][1]})"
            for runs, what in ((missing, "of its blocks missing"),
                               (extra, "blocks not its own"))
            if runs]
    if not said:
        return None
    return (f"over the module's {sum(n for *_, n in mine)} blocks' memory "
            "the map differs from its list: " + ", ".join(said))


def naive_differs(said: dict | None, path: Path, ranges) -> str | None:
    """Why the map's *ranges* (JSON) are not what guest/naive.py read in
    the guest (*said*: its record in large-1.json; *path*: its runs), or
    None; None too when it could not read the map (no debug info)."""
    if not said or said.get("error"):
        return (said or {}).get("error", "no reading")
    if said.get("blocks") is None:
        return None
    theirs = read_json(path)
    if theirs is None:
        return f"no {path.name}"
    mine = naive_radix.runs(
        (r["phys"] + i * (PAGE << r["order"]), r["order"])
        for r in ranges for i in range(r["count"]))
    theirs = [tuple(r) for r in theirs]
    if mine == theirs:
        return None
    diff = sorted(set(mine) ^ set(theirs))[:1]
    return (f"{len(mine)} runs in the map, {len(theirs)} in the naive "
            f"reading; first difference at 0x{diff[0][0]:x} order "
            f"{diff[0][1]}")


def traced_calls(path: Path, function: str) -> int | None:
    """Calls of *function* in the last ``trace --summary --json`` summary
    of *path* (all orders), or None without one."""
    last = None
    try:
        for ln in path.read_text().splitlines():
            try:
                d = json.loads(ln)
            except ValueError:
                continue
            if d.get("type") == "summary":
                last = d
    except OSError:
        return None
    if last is None:
        return None
    return sum(r["count"] for r in last["rows"] if r["function"] == function)


def judge1(res: Path, out: Path, fig: dict) -> tuple[str | None, str]:
    """Stage 1: (why it failed or None, what it showed)."""
    g = read_json(res / "large-1.json") or {}
    bad = [c for c in g.get("commands", []) if c["error"]]
    if g.get("insmod"):
        return f"kho_workload: {g['insmod']}", ""
    if bad:
        return (f"{len(bad)} module command(s) failed: {bad[0]['cmd']}: "
                f"{bad[0]['error']}"), ""
    try:
        mine, scatter = module_runs((res / "large-list.txt").read_text())
    except (OSError, ValueError, KeyError) as e:
        return f"module list: {e}", ""
    if scatter < MIN_BLOCKS:
        return f"the module preserved only {scatter} blocks", ""
    if g.get("trace_start"):
        return f"trace --summary: {g['trace_start']}", ""
    if (g.get("untraced") or {}).get("error"):
        return f"untraced {g['untraced']['cmd']}: {g['untraced']['error']}", ""
    # every scatter item but the last was preserved while traced
    items = scatter_items((res / "large-list.txt").read_text())
    traced, last = items[:-1], items[-1]
    want = sum(n for _, n, _ in traced)
    calls = traced_calls(res / "large-trace.jsonl", "kho_preserve_folio")
    if calls != want:
        return (f"trace --summary counted {calls} kho_preserve_folio calls "
                f"(rc {g.get('trace_rc')}); the module made {want}"), ""
    fig["trace"] = {"calls": calls,
                    "secs": round(sum(t for *_, t in traced) / 1e9, 4),
                    "untraced_calls": last[1],
                    "untraced_secs": round(last[2] / 1e9, 4)}
    for name in ("map", "tracker", "check", "capture", "image_map"):
        c = fig.get(name) or {}
        if c.get("rc") not in (0,):
            return (f"{name} rc={c.get('rc')}: "
                    f"{(c.get('stderr') or '').strip()[-200:]}"), ""
    m = read_json(out / "map.json")
    t = read_json(out / "tracker.json")
    chk = read_json(out / "check.json")
    img = read_json(out / "image-map.json")
    if not (m and t and chk and img):
        return "a command's JSON did not parse", ""
    differs = map_differs(mine, m["ranges"])
    if differs:
        return differs, ""
    differs = naive_differs(g.get("naive"), res / "large-naive.json",
                            m["ranges"])
    if differs:
        return f"map against the naive reader: {differs}", ""
    if t["ranges"] != m["ranges"]:
        return "tracker != map", ""
    if img["ranges"] != m["ranges"]:
        return "capture's image decodes to another map", ""
    unclaimed = [f for f in chk["findings"] if f["id"] == "unclaimed"]
    errors = [f for f in chk["findings"] if f["severity"] == "error"]
    if errors or unclaimed:
        f = (errors or unclaimed)[0]
        return f"check: {f['id']}: {f['message'][:150]}", ""
    owned = chk["owners"].get("kho_workload", {}).get("blocks")
    listed = sum(n for *_, n in mine)
    if owned != listed:
        return (f"check: kho_workload owns {owned} blocks, its list "
                f"{listed}"), ""
    return None, (f"{fig['blocks']} blocks in {fig['runs']} runs ("
                  f"{scatter} the module's, every call counted by trace "
                  "--summary): map == its list over its blocks' memory, "
                  "tracker, capture == map; check: no error, all owned")


def judge2(res: Path, out: Path, fig: dict, mine: set[int],
           stage1_map: set[tuple[int, int]]) -> tuple[str | None, str]:
    c = fig.get("incoming") or {}
    if c.get("rc") != 0:
        return (f"incoming rc={c.get('rc')}: "
                f"{(c.get('stderr') or '').strip()[-200:]}"), ""
    doc = read_json(out / "incoming.json") or {}
    scan = doc.get("scan") or {}
    if scan.get("markers") is None:
        return None, ("stage 2: markers not checkable: kernel lacks page "
                      f"magic ({scan.get('note', '')[:80]})")
    marked = set()
    for r in scan["markers"]:
        bs = PAGE << r["order"]
        marked.update((r["phys"] + i * bs, r["order"])
                      for i in range(r["count"]))
    m0 = {p for p, o in marked if o == 0}
    lost = mine - m0
    extra = marked - stage1_map
    if lost:
        return (f"stage 2: {len(lost)} of the module's blocks carry no "
                f"marker (e.g. 0x{min(lost):x})"), ""
    if extra:
        p, o = min(extra)
        return (f"stage 2: {len(extra)} markers stage 1's map did not "
                f"hold (e.g. 0x{p:x} order {o})"), ""
    return None, (f"stage 2: {len(marked)} blocks marked, every one of "
                  f"the module's among them; {scan.get('pages')} struct "
                  f"pages scanned in {c['secs']:.1f} s")


def run(build, rootfs: Path, project: Path, workdir: Path,
        keep: bool = False) -> tuple[str, str, dict]:
    """(status, reason, figures) of S11 on *build*."""
    res = workdir / "results"
    out = workdir / "host"
    res.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(kmod.build_module(build), res / "kho_workload.ko")
    vm = str(build.vmlinux)
    fig: dict = {}
    why, said = None, []
    mine: set[int] = set()
    stage1_map: set[tuple[int, int]] = set()
    g = qemu.Guest(bzimage=build.bzimage, rootfs=rootfs, project=project,
                   kernel_dir=build.dir, results=res, workdir=workdir,
                   init_args=["stage=large-1"], memory=MEMORY,
                   extra_append=SCRATCH)
    t0 = time.monotonic()
    try:
        for n in (1, 2):
            req = res / f"large-dump-request-{n}"
            if not g.wait_for(req.exists, WAIT):
                state = "stuck" if g.alive() else "QEMU exited"
                why = why or f"no dump request {n} within {WAIT}s ({state})"
                break
            core = workdir / f"large-{n}.elf"
            t = time.monotonic()
            try:
                g.qmp().dump_guest_memory(core, timeout=DUMP_TIMEOUT)
            except (qemu.QMPError, OSError) as e:
                why = f"dump {n}: {e}"
                (res / f"large-dump-done-{n}").write_text(f"error: {e}\n")
                break
            fig[f"dump{n}_secs"] = round(time.monotonic() - t, 1)
            if n == 1:
                fig.update(large_map.stage1(str(core), vm, out))
                w, s = judge1(res, out, fig)
                if not w:
                    mine, _ = module_blocks(
                        (res / "large-list.txt").read_text())
                    m = read_json(out / "map.json")
                    stage1_map = set()
                    for r in m["ranges"]:
                        bs = PAGE << r["order"]
                        stage1_map.update((r["phys"] + i * bs, r["order"])
                                          for i in range(r["count"]))
            else:
                fig.update(large_map.stage2(str(core), vm, out))
                w, s = (judge2(res, out, fig, mine, stage1_map) if not why
                        else (None, ""))
            why = why or w
            said.append(s)
            if not keep:
                core.unlink(missing_ok=True)
            (res / f"large-dump-done-{n}").write_text("ok\n")
            if why:
                break
        g.wait_exit(120)
    finally:
        g.kill()
    fig["guest"] = {k: v for k, v in (read_json(res / "large-1.json")
                                      or {}).items()
                    if k in ("commands", "meminfo", "meminfo_boot",
                             "finalize_secs")}
    fig["guest2"] = read_json(res / "large-2.json")
    fig["secs"] = round(time.monotonic() - t0, 1)
    (workdir / "figures.json").write_text(json.dumps(
        {"figures": fig, "summary": large_map.summary(fig)}, indent=1))
    try:
        (workdir / "bench-large.txt").write_text(large_map.table(fig) + "\n")
    except (KeyError, TypeError, ImportError):
        pass
    if why:
        return "fail", why + f" (console: {workdir}/console.log)", fig
    s = large_map.summary(fig)
    ratios = ", ".join(f"{k} {v}" for k, v in s.items()
                       if k in ("tracker/decoder", "check/decoder",
                                "in-process walker/decoder",
                                "in-process walker B/run",
                                "capture --hashes hashed MiB/s",
                                "traced preserve calls/s"))
    return "pass", "; ".join(x for x in said if x) + f"; {ratios}", fig
