"""Run one benchmark against an earlier commit and against this checkout, alternating.

Each round runs `bench/NAME.py ARGS` first in a git worktree of the baseline (its own
code, its own server), then here; the JSON each run writes is collected, and every
number the two have in common is printed side by side with the median of the rounds.
This is how a change shows it costs no more than the noise: same machine, same minutes.

    ./run bench before_after --baseline HEAD~5 --rounds 2 hl7_ingest -- --messages 500

`--after-env KEY=VALUE` (and `--before-env`) set an environment variable for one side's
run only (the servers it starts inherit it): a setting the baseline does not have, such
as `MEDBRIDGE_AUDIT=false` to leave a cost measured elsewhere out of the comparison. The
result JSON records both sides' variables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS

HERE = Path(__file__).resolve().parent.parent


def numbers(document: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a result document, keyed by its path (measurements by name)."""
    found: dict[str, float] = {}
    if isinstance(document, dict):
        for key, value in document.items():
            if key in ("when", "machine"):
                continue
            found.update(numbers(value, f"{prefix}{key}."))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            label: int | str = index
            if isinstance(value, dict) and "name" in value:
                label = f"{value['name']}@{value.get('clients', '')}"
            found.update(numbers(value, f"{prefix}{label}."))
    elif isinstance(document, (int, float)) and not isinstance(document, bool):
        found[prefix.rstrip(".")] = float(document)
    return found


def run_once(
    checkout: Path, name: str, args: list[str], env: dict[str, str], written: str
) -> dict[str, float] | None:
    """One run's numbers; None when the benchmark failed (on a machine loaded past its
    timeouts a peer can time out), so the round is left out rather than the whole run."""
    result = checkout / "bench" / "results" / f"{written}.json"
    result.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, f"bench/{name}.py", *args], cwd=checkout, env={**os.environ, **env}
    )
    if done.returncode != 0 or not result.exists():
        print(f"\n{name} failed in {checkout} (exit {done.returncode}): round left out\n")
        return None
    return numbers(json.loads(result.read_text()))


def environment(assignments: list[str]) -> dict[str, str]:
    """`KEY=VALUE` options as a mapping; a malformed one stops the run before any work."""
    variables: dict[str, str] = {}
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        if not equals or not key:
            raise SystemExit(f"--before-env/--after-env take KEY=VALUE, not {assignment!r}")
        variables[key] = value
    return variables


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", help="benchmark: bench/NAME.py")
    parser.add_argument("--baseline", required=True, help="git commit to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--result",
        default="",
        help="the results file the benchmark writes, when not NAME (bench/results/"
        "RESULT.json: `fhir_rest --audit` writes fhir_rest-audit)",
    )
    parser.add_argument(
        "--after-only",
        default="",
        help="extra arguments for this checkout only, as one string (options the baseline "
        "does not know yet, e.g. '--store embedded')",
    )
    for side in ("before", "after"):
        parser.add_argument(
            f"--{side}-env",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"an environment variable for the {side} side's run only (repeatable)",
        )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then the benchmark's args")
    options = parser.parse_args()
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    environments = {
        "before": environment(options.before_env),
        "after": environment(options.after_env),
    }
    worktree = Path(tempfile.mkdtemp(prefix="medbridge-baseline-")) / "checkout"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(worktree), options.baseline],
        cwd=HERE,
        check=True,
    )
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    failed = 0
    try:
        for _ in range(options.rounds):
            written = options.result or options.name
            before_run = run_once(worktree, options.name, args, environments["before"], written)
            after_run = run_once(
                HERE,
                options.name,
                args + options.after_only.split(),
                environments["after"],
                written,
            )
            if before_run is None or after_run is None:
                failed += 1
                continue
            runs["before"].append(before_run)
            runs["after"].append(after_run)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=HERE)
        shutil.rmtree(worktree.parent, ignore_errors=True)
    if not runs["before"]:
        raise SystemExit(f"{options.name}: every round failed")
    keys = sorted(set.intersection(*(set(r) for r in runs["before"] + runs["after"])))
    table: dict[str, dict[str, Any]] = {}
    print(
        f"\n{options.name}: baseline {options.baseline} vs this checkout, "
        f"{len(runs['before'])} alternating rounds (medians), {failed} failed and left out"
    )
    for side, variables in environments.items():
        if variables:
            print(
                f"{side} side's environment: " + " ".join(f"{k}={v}" for k, v in variables.items())
            )
    print(f"{'figure':<60}{'before':>12}{'after':>12}{'after/before':>14}")
    for key in keys:
        before = statistics.median(r[key] for r in runs["before"])
        after = statistics.median(r[key] for r in runs["after"])
        ratio = after / before if before else float("nan")
        table[key] = {
            "before": [r[key] for r in runs["before"]],
            "after": [r[key] for r in runs["after"]],
            "ratio": round(ratio, 3),
        }
        print(f"{key[:60]:<60}{before:>12.2f}{after:>12.2f}{ratio:>14.3f}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{options.result or options.name}-before-after.json"
    document = {
        "benchmark": options.name,
        "baseline": options.baseline,
        "rounds": len(runs["before"]),
        "failed_rounds": failed,
        "args": args,
        "after_only": options.after_only.split(),
        "environment": environments,
        "figures": table,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
