"""vmtests/cross.py's S10 verdict, without QEMU (issue #16 section 3): a
pair passes only when A's check predicted the id :data:`cross.PAIRS`
names and B's console shows that very failure, in the lines the kernel
prints for it; never on "B did not come up" alone. The consoles are
excerpts of real runs (~/.cache/kho-inspect/runs/<run>/<dir>/console.log,
cited at each)."""

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import pytest

VMTESTS = Path(__file__).resolve().parent.parent / "vmtests"
sys.path.insert(0, str(VMTESTS))        # cross imports kmod, qemu, results


def _load():
    """vmtests/cross.py under a name of its own: vmtests/guest/cross.py
    (the guest side, which test_rig.py imports) is a "cross" too."""
    loader = importlib.machinery.SourceFileLoader(
        "vmtests_cross", str(VMTESTS / "cross.py"))
    mod = importlib.util.module_from_spec(
        importlib.util.spec_from_loader("vmtests_cross", loader))
    loader.exec_module(mod)
    return mod


cross = _load()

BITMAP = ("6.17", "6.18")
COMPAT = ("6.18", "7.3")
RELEASE = {"6.17": "6.17.8", "6.18": "6.18.15", "7.3": "7.3.4"}
# A's findings, as check --json worded them (run 20261207-232825)
SAID = {"next-bitmap": "6.18.15 reads kho-v1 bitmaps of 4096 bytes; this "
        "map was written with 512-byte bitmaps: both say 'kho-v1', and it "
        "will reserve the wrong pages",
        "next-compatible": "7.3.4 accepts only 'kho-v4'; this handover is "
        "'kho-v1': it will refuse the whole handover and every preserved "
        "block is lost"}
ORDER = {"id": "order", "message": "0x5e000000 order 11: 8 MiB blocks, "
         "above MAX_PAGE_ORDER 10"}
# two of A's blocks (run 20261207-232825, cross-6.17-6.18, cross-a-map)
MAP = {"ranges": [{"phys": 48242688, "order": 1, "count": 1},
                  {"phys": 1577058304, "order": 11, "count": 1}]}

# -- consoles (console.log has CRLF line ends: kept)

#: the end of A's part, every run
A_TAIL = ["cross: run: /usr/bin/python3 -m kho_inspect check --json",
          "cross: run: kexec -e",
          "kexec_core: Starting new kernel"]
#: 20261207-232825/cross-6.17-6.18: 6.18 takes 6.17's kho-v1 handover and
#: faults in kho_memory_init() (deserialize_bitmap() inlined) setting
#: page->private of a page past its memory map
OOPS_618 = [
    "Linux version 6.18.15 (root@vm) (gcc (Debian 12.2.0-14+deb12u1) "
    "12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 Mon Dec  7 20:25:06 "
    "UTC 2026",
    "random: crng init done",
    "KHO: found kexec handover data. Will skip init for some devices",
    "printk: legacy bootconsole [earlyser0] enabled",
    "mem auto-init: stack:all(zero), heap alloc:off, heap free:off",
    "BUG: unable to handle page fault for address: ffd400000201a828",
    "#PF: supervisor write access in kernel mode",
    "#PF: error_code(0x0002) - not-present page",
    "PGD 7d7fd067 P4D 7d7fc067 PUD 7d7fb067 PMD 0 ",
    "Oops: Oops: 0002 [#1]",
    "CPU: 0 UID: 0 PID: 0 Comm: swapper Not tainted 6.18.15 #1 NONE ",
    "RIP: 0010:kho_memory_init+0x22b/0x530",
    "RBP: ff1100000343a000 R08: 4b484f5000000000 R09: 0000000000001ad8",
    "Call Trace:",
    " <TASK>",
    " mm_core_init+0xe6/0x2d0",
    " start_kernel+0x249/0x5c0",
    " </TASK>",
    "---[ end trace 0000000000000000 ]---",
    "RIP: 0010:kho_memory_init+0x22b/0x530",
    "CR2: ffd400000201a828 CR3: 000000007ce2c000 CR4: 00000000000010b0",
    "Kernel panic - not syncing: Attempted to kill the idle task!"]
#: 20261207-203827/cross-6.17-6.18: the same oops, elsewhere
OOPS_618_B = [
    "KHO: found kexec handover data. Will skip init for some devices",
    "BUG: unable to handle page fault for address: ffd4000002003028",
    "Oops: Oops: 0002 [#1]",
    "RIP: 0010:kho_memory_init+0x22b/0x530",
    "CR2: ffd4000002003028 CR3: 000000007ce2c000 CR4: 00000000000010b0",
    "Kernel panic - not syncing: Attempted to kill the idle task!"]
#: 20261207-232825/cross-6.18-7.3: 7.3 refuses 6.18's kho-v1 handover in
#: kho_populate() and boots without it, to userspace
REFUSAL_73 = [
    "Linux version 7.3.4 (root@vm) (gcc (Debian 12.2.0-14+deb12u1) 12.2.0, "
    "GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT Mon Dec  7 "
    "19:18:22 UTC 2026",
    "random: crng init done",
    "KHO: setup: handover FDT (0x2f6c000) is incompatible with 'kho-v4': 1",
    "KHO: disabling KHO revival",
    "printk: legacy bootconsole [earlyser0] enabled",
    "Run /kho-init as init process",
    "vmtests-guest [   0.0s]: stage cross-b on 7.3.4",
    "cross: run: dmesg",
    "vmtests-guest: stage.py exited with 0",
    "reboot: Power down"]
#: 20261207-232825/cross-6.17-7.3: the same from 6.17
REFUSAL_73_FROM_617 = [
    "KHO: setup: handover FDT (0x2f60000) is incompatible with 'kho-v4': 1",
    "KHO: disabling KHO revival",
    "Run /kho-init as init process",
    "reboot: Power down"]
#: 20261207-232825/7.3: 7.3 KHO-kexecs into itself and takes the handover
TOOK_73 = ["KHO: found kexec handover data.",
           "KHO: exec from: 7.3.4 (count 1)",
           "Run /kho-init as init process"]
#: 20261207-232825/6.18: a WARN_ON_ONCE in 6.18's kho_restore_page() (the
#: magic check; kho_workload's order-11 block), the old WARNING format
WARN_618 = [
    "------------[ cut here ]------------",
    "WARNING: CPU: 0 PID: 52 at kernel/kexec_handover.c:247 "
    "kho_restore_page+0x9e/0x130",
    "Modules linked in: kho_workload(O+)",
    "RIP: 0010:kho_restore_page+0x9e/0x130",
    "Call Trace:",
    " <TASK>",
    " kho_restore_pages+0x6c/0xb0",
    " kw_restore.constprop.0+0x6af/0xa60 [kho_workload]",
    " ? kw_exit+0x960/0x960 [kho_workload]"]
#: 20261207-232825/7.3: the same WARN in 7.3's format
WARN_73 = [
    "------------[ cut here ]------------",
    "WARNING: kernel/liveupdate/kexec_handover.c:529 at "
    "kho_restore_page+0x194/0x1b0, CPU#0: python3/50",
    "Modules linked in: kho_workload(O)",
    "RIP: 0010:kho_restore_page+0x194/0x1b0",
    "Call Trace:",
    " <TASK>",
    " kho_restore_folio+0xf/0x30",
    " kw_run+0x94b/0x11d0 [kho_workload]"]
TOOK_618 = OOPS_618[:5]             # B took it, nothing wrong yet


def con(*b_lines, a_lines=A_TAIL) -> str:
    """A whole console.log: A's tail, then B's lines."""
    return "\r\n".join([*a_lines, *b_lines]) + "\r\n"


def a_rec(pair, findings=None, rc=1, auto=None, **more) -> dict:
    """What A recorded for *pair*: by default, a check flagging the id
    PAIRS names, from --next-vmlinux and from the loaded image alike."""
    want = cross.PAIRS[pair]
    nxt = RELEASE[pair[1]]
    found = ([{"id": want, "message": SAID[want]}, ORDER]
             if findings is None else findings)
    rec = {"uname": RELEASE[pair[0]], "insmod": 0, "finalized": True,
           "map_rc": 0, "check_rc": rc, "check_stderr": "",
           "kexec_load": {"rc": 0, "stderr": ""}, "check_auto_rc": rc,
           "check_auto_stderr": "",
           "check": {"next": nxt, "next_source": "--next-vmlinux",
                     "findings": found},
           "check_auto": auto or {"next": nxt,
                                  "next_source": "loaded kexec image",
                                  "findings": found},
           "map": MAP}
    rec.update(more)
    return rec


def b_refused(**more) -> dict:
    """7.3's cross-b.json after refusing (run 20261207-232825,
    cross-6.18-7.3, shortened)."""
    rec = {"uname": "7.3.4", "in_fdt": False, "incoming_rc": 2,
           "incoming_stderr": "kho-inspect: error: kho_in.fdt_phys is 0: "
           "this kernel was not booted through a KHO kexec (nothing "
           "incoming)", "incoming": None,
           "kho_lines": ["[    0.000000] KHO: setup: handover FDT "
                         "(0x2f6c000) is incompatible with 'kho-v4': 1"]}
    rec.update(more)
    return rec


def b_markers(markers) -> dict:
    """6.18's cross-b.json had it come up: its incoming markers."""
    return {"uname": "6.18.15", "in_fdt": True, "incoming_rc": 0,
            "incoming_stderr": "", "kho_lines": [],
            "incoming": {"scan": {"markers": markers}}}


def judge(pair, a, b, console, why=None):
    return cross.verdict(pair, a, b, cross.b_console(console), why)


# -- what must pass

@pytest.mark.parametrize("b_lines", [OOPS_618, OOPS_618_B],
                         ids=["232825", "203827"])
def test_bitmap_pair_passes_on_the_oops_in_b_restore_path(b_lines):
    st, why = judge(BITMAP, a_rec(BITMAP), None, con(*b_lines))
    assert st == "pass", why
    assert "KHO: found kexec handover data" in why
    assert "RIP: 0010:kho_memory_init+0x22b/0x530" in why
    assert "BUG: unable to handle page fault" in why


@pytest.mark.parametrize("pair, b_lines", [
    (("6.18", "7.3"), REFUSAL_73), (("6.17", "7.3"), REFUSAL_73_FROM_617)])
def test_compatible_pairs_pass_on_b_refusal(pair, b_lines):
    st, why = judge(pair, a_rec(pair), b_refused(), con(*b_lines))
    assert st == "pass", why
    assert "is incompatible with 'kho-v4': 1 | KHO: disabling KHO " \
           "revival" in why


@pytest.mark.parametrize("warn", [WARN_618, WARN_73], ids=["6.18", "7.x"])
def test_bitmap_pair_passes_on_a_warn_in_b_restore_path(warn):
    # B took the handover, WARNed restoring a page the misread bitmaps
    # left without the magic, and never reached userspace
    st, why = judge(BITMAP, a_rec(BITMAP), None,
                    con(*TOOK_618, *warn), "timeout after 900s")
    assert st == "pass", why
    assert "kho_restore_page+0x" in why and "timeout after 900s" in why


def test_bitmap_pair_passes_when_b_comes_up_marking_other_blocks():
    marked = [{"phys": 48242688, "order": 1, "count": 1},
              {"phys": 0x7000000, "order": 0, "count": 3}]
    st, why = judge(BITMAP, a_rec(BITMAP), b_markers(marked),
                    con(*TOOK_618, "Run /kho-init as init process"))
    assert st == "pass", why
    assert "3 A never preserved, 1 of A's missing" in why


def test_crlf_and_lf_consoles_judge_alike():
    lf = con(*OOPS_618).replace("\r\n", "\n")
    assert judge(BITMAP, a_rec(BITMAP), None, lf) == judge(
        BITMAP, a_rec(BITMAP), None, con(*OOPS_618))


# -- B did not come up, without the predicted signature

def test_b_hung_silently_after_taking_the_handover_fails():
    st, why = judge(BITMAP, a_rec(BITMAP), None,
                    con(*TOOK_618, "Built 1 zonelists, mobility grouping "
                        "on.  Total pages: 524158"), "timeout after 900s")
    assert st == "fail"
    assert "timeout after 900s" in why
    # the last console lines, quoted
    assert "Built 1 zonelists, mobility grouping on." in why
    assert "no oops or WARN in its restore path" in why


def test_b_with_no_console_at_all_fails():
    # A never printed "Starting new kernel": its own lines are not B's
    console = "\r\n".join(A_TAIL[:2] + REFUSAL_73[2:4]) + "\r\n"
    assert cross.b_console(console) == ""
    st, why = judge(COMPAT, a_rec(COMPAT), None, console,
                    "timeout after 900s")
    assert st == "fail" and "no console from B" in why
    st, why = judge(BITMAP, a_rec(BITMAP), None, console)
    assert st == "fail" and "no console from B" in why


def test_b_panicking_elsewhere_fails():
    st, why = judge(BITMAP, a_rec(BITMAP), None, con(
        *TOOK_618, "VFS: Cannot open root device \"rootfs\" or "
        "unknown-block(0,0): error -6",
        "Kernel panic - not syncing: VFS: Unable to mount root fs on "
        "unknown-block(0,0)"))
    assert st == "fail"
    assert "Kernel panic - not syncing: VFS: Unable to mount root fs" in why


def test_an_oops_outside_the_restore_path_fails():
    # the RIP elsewhere; kho_memory_init only as an unreliable "?" frame
    st, why = judge(BITMAP, a_rec(BITMAP), None, con(
        *TOOK_618,
        "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        "Oops: Oops: 0000 [#1]",
        "RIP: 0010:virtio_dev_probe+0x1c/0x2f0",
        "Call Trace:",
        " <TASK>",
        " ? kho_memory_init+0x22b/0x530",
        " really_probe+0xde/0x380",
        "---[ end trace 0000000000000000 ]---",
        "Kernel panic - not syncing: Attempted to kill init!"))
    assert st == "fail", why
    assert "no oops or WARN in its restore path" in why
    assert "Attempted to kill init!" in why


def test_a_restore_path_oops_without_b_taking_the_handover_fails():
    no_took = [ln for ln in OOPS_618 if "KHO:" not in ln]
    st, why = judge(BITMAP, a_rec(BITMAP), None, con(*no_took))
    assert st == "fail" and "without taking the handover" in why


def test_the_lines_a_printed_are_not_b_signature():
    # A's console before the kexec carries B-like lines: they are A's
    a_lines = [*OOPS_618[2:12], *A_TAIL]
    st, why = judge(BITMAP, a_rec(BITMAP), None,
                    con("Linux version 6.18.15", a_lines=a_lines),
                    "timeout after 900s")
    assert st == "fail", why


# -- the wrong signature for the pair

def test_a_refusal_fails_the_bitmap_pair():
    for b in (None, b_refused(uname="6.18.15")):
        st, why = judge(BITMAP, a_rec(BITMAP), b, con(*REFUSAL_73))
        assert st == "fail" and "refused the handover" in why


def test_the_bitmap_oops_fails_a_compatible_pair():
    st, why = judge(COMPAT, a_rec(COMPAT), None, con(*OOPS_618))
    assert st == "fail" and "took the handover" in why


def test_a_refusal_of_another_compatible_fails():
    lines = [ln.replace("'kho-v4'", "'kho-v3'") for ln in REFUSAL_73]
    st, why = judge(COMPAT, a_rec(COMPAT), b_refused(), con(*lines))
    assert st == "fail" and "'kho-v3', not 'kho-v4'" in why


def test_a_refusal_without_giving_up_fails():
    lines = [ln for ln in REFUSAL_73 if "revival" not in ln]
    st, why = judge(COMPAT, a_rec(COMPAT), b_refused(), con(*lines))
    assert st == "fail" and "no refusal from kho_populate()" in why


def test_b_up_without_kho_refusal_on_its_console_fails():
    # no incoming FDT, but nothing says B refused this handover
    lines = [ln for ln in REFUSAL_73 if "KHO:" not in ln]
    st, why = judge(COMPAT, a_rec(COMPAT), b_refused(), con(*lines))
    assert st == "fail" and "reboot: Power down" in why


def test_b_refusing_then_dying_fails():
    # a refused handover is a cold boot: B must come up
    st, why = judge(COMPAT, a_rec(COMPAT), None, con(
        *REFUSAL_73[:5], "Kernel panic - not syncing: Attempted to kill "
        "init! exitcode=0x00000100"), "QEMU exited")
    assert st == "fail"
    assert "refused it" in why and "Attempted to kill init!" in why


# -- A's check not predicting

@pytest.mark.parametrize("pair", [BITMAP, COMPAT])
def test_a_check_not_flagging_the_pair_fails(pair):
    good = (None, con(*OOPS_618)) if pair == BITMAP else (
        b_refused(), con(*REFUSAL_73))
    for a in (a_rec(pair, findings=[ORDER]),
              a_rec(pair, findings=[ORDER], rc=0),
              a_rec(pair, rc=0)):
        st, why = judge(pair, a, *good)
        assert st == "fail" and "did not flag" in why


def test_a_check_flagging_the_other_id_fails():
    other = [{"id": "next-compatible", "message": SAID["next-compatible"]}]
    st, why = judge(BITMAP, a_rec(BITMAP, findings=other), None,
                    con(*OOPS_618))
    assert st == "fail" and "did not flag next-bitmap" in why


def test_a_check_from_the_loaded_image_disagreeing_fails():
    auto = {"next": "6.18.15", "next_source": "loaded kexec image",
            "findings": [ORDER]}
    st, why = judge(BITMAP, a_rec(BITMAP, auto=auto), None, con(*OOPS_618))
    assert st == "fail" and "check with B loaded" in why
    auto = {"next": "6.17.8", "next_source": "running kernel",
            "findings": [{"id": "next-bitmap", "message": ""}]}
    st, why = judge(BITMAP, a_rec(BITMAP, auto=auto), None, con(*OOPS_618))
    assert st == "fail" and "check with B loaded" in why


def test_a_with_no_records_or_no_kexec_fails():
    assert judge(BITMAP, None, None, con(*OOPS_618))[0] == "fail"
    a = a_rec(BITMAP, check=None)
    assert judge(BITMAP, a, None, con(*OOPS_618))[0] == "fail"
    a = a_rec(BITMAP, kexec_e="returned rc=1: Nothing has been loaded!")
    st, why = judge(BITMAP, a, None, "")
    assert st == "fail" and "kexec -e returned" in why


# -- B taking the handover

def test_b_taking_the_handover_refusal_was_predicted_for_fails():
    took = b_refused(in_fdt=True, incoming_rc=0)
    st, why = judge(COMPAT, a_rec(COMPAT), took, con(*TOOK_73))
    assert st == "fail" and "took the handover" in why
    assert "KHO: found kexec handover data." in why
    # its console says it refused, its debugfs says it did not
    st, why = judge(COMPAT, a_rec(COMPAT), took, con(*REFUSAL_73))
    assert st == "fail" and "in/fdt True, incoming rc 0" in why
    # the console alone, B not up
    st, why = judge(COMPAT, a_rec(COMPAT), None, con(*TOOK_73))
    assert st == "fail" and "took the handover" in why


def test_b_up_marking_exactly_a_blocks_fails():
    st, why = judge(BITMAP, a_rec(BITMAP), b_markers(MAP["ranges"]),
                    con(*TOOK_618))
    assert st == "fail" and "the bitmap size did not matter" in why


def test_b_up_without_taking_the_handover_fails_the_bitmap_pair():
    marked = [{"phys": 0x7000000, "order": 0, "count": 3}]
    st, why = judge(BITMAP, a_rec(BITMAP), b_markers(marked),
                    con(*OOPS_618[:2]))
    assert st == "fail" and "without taking the handover" in why


# -- the host-side glue: the run directory's files into verdict()

def test_judge_reads_the_run_directory(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    a = a_rec(COMPAT)
    for name, key in (("cross-a-check.json", "check"),
                      ("cross-a-check-auto.json", "check_auto"),
                      ("cross-a-map.json", "map")):
        (res / name).write_text(json.dumps(a.pop(key)))
    (res / "cross-a.json").write_text(json.dumps(a))
    b = b_refused()
    del b["incoming"]
    (res / "cross-b.json").write_text(json.dumps(b))
    (tmp_path / "console.log").write_text(con(*REFUSAL_73))
    st, why = cross.judge(tmp_path, COMPAT, None, "")
    assert st == "pass", why
    # the same B, its console lost: no pass on the records alone
    (tmp_path / "console.log").unlink()
    st, why = cross.judge(tmp_path, COMPAT, None, "\r\n".join(REFUSAL_73))
    assert st == "fail" and "no console from B" in why
