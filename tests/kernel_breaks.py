"""Synchronization that can be switched off: every barrier, warp sync, fence and flag wait
of a kernel file, one at a time, in one emulator build.

:func:`switchable` prefixes the k-th site with ``if (ic_test_skip() != k)``; the build
reads ``$IC_TEST_SKIP`` (-1 or unset: skip nothing), so one compile serves every case.
"""

import re
from dataclasses import dataclass

#: the statements whose removal the emulator must notice (the spin-waits: on a flag, on a count)
PATTERNS = ("__syncthreads();", "__syncwarp();", "__threadfence();", "while (!ic_load_acquire(",
            "while (ic_load_acquire(")
#: the environment variable naming the site to skip
VARIABLE = "IC_TEST_SKIP"
_SKIP = ('static int ic_test_skip() { const char* s = std::getenv("IC_TEST_SKIP"); '
         "return s ? std::atoi(s) : -1; }\n")
_KERNEL = re.compile(r'^extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(', re.M)


@dataclass(frozen=True)
class Site:
    index: int      # k: skipped when $IC_TEST_SKIP == k
    pattern: str
    file: str
    line: int
    kernel: str     # the entry point it is in (the last one declared above it)
    offset: int

    @property
    def id(self):
        return f"{self.file}:{self.line} {self.pattern.rstrip('(;')}"


def sites(text, file):
    """Every occurrence of a :data:`PATTERNS` statement in ``text``, in order."""
    found = sorted((m.start(), p) for p in PATTERNS for m in re.finditer(re.escape(p), text))
    out = []
    for index, (offset, pattern) in enumerate(found):
        kernels = _KERNEL.findall(text[:offset])
        out.append(Site(index, pattern, file, text.count("\n", 0, offset) + 1, kernels[-1] if kernels else "",
                        offset))
    return out


def switchable(text):
    """``text`` with each site behind ``if (ic_test_skip() != k)`` (line numbers kept)."""
    out, last = [], 0
    for site in sites(text, ""):
        out += [text[last:site.offset], f"if (ic_test_skip() != {site.index}) "]
        last = site.offset
    return _SKIP.rstrip("\n") + " " + "".join(out) + text[last:]
