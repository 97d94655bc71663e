"""The ABI reference lives in the repository: nothing points outside it, and
every section the code cites exists in docs/abi.md."""

import os
import re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DOC = os.path.join(ROOT, "docs", "abi.md")


def _sources():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames
                       if not d.startswith(".") and d != "__pycache__"]
        for f in filenames:
            if f.endswith((".py", ".md")):
                path = os.path.join(dirpath, f)
                with open(path, encoding="utf-8", errors="replace") as fh:
                    yield os.path.relpath(path, ROOT), fh.read()


def _headings():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    nums = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))
    titles = re.findall(r"^#{2,3} (.*)$", text, re.M)
    return nums, titles


def test_no_reference_outside_the_repository():
    bad = [(path, m.group(0)) for path, text in _sources()
           for m in re.finditer(r"kho-abi\.md|\.\./shared\b|shared/kho",
                                text)
           if path != os.path.join("tests", "test_docs.py")]
    assert bad == []


def test_cited_sections_exist():
    nums, titles = _headings()
    assert {"2", "2.4", "4.2", "5.5", "9"} <= nums     # the doc was parsed
    cited = []
    for path, text in _sources():
        for m in re.finditer(r"docs/abi\.md,?\s+(?:sections?\s+)?"
                             r"((?:\d+(?:\.\d+)?(?:\s*(?:-|,|and)\s*)?)+)",
                             text):
            for n in re.findall(r"\d+(?:\.\d+)?", m.group(1)):
                cited.append((path, n))
        for m in re.finditer(r'docs/abi\.md, "([^"]+)"', text):
            cited.append((path, m.group(1)))
    assert len(cited) >= 15
    missing = [(p, n) for p, n in cited
               if n not in nums and not any(n in t for t in titles)]
    assert missing == []
