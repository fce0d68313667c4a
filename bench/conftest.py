"""Ratios of our time to the baselines', measured side by side in one run.

Each benchmark names its ``group`` and sets ``benchmark.extra_info["role"]`` to
``"ours"`` or a baseline's name; the summary divides medians within a group.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled:
        return
    groups = {}
    for bench in session.benchmarks:
        if bench.stats is None or not bench.stats.data:  # failed or skipped
            continue
        groups.setdefault(bench.group, {})[bench.extra_info.get("role", bench.name)] = bench.stats.median
    terminalreporter.section("ratios (our median / baseline median; below 1 means we are faster)")
    for group, roles in sorted(groups.items(), key=lambda kv: str(kv[0])):
        ours = roles.get("ours")
        for role, median in sorted(roles.items()):
            if role != "ours" and ours is not None:
                terminalreporter.write_line(
                    f"{group}: ours {ours * 1e3:.1f} ms / {role} {median * 1e3:.1f} ms = {ours / median:.3f} "
                    f"({median / ours:.2f}x faster)"
                )
