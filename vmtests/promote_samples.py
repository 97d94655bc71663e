#!/usr/bin/env python3
"""Ship the handover images the vmtests captured from real kernels.

For each kernel, takes the newest run under ~/.cache/kho-inspect/runs whose
S1 (live map vs test_kho) and S4 (capture) passed, and copies:
  results/capture.core  -> kho_inspect/samples/<release>.core
  golden data           -> tests/golden/<release>.json
The golden file holds what the guest decoded live (ranges) and, as the
independent oracles, test_kho's own folio list read with drgn and the DWARF
in that same guest (truth.json) and every block of the map as a second,
naive reader found it in the kernel's memory when the capture was taken
(map-naive.json: vmtests/guest/naive.py, nothing from kho_inspect).
tests/test_samples.py checks all three.

usage: vmtests/promote_samples.py [--run DIR]
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import kernels  # noqa: E402

SAMPLES = HERE.parent / "kho_inspect" / "samples"
GOLDEN = HERE.parent / "tests" / "golden"


def newest_good_runs(runs_root: Path) -> dict:
    found = {}
    for run in sorted(runs_root.iterdir()):
        summ = run / "summary.json"
        if not summ.exists():
            continue
        for name, k in json.loads(summ.read_text()).get("kernels", {}).items():
            v = k.get("verdicts", {})
            res = run / name / "results"
            if (v.get("S1", [""])[0] == "pass" and v.get("S4", [""])[0] == "pass"
                    and (res / "capture.core").exists()
                    and (res / "map-naive.json").exists()):
                found[name] = (run, res, k.get("version"))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=str(kernels.CACHE / "runs"))
    args = ap.parse_args()
    SAMPLES.mkdir(exist_ok=True)
    GOLDEN.mkdir(exist_ok=True)
    for name, (run, res, version) in sorted(newest_good_runs(
            Path(args.runs)).items()):
        live = json.loads((res / "s1-map-live.json").read_text())
        truth = json.loads((res / "truth.json").read_text())
        naive = json.loads((res / "map-naive.json").read_text())
        release = live["release"]
        shutil.copy2(res / "capture.core", SAMPLES / f"{release}.core")
        golden = {
            "release": release,
            "generation": live["generation"],
            "bitmap_bytes": live["bitmap_bytes"],
            "map_phys": live["map_phys"],
            "ranges": live["ranges"],
            "test_kho_folios": [{"phys": f["phys"], "order": f["order"],
                                 "what": f["what"]} for f in truth["folios"]],
            "blocks": naive["runs"],
            "blocks_read_by": naive["read_by"],
            "captured_by": f"vmtests run {run.name}, kernel {name} "
                           f"({version}), guest live decode of "
                           f"{live['fdt_source']}",
        }
        (GOLDEN / f"{release}.json").write_text(json.dumps(golden, indent=1)
                                                + "\n")
        print(f"{name}: {release} from {run.name}")


if __name__ == "__main__":
    main()
