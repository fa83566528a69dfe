"""The bench's plumbing: the official SDK's virtual environment, the local API in its own
process, worker subprocesses, interleaved rounds, medians, and the machine's description.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
OFFICIAL_VENV = BENCH / ".venv-official"
WORKER_TIMEOUT = 900.0  # seconds; a stuck worker fails its cell, not the bench
OFFICIAL_PINS = {"prefactor-http": "0.4.3", "prefactor-core": "0.5.3"}

Result = dict[str, Any]


def official_python() -> Path:
    """The python of the official SDK's own virtual environment, created on first use."""
    python = OFFICIAL_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {OFFICIAL_VENV.relative_to(BENCH.parent)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(OFFICIAL_VENV)], check=True)
    probe = (
        "import importlib.metadata as m\n"
        f"for name in {list(OFFICIAL_PINS)!r}:\n"
        "    try: print(m.version(name))\n"
        "    except m.PackageNotFoundError: print('-')\n"
    )
    found = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    if found != list(OFFICIAL_PINS.values()):
        pins = [f"{name}=={version}" for name, version in OFFICIAL_PINS.items()]
        print(f"installing {' '.join(pins)} into the official venv ...", file=sys.stderr)
        subprocess.run([python, "-m", "pip", "install", "-q", *pins], check=True)
    return python


class Api(NamedTuple):
    """A local API process: its URL, its token and its control port's URL."""

    url: str
    token: str
    control: str


@contextlib.contextmanager
def local_api(*, latency: float = 0.0, record: bool = False, log: str = "server") -> Iterator[Api]:
    """``bench/latency_server.py`` in its own process, ``latency`` seconds added per request.

    With ``record`` it keeps its request log, so that ``GET control/requests`` counts the
    requests a client sent. Its output goes to ``bench/.work/<log>.log`` (never a pipe
    nobody reads, which would block the server once full).
    """
    WORK.mkdir(exist_ok=True)
    log_path = WORK / f"{log}.log"
    argv = [sys.executable, str(BENCH / "latency_server.py"), f"--token={secrets.token_hex(16)}"]
    argv += [f"--latency={latency}"] + (["--record"] if record else [])
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        yield _wait_for_api(proc, log_path)
    finally:
        stop_process(proc)


def _wait_for_api(proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> Api:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        found = dict(re.findall(r"^(api|control|token): (\S+)$", text, re.MULTILINE))
        if len(found) == 3:
            return Api(found["api"], found["token"], found["control"])
        if proc.poll() is not None:
            raise RuntimeError(f"the local API exited with {proc.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"the local API printed no URLs within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGKILL if it does not stop within ten seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker(python: str | Path, script: str, figure: str, **kw: object) -> Result:
    """Run ``bench/<script> <figure> --key value ...`` in a fresh process; its JSON result.

    A failed worker yields ``{"error": ...}`` with the end of its stderr, so one broken
    side does not stop the others.
    """
    argv = [str(python), str(BENCH / script), figure]
    for key, value in kw.items():
        argv.append(f"--{key}={value}")
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=WORKER_TIMEOUT, cwd=BENCH, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-15:]
        print(
            f"\n--- {script} {figure} failed ({proc.returncode}):",
            *tail,
            sep="\n  ",
            file=sys.stderr,
        )
        return {"error": tail[-1] if tail else f"exit {proc.returncode}"}
    result: Result = json.loads(lines[-1])
    return result


def interleave(
    rounds: int,
    sides: dict[str, Callable[..., Result]],
    *,
    api: bool = False,
    latency: float = 0.0,
    record: bool = False,
) -> dict[str, list[Result]]:
    """Run every side once per round, rotating the order, so drift hits all sides alike.

    With ``api``, each round gets a fresh local API (sides are called with its ``url``,
    ``token`` and ``control``), so the server's growing state never favours the sides that
    ran first; ``latency`` and ``record`` are passed to :func:`local_api`.
    """
    names = list(sides)
    results: dict[str, list[Result]] = {name: [] for name in names}
    for r in range(rounds):
        server = local_api(latency=latency, record=record) if api else contextlib.nullcontext()
        with server as found:
            kw = found._asdict() if found else {}
            for name in names[r % len(names) :] + names[: r % len(names)]:
                results[name].append(sides[name](**kw))
                print(".", end="", flush=True, file=sys.stderr)
    return results


def median(results: list[Result], key: str) -> float | None:
    """The median of ``key`` over the rounds that produced it; None if none did."""
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def problem(results: list[Result]) -> str | None:
    """Why a side has no figure: its 'n/a' or its error, else None."""
    for r in results:
        if "na" in r:
            return str(r["na"])
    for r in results:
        if "error" in r:
            return f"error: {r['error']}"
    return None


def _top_level_import_us(python: str | Path, statement: str) -> float | str:
    """Sum of the cumulative import times of the modules ``statement`` imports at top level."""
    proc = subprocess.run(
        [str(python), "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1]
    total = 0.0
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        # A top-level import's name follows one space; nested ones are indented further.
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            try:
                total += float(parts[1])
            except ValueError:
                continue  # the header line
    return total


def import_time_us(python: str | Path, statement: str) -> Result:
    """Import time of what ``statement`` imports, in a fresh interpreter (``-X importtime``).

    The modules an empty program imports at start are subtracted, and every module the
    statement loads counts, also what a package loads on first use of a name.
    """
    used = _top_level_import_us(python, statement)
    idle = _top_level_import_us(python, "pass")
    if isinstance(used, str) or isinstance(idle, str):
        reason = used if isinstance(used, str) else idle
        if "ModuleNotFoundError" in str(reason) or "ImportError" in str(reason):
            return {"na": "not available"}
        return {"error": reason}
    return {"us": used - idle}


def machine() -> dict[str, str]:
    """Date, Python and machine, for the results' header."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
    }


SOAK_BEGIN = "<!-- soak: written by bench/soak.py -->"
SOAK_END = "<!-- /soak -->"


def checkout() -> str:
    """The commit of the checkout measured, marked dirty when it has uncommitted changes.

    ``bench/RESULTS.md`` does not count: the bench itself writes it between its parts.
    """

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(BENCH.parent), *argv], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", _NOT_RESULTS)
    return f"{commit}-dirty" if changed else commit


_NOT_RESULTS = ":(exclude)bench/RESULTS.md"


def soak_section(text: str) -> str:
    """The soak's section of a RESULTS.md text, markers included, or an empty string."""
    start, end = text.find(SOAK_BEGIN), text.find(SOAK_END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(SOAK_END)]


def write_soak_section(section: str) -> None:
    """Put the soak's section into RESULTS.md, replacing the one there."""
    path = BENCH / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    old = soak_section(text)
    block = f"{SOAK_BEGIN}\n{section.strip()}\n{SOAK_END}"
    text = text.replace(old, block) if old else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
