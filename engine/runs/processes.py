"""A run's processes, seen from the job runner (engine/runs/jobs.py): whether a launcher is still the process it
started, its whole tree for cancelling, and why a launch failed, read from its train.log."""

from __future__ import annotations

import os
import re
from pathlib import Path

from engine.rundir import RunDir


def start_time(pid: int) -> str | None:
    """Kernel start time of `pid` (guards against a recycled pid), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants. torch's elastic launcher puts each rank in its own session, so killing
    the launcher's process group alone would orphan the ranks: we walk the tree instead."""
    import psutil  # a dependency of accelerate

    try:
        proc = psutil.Process(pid)
        return [pid] + [c.pid for c in proc.children(recursive=True)]
    except psutil.Error:
        return []


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if start_time(p) is not None]


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# what the launcher says after the training process failed: true, but the cause is the training process's own
# exception printed above it (e.g. "KeyError: 'text'"), which is the line the user needs
LAUNCHER_ERRORS = ("subprocess.CalledProcessError:", "torch.distributed.elastic.multiprocessing.errors.ChildFailedError",
                   "ChildFailedError:")


def latest_launch(log: Path) -> list[str] | None:
    """The last 400 lines of train.log written by its latest launch (the runner heads each launch with `$ cmd`)."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
    return lines[starts[-1] + 1 if starts else 0:][-400:]


def error_line(log: Path) -> str | None:
    """The most useful line of a crashed run's log, from its latest launch only: our own one-line error, else the
    rank the distributed launcher names as the root cause, else the last exception line."""
    lines = latest_launch(log)
    if lines is None:
        return None
    for line in reversed(lines):
        if "hubtune: error:" in line:
            return line[line.index("hubtune: error:") + len("hubtune: "):].strip()
    root = root_cause(lines)
    if root:
        return root
    # accelerate 1.16's launcher re-raises a failed child as "RuntimeError: <the child's stderr>": that first line
    # repeats one printed earlier in the log, and is no exception of the child's own
    earlier: set[str] = set()
    exceptions = []
    for line in lines:
        if re.match(r"^\s*[\w.]+(Error|Exception|Interrupt)\b.*:", line) and \
                line.split(":", 1)[1].strip() not in earlier:
            exceptions.append(line.strip())
        earlier.add(line.strip())
    own = [line for line in exceptions if not line.startswith(LAUNCHER_ERRORS)]
    if own:
        return own[-1][:500]
    return _launcher_line(exceptions[-1]) if exceptions else None


def _launcher_line(line: str) -> str:
    """What the launcher's own error says about the training process, in words (its command line left out)."""
    killed = re.search(r"died with <Signals\.(SIG\w+): (\d+)>", line)
    if killed:
        return (f"the training process was killed by {killed.group(1)} (signal {killed.group(2)}) before it wrote a "
                "final status; resume it from its last checkpoint (details in train.log)")
    code = re.search(r"non-zero exit status (-?\d+)", line)
    if code:
        return f"the training process exited with code {code.group(1)} before it wrote a final status (details in " \
               "train.log)"
    return line[:500]


def root_cause(lines: list[str]) -> str | None:
    """torch's elastic launcher ends a failed multi-process run with a 'Root Cause' block naming the first rank to
    fail; the other ranks' errors (gloo: connection reset by peer) are only its consequences."""
    heads = [i for i, line in enumerate(lines) if "Root Cause (first observed failure)" in line]
    if not heads:
        return None
    block = "\n".join(lines[heads[-1]:heads[-1] + 10])
    rank, code = re.search(r"rank\s*:\s*(\d+)", block), re.search(r"exitcode\s*:\s*(-?\d+)", block)
    if not (rank and code):
        return None
    sig = re.search(r"\((SIG[A-Z]+)\)", block)
    return (f"rank {rank.group(1)} exited with code {code.group(1)}{f' ({sig.group(1)})' if sig else ''}; the "
            "launcher stopped the other ranks (details in train.log)")


def name_the_rank_that_died(run: RunDir, status: dict) -> dict:
    """Rank 0 writes the failure, but when another rank died first (killed, out of memory) rank 0's own error is
    only gloo's 'connection closed by peer'. Once the launcher has exited, its root-cause block names the rank;
    rank 0's line is kept as rank0_error."""
    root = root_cause(latest_launch(run.log) or [])
    if not root or root.startswith("rank 0 ") or root == status.get("error"):
        return status
    return run.write_status("failed", error=root, rank0_error=status.get("error"))
