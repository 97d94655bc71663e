"""The BPF C program of the tracer, generated for one :class:`Plan`.

One entry and one return handler per probe. Each probe uses fentry/fexit
(bcc ``KFUNC_PROBE``/``KRETFUNC_PROBE``, needs the kernel's BTF) where the
function is in BTF under its own name, else kprobe/kretprobe (always for
compiler clones such as ``__kho_preserve_order.constprop.0``). Both call the
same two inline functions, so the two mechanisms record the same thing:

- entry: arguments and time, keyed by (thread, probe); the innermost API
  call of the thread is remembered, so that a recording function
  (``__kho_preserve_order``, ``kho_radix_add_page``/``_key``) called inside
  it lends it the pfn and order of the block it records;
- return: latency and return value, then, depending on the mode, one event
  to user space (perf buffer), a count/bytes/errors bucket per
  (probe, order), or a log2 latency bucket per probe -- the summary and the
  histogram are aggregated in the kernel.

Pure module: text only, no bcc import.
"""

from __future__ import annotations

import dataclasses

from .probes import Plan, Probe

# probe flags, compile-time constants in the generated handlers
F_RECORD_ADD, F_RECORD_DEL, F_KEY, F_NR32 = 1, 2, 4, 8
F_FOLIO, F_PAGES, F_PHYS, F_RESTORE_PAGES, F_PTR_RET, F_INT_RET = (
    16, 32, 64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class Options:
    events: bool = True        # one perf event per call
    summary: bool = False      # counts/bytes/errors by probe x order
    hist: bool = False         # log2 latency histogram by probe
    stack: bool = False        # kernel stack id per event
    pid: int | None = None     # only this process (tgid)


def probe_flags(p: Probe, radix: bool) -> int:
    f = p.func
    fl = 0
    if f.role == "record-add":
        fl |= F_RECORD_ADD
    if f.role == "record-del":
        fl |= F_RECORD_DEL
    if f.args and f.args[-1] == "key":
        fl |= F_KEY
    if not radix:
        # kho-v1 kernels (6.18/6.19) pass nr as unsigned int: the upper
        # half of the register is not defined
        fl |= F_NR32
    if f.args[:1] == ("folio",):
        fl |= F_FOLIO
    if f.args[:2] == ("page", "nr"):
        fl |= F_PAGES
    if f.args[:2] == ("phys", "size"):
        fl |= F_PHYS
    if f.args == ("phys", "nr"):
        fl |= F_RESTORE_PAGES
    fl |= {"ptr": F_PTR_RET, "int": F_INT_RET}.get(f.ret, 0)
    return fl


_COMMON = r"""
#include <uapi/linux/ptrace.h>

#define F_RECORD_ADD %(F_RECORD_ADD)d
#define F_RECORD_DEL %(F_RECORD_DEL)d
#define F_KEY %(F_KEY)d
#define F_NR32 %(F_NR32)d
#define F_FOLIO %(F_FOLIO)d
#define F_PAGES %(F_PAGES)d
#define F_PHYS %(F_PHYS)d
#define F_RESTORE_PAGES %(F_RESTORE_PAGES)d
#define F_PTR_RET %(F_PTR_RET)d
#define F_INT_RET %(F_INT_RET)d

struct entry_t {
    u64 ts;
    u64 a0, a1, a2;
    u64 rec_pfn;        /* pfn of the first block recorded inside, +1 */
    s32 rec_order;
    u32 rec_n;
    u32 parent;         /* enclosing API probe + 1, 0 for none */
    u32 depth;
    s32 stack;          /* taken at entry: the caller is still there */
};

struct event_t {
    u64 ts;
    u64 lat;
    u64 a0, a1, a2;
    s64 ret;
    u64 rec_pfn;
    s32 rec_order;
    u32 rec_n;
    u32 pid;
    u32 tid;
    u32 probe;
    u32 parent;
    u32 depth;
    s32 stack;
    char comm[16];
};

struct skey_t {
    u32 probe;
    s32 order;
};

struct sval_t {
    u64 count;
    u64 bytes;
    u64 errors;
};

struct hkey_t {
    u32 probe;
    u32 slot;
};

BPF_HASH(entries, u64, struct entry_t, 4096);
BPF_HASH(top, u32, u32, 4096);
BPF_ARRAY(outtree, u64, 1);
%(MAPS)s

static __always_inline u32 log2_u64(u64 v)
{
    u32 r = 0;
    if (v >> 32) { v >>= 32; r += 32; }
    if (v >> 16) { v >>= 16; r += 16; }
    if (v >> 8) { v >>= 8; r += 8; }
    if (v >> 4) { v >>= 4; r += 4; }
    if (v >> 2) { v >>= 2; r += 2; }
    if (v >> 1) { r += 1; }
    return r;
}

/* (pfn, order) a recording call names: (track/tree, pfn, order) or, with
 * the 7.3 key API, (tree, key) where key = 1 << (52 - order) | pfn >> order */
static __always_inline void record_block(u32 fl, u64 a1, u64 a2,
                                         u64 *pfn, s32 *order)
{
    if (fl & F_KEY) {
        u32 top_bit = log2_u64(a1);
        s32 o = 52 - (s32)top_bit;
        *order = o;
        *pfn = (a1 ^ (1ULL << top_bit)) << (o & 63);
    } else {
        *pfn = a1;
        *order = (s32)(u32)a2;
    }
}

/* order (-1: unknown), bytes and failure of one call; rec_n/rec_order: the
 * blocks recorded inside it (0/-1 when not known) */
static __always_inline void classify(u32 fl, u64 a1, u64 a2, s64 ret,
                                     u32 rec_n, s32 rec_order, s32 *order,
                                     u64 *bytes, u64 *failed)
{
    u64 nr = a1;
    if (fl & F_NR32)
        nr &= 0xffffffffULL;
    *order = -1;
    *bytes = 0;
    if (fl & (F_RECORD_ADD | F_RECORD_DEL)) {
        u64 pfn;
        record_block(fl, a1, a2, &pfn, order);
        *bytes = 4096ULL << (*order & 63);
    } else if (fl & F_FOLIO) {
        if (rec_n == 1) {
            *order = rec_order;
            *bytes = 4096ULL << (rec_order & 63);
        }
    } else if (fl & (F_PAGES | F_RESTORE_PAGES)) {
        *bytes = nr * 4096;
        if (rec_n == 1)
            *order = rec_order;
    } else if (fl & F_PHYS) {
        *bytes = a1;
        if (rec_n == 1)
            *order = rec_order;
    }
    *failed = 0;
    if ((fl & F_INT_RET) && (s32)ret < 0)
        *failed = 1;
    if ((fl & F_PTR_RET) && ret == 0)
        *failed = 1;
}

static __always_inline int on_entry(void *ctx, u32 probe, u32 fl,
                                    u64 a0, u64 a1, u64 a2)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
%(PID_FILTER)s
    struct entry_t e = {};
    e.ts = bpf_ktime_get_ns();
    e.a0 = a0;
    e.a1 = a1;
    e.a2 = a2;
    e.rec_order = -1;
    e.stack = %(STACK)s;
    u32 *t = top.lookup(&tid);
    u32 cur = t ? *t : 0;
    if (fl & (F_RECORD_ADD | F_RECORD_DEL)) {
        if (cur) {
            /* lend the block to the enclosing API call, and learn which
             * tree the API uses (7.3 keys also serve a busy-block tree) */
            u64 k = ((u64)tid << 8) | (cur - 1);
            struct entry_t *pe = entries.lookup(&k);
            if (pe) {
                u64 pfn; s32 order;
                record_block(fl, a1, a2, &pfn, &order);
                if (pe->rec_n == 0) {
                    pe->rec_pfn = pfn + 1;
                    pe->rec_order = order;
                }
                pe->rec_n++;
            }
            int z = 0;
            u64 *ot = outtree.lookup(&z);
            if (ot && *ot == 0)
                *ot = a0;
        }
        e.parent = cur;
    } else {
        e.parent = cur;
        e.depth = cur ? 1 : 0;
        u32 mine = probe + 1;
        top.update(&tid, &mine);
    }
    u64 key = ((u64)tid << 8) | probe;
    entries.update(&key, &e);
    return 0;
}

static __always_inline int on_return(void *ctx, u32 probe, u32 fl, s64 ret)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    u64 key = ((u64)tid << 8) | probe;
    struct entry_t *e = entries.lookup(&key);
    if (!e)
        return 0;
    u64 now = bpf_ktime_get_ns();
    struct entry_t en = *e;
    entries.delete(&key);
    if (!(fl & (F_RECORD_ADD | F_RECORD_DEL))) {
        if (en.parent)
            top.update(&tid, &en.parent);
        else
            top.delete(&tid);
    }
    u64 lat = now - en.ts;
    if (fl & (F_RECORD_ADD | F_RECORD_DEL)) {
        int z = 0;
        u64 *ot = outtree.lookup(&z);
        if (ot && *ot && *ot != en.a0)
            return 0;           /* another tree (7.3 busy blocks) */
    }
    s32 order;
    u64 bytes, failed;
    classify(fl, en.a1, en.a2, ret, en.rec_n, en.rec_order, &order, &bytes,
             &failed);
%(AGGREGATE)s
%(EMIT)s
    return 0;
}
"""

_LEAN = r"""
/* --summary alone, fexit only: no entry state, no latency; the order of
 * an API call is not known here (its recording call has it). Recording
 * calls are counted for every tree: 7.3's other one (kho_extend_scratch's
 * busy blocks) is filled only at boot, in __init code, before a tracer can
 * attach. */
static __always_inline int on_exit_lean(u32 probe, u32 fl, u64 a0, u64 a1,
                                        u64 a2, s64 ret)
{
%(PID_FILTER)s
    s32 order;
    u64 bytes, failed;
    classify(fl, a1, a2, ret, 0, -1, &order, &bytes, &failed);
%(AGGREGATE)s
    return 0;
}
"""

_SUMMARY_MAP = "BPF_HASH(summary, struct skey_t, struct sval_t, 1024);"
_HIST_MAP = "BPF_HISTOGRAM(hist, struct hkey_t, 1024);"
_EVENTS_MAP = "BPF_PERF_OUTPUT(events);"
_STACK_MAP = "BPF_STACK_TRACE(stacks, 4096);"

_SUMMARY = r"""
    {
        struct skey_t sk = {.probe = probe, .order = order};
        struct sval_t zero = {};
        struct sval_t *sv = summary.lookup_or_try_init(&sk, &zero);
        if (sv) {
            __sync_fetch_and_add(&sv->count, 1);
            __sync_fetch_and_add(&sv->bytes, bytes);
            __sync_fetch_and_add(&sv->errors, failed);
        }
    }"""
_HIST = r"""
    {
        struct hkey_t hk = {.probe = probe, .slot = log2_u64(lat)};
        hist.increment(hk);
    }"""
_EMIT = r"""
    {
        struct event_t ev = {};
        ev.ts = en.ts;
        ev.lat = lat;
        ev.a0 = en.a0;
        ev.a1 = en.a1;
        ev.a2 = en.a2;
        ev.ret = ret;
        ev.rec_pfn = en.rec_pfn;
        ev.rec_order = en.rec_order;
        ev.rec_n = en.rec_n;
        ev.pid = pid_tgid >> 32;
        ev.tid = tid;
        ev.probe = probe;
        ev.parent = en.parent;
        ev.depth = en.depth;
        ev.stack = en.stack;
        bpf_get_current_comm(&ev.comm, sizeof(ev.comm));
        events.perf_submit(ctx, &ev, sizeof(ev));
    }"""


def _args(n: int) -> list[str]:
    return [f"a{i}" for i in range(n)]


def _call_args(n: int) -> str:
    a = _args(min(n, 3)) + ["0"] * (3 - min(n, 3))
    return ", ".join(a)


def handler_names(p: Probe) -> tuple[str, str]:
    """Names of the kprobe entry and return handlers of probe *p*."""
    return f"kho_e{p.index}", f"kho_r{p.index}"


def lean(opts: Options) -> bool:
    """--summary alone: fentry probes need only an fexit program each."""
    return opts.summary and not (opts.events or opts.hist or opts.stack)


def generate(plan: Plan, opts: Options, kfunc: set[str]) -> str:
    """The BPF C text for *plan*; probes whose symbol is in *kfunc* use
    fentry/fexit, the others kprobe/kretprobe (see :func:`handler_names`).
    With :func:`lean` options, an fentry probe is one fexit program that
    counts straight into the summary (a third of the cost per call).
    """
    maps = []
    if opts.events:
        maps.append(_EVENTS_MAP)
    if opts.summary:
        maps.append(_SUMMARY_MAP)
    if opts.hist:
        maps.append(_HIST_MAP)
    if opts.stack and opts.events:
        maps.append(_STACK_MAP)
    pidf = ("" if opts.pid is None else
            f"    if ((pid_tgid >> 32) != {int(opts.pid)}) return 0;")
    emit = _EMIT if opts.events else ""
    text = _COMMON % {
        "STACK": ("stacks.get_stackid(ctx, 0)" if opts.stack and opts.events
                  else "-1"),
        "F_RECORD_ADD": F_RECORD_ADD, "F_RECORD_DEL": F_RECORD_DEL,
        "F_KEY": F_KEY, "F_NR32": F_NR32, "F_FOLIO": F_FOLIO,
        "F_PAGES": F_PAGES, "F_PHYS": F_PHYS,
        "F_RESTORE_PAGES": F_RESTORE_PAGES, "F_PTR_RET": F_PTR_RET,
        "F_INT_RET": F_INT_RET,
        "MAPS": "\n".join(maps), "PID_FILTER": pidf,
        "AGGREGATE": (_SUMMARY if opts.summary else "")
        + (_HIST if opts.hist else ""),
        "EMIT": emit,
    }
    out = [text]
    if lean(opts):
        out.append(_LEAN % {"PID_FILTER": pidf.replace(
            "(pid_tgid >> 32)", "(bpf_get_current_pid_tgid() >> 32)"),
            "AGGREGATE": _SUMMARY})
    for p in plan.probes:
        fl = probe_flags(p, plan.radix)
        n = p.func.arity
        if p.symbol in kfunc:
            # void functions have no return value for fexit to read
            decl = ", ".join(f"u64 {a}" for a in _args(n))
            ret_decl = decl + (", long ret" if p.func.ret != "void" else "")
            ret = "ret" if p.func.ret != "void" else "0"
            if lean(opts):
                out.append(
                    f"KRETFUNC_PROBE({p.symbol}, {ret_decl})\n"
                    f"{{ return on_exit_lean({p.index}, {fl}, "
                    f"{_call_args(n)}, {ret}); }}\n")
            else:
                out.append(
                    f"KFUNC_PROBE({p.symbol}, {decl})\n"
                    f"{{ return on_entry(ctx, {p.index}, {fl}, "
                    f"{_call_args(n)}); }}\n"
                    f"KRETFUNC_PROBE({p.symbol}, {ret_decl})\n"
                    f"{{ return on_return(ctx, {p.index}, {fl}, {ret}); }}\n")
        else:
            e, r = handler_names(p)
            regs = ["PT_REGS_PARM1(ctx)", "PT_REGS_PARM2(ctx)",
                    "PT_REGS_PARM3(ctx)"]
            # canonical argument positions: a clone's dropped leading
            # arguments read as 0
            a = (["0"] * p.dropped + regs)[:min(n, 3)]
            a += ["0"] * (3 - len(a))
            out.append(
                f"int {e}(struct pt_regs *ctx)\n"
                f"{{ return on_entry(ctx, {p.index}, {fl}, "
                f"{', '.join(a)}); }}\n"
                f"int {r}(struct pt_regs *ctx)\n"
                f"{{ return on_return(ctx, {p.index}, {fl}, "
                f"(s64)PT_REGS_RC(ctx)); }}\n")
    return "\n".join(out)
