"""The fault soak: many runs through one client while the local API injects faults, then a
check of what the server holds against what each run's ending implies.

    python bench/soak.py --runs 5000 [--sides ours official] [--delivery background inline]
                         [--rate 0.2] [--seed 1]

Each side gets a fresh local API in its own process (``latency_server.py``) with the fault
plan's chaos on (503, 429 with Retry-After, latency, lost responses, non-JSON bodies on
``--rate`` of requests) and runs the same planned endings (return, raise, task cancel,
``asyncio.timeout``, explicit fail) in a worker process: ours with the project's python,
once per delivery mode, and prefactor-core 0.5.3 with the python of
``bench/.venv-official``. Each worker flushes (ours) or drains (prefactor-core) its client
before the server's state is read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from typing import Any

from _harness import BENCH, WORK, checkout, local_api, official_python, write_soak_section
from _soak_plan import INSTANCE_STATUS, LAST_SPAN_STATUS, PROPAGATES, SPANS, external_id

KINDS = ("503", "429", "latency", "drop", "non_json")
OPEN = {"pending", "active"}
# What asyncio and aiohttp print for a leaked task, session or socket.
LEAK_SIGNS = (
    "Task exception was never retrieved",
    "Task was destroyed but it is pending",
    "Unclosed client session",
    "Unclosed connector",
    "unclosed <socket",
    "unclosed transport",
)


def _control(url: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - our own loopback control port
        url + path, data=data, method="GET" if data is None else "POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        return json.loads(response.read())


def soak_side(
    side: str, delivery: str, runs: int, seed: int, rate: float, concurrency: int
) -> dict[str, Any]:
    """One side's soak against its own local API; what the worker saw and the server holds."""
    name = side if side == "official" else f"{side}-{delivery}"
    with local_api(log=f"soak-server-{name}") as api:
        _control(api.control, "/chaos", {"rate": rate, "seed": seed, "kinds": list(KINDS)})
        python = sys.executable if side == "ours" else str(official_python())
        script = "soak_ours.py" if side == "ours" else "soak_official.py"
        # Resource warnings shown, so an unclosed session or socket shows up in stderr.
        argv = [python, "-W", "always::ResourceWarning", str(BENCH / script)]
        argv += ["--url", api.url, "--token", api.token]
        argv += ["--runs", str(runs), "--seed", str(seed), "--concurrency", str(concurrency)]
        if side == "ours":
            argv += ["--delivery", delivery]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=BENCH)
        _control(api.control, "/clear", {})
        state = _control(api.control, "/state")
    WORK.mkdir(exist_ok=True)
    (WORK / f"soak-{name}.stderr").write_text(proc.stderr)
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = "\n  ".join(proc.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"the {name} soak worker failed ({proc.returncode}):\n  {tail}")
    leaks = sum(proc.stderr.count(sign) for sign in LEAK_SIGNS)
    return {
        "worker": json.loads(proc.stdout.strip().splitlines()[-1]),
        "state": state,
        "leaks": leaks,
    }


def judge(result: dict[str, Any]) -> dict[str, Any]:
    """Compare the server's instances and spans with what each run's ending implies."""
    records = result["worker"]["records"]
    state = result["state"]
    by_ext: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for inst in state["instances"]:
        by_ext[inst.get("external_identifier") or ""].append(inst)
    spans_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in state["spans"]:
        spans_of[span["agent_instance_id"]].append(span)

    counts: Counter[str] = Counter()
    wrong_as: Counter[str] = Counter()
    for record in records:
        ending = record["ending"]
        if record["raised"] != PROPAGATES[ending]:
            counts["run saw another exception"] += 1
            wrong_as[f"{ending} raised {record['raised']}"] += 1
        found = by_ext.get(external_id(record["i"]), [])
        if not found:
            counts["lost"] += 1
            continue
        if len(found) > 1:
            counts["duplicated"] += 1
        inst = found[0]
        if inst["status"] in OPEN:
            counts["stuck pending/active"] += 1
        elif inst["status"] != INSTANCE_STATUS[ending]:
            counts["wrong status"] += 1
            wrong_as[f"{ending} -> {inst['status']}"] += 1
        # In the order the blocks began (their own start times): a retried create can
        # reach the server after its sibling's, so creation order is not block order.
        spans = sorted(spans_of.get(inst["id"], []), key=lambda span: span["started_at"] or "")
        if len(spans) != SPANS:
            counts["spans missing or extra"] += abs(SPANS - len(spans))
        expected = ["complete"] * (SPANS - 1) + [LAST_SPAN_STATUS[ending]]
        for span, want in zip(spans, expected, strict=False):
            if span["status"] in OPEN:
                counts["open spans"] += 1
            elif span["status"] != want:
                counts["spans with wrong status"] += 1
                wrong_as[f"{ending}: span {want} -> {span['status']}"] += 1
    counts["leak warnings"] = result["leaks"]
    return {
        "runs": len(records),
        "counts": counts,
        "wrong_as": wrong_as,
        "injected": state["injected"],
        "seconds": result["worker"]["seconds"],
        "close": result["worker"]["close"],
        "delivered": result["worker"].get("delivered"),
        "stats": result["worker"].get("stats"),
    }


ROWS = (
    "lost",
    "duplicated",
    "wrong status",
    "stuck pending/active",
    "open spans",
    "spans with wrong status",
    "spans missing or extra",
    "run saw another exception",
    "leak warnings",
)


NAMES = {
    "ours-background": "aioprefactor (background)",
    "ours-inline": "aioprefactor (inline)",
    "official": "prefactor-core 0.5.3",
}
STATS = ("sent_requests", "retried", "dropped", "abandoned")


def render(judged: dict[str, dict[str, Any]]) -> str:
    sides = list(judged)
    lines = [
        "| | " + " | ".join(NAMES[s] for s in sides) + " |",
        "|---|" + "---|" * len(sides),
        "| runs | " + " | ".join(str(judged[s]["runs"]) for s in sides) + " |",
    ]
    for kind in KINDS:
        cells = [str(judged[s]["injected"].get(kind, 0)) for s in sides]
        lines.append(f"| injected: {kind} | " + " | ".join(cells) + " |")
    lines += [
        f"| **{row}** | " + " | ".join(str(judged[s]["counts"][row]) for s in sides) + " |"
        for row in ROWS
    ]
    flushed = [
        "—" if judged[s]["delivered"] is None else str(judged[s]["delivered"]) for s in sides
    ]
    lines.append("| flush reported all delivered | " + " | ".join(flushed) + " |")
    for stat in STATS:
        cells = [
            "—" if judged[s]["stats"] is None else str(judged[s]["stats"].get(stat, "n/a"))
            for s in sides
        ]
        lines.append(f"| client stats: {stat} | " + " | ".join(cells) + " |")
    lines.append("| seconds | " + " | ".join(f"{judged[s]['seconds']:.1f}" for s in sides) + " |")
    return "\n".join(lines)


SOAK_NOTES = """\
Each side soaks against its own local API process with the fault plan's chaos on: each
request, with the probability of `--rate`, gets a 503, a 429 with `Retry-After`, added
latency, a lost response (effect applied, connection dropped) or a non-JSON body. Runs end
at random (return, raise, task cancel, `asyncio.timeout`, explicit fail), and the server's
instances and spans are then compared, after the client's flush (ours) or close
(prefactor-core drains its queue there), with what each ending implies; a run's spans are
taken in the order of their `started_at` (a retried create may reach the server after a
later sibling's). Ours runs once per
delivery mode: `background` (the default: nothing on the agent's path awaits the network)
and `inline` (awaited). prefactor-core has no instance context manager, so its side
finishes each run itself, as a careful user would. "client stats" are ours'
`client.stats()` after the flush."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument(
        "--sides", nargs="+", choices=("ours", "official"), default=["ours", "official"]
    )
    parser.add_argument(
        "--delivery",
        nargs="+",
        choices=("background", "inline"),
        default=["background", "inline"],
        help="our delivery modes to soak (default: both)",
    )
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone"
    )
    args = parser.parse_args()
    measured = checkout()  # before the long run, while the tree is what is being measured

    judged = {}
    for side in args.sides:
        for delivery in args.delivery if side == "ours" else ["-"]:
            name = side if side == "official" else f"{side}-{delivery}"
            print(f"soaking {NAMES[name]}: {args.runs} runs ...", file=sys.stderr, flush=True)
            soaked = soak_side(side, delivery, args.runs, args.seed, args.rate, args.concurrency)
            judged[name] = judge(soaked)
    table = render(judged)
    print(table)
    if not args.no_write:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        command = (
            f"python bench/soak.py --runs {args.runs} --delivery {' '.join(args.delivery)} "
            f"--rate {args.rate} --seed {args.seed}"
        )
        write_soak_section(
            f"## Fault soak\n\n`{command}` — {when}, aioprefactor at commit {measured}\n\n"
            f"{table}\n\n{SOAK_NOTES}"
        )
    for side, j in judged.items():
        if j["wrong_as"]:
            print(f"\n{side}: " + ", ".join(f"{k}: {v}" for k, v in j["wrong_as"].most_common()))
        if j["close"]:
            print(f"\n{side}: closing the client raised {j['close']}")
    ours = [s for s in judged if s.startswith("ours")]
    failed = any(judged[s]["counts"][r] for s in ours for r in ROWS) or any(
        judged[s]["delivered"] is False for s in ours
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
