"""CPU of reading one large FHIR body as the body worker does: parse, budget, validate.

`valid_resource` (fhir_server/interactions/common.py) on an 8 MiB Binary (issue 17,
largest-fhir), ms of CPU per body. `--against DIR` measures the same in another
checkout (e.g. a worktree of main) in a subprocess, alternating with this one round by
round, so both see the same load; the medians of the rounds are printed.

    ./run bench fhir_body_parse --against /work/main --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def binary_body(mib: int) -> bytes:
    """The noisy-neighbour bench's largest-fhir body: a Binary of `mib` MiB."""
    data = "QUFB" * ((mib << 20) // 4 - 64)
    document = {"resourceType": "Binary", "contentType": "application/octet-stream", "data": data}
    return json.dumps(document).encode()


def measure(checkout: Path, mib: int, repeats: int) -> float:
    """Median ms of CPU of `valid_resource` over `repeats` bodies, with `checkout`'s code."""
    sys.path.insert(0, str(checkout))
    from access.budget import Budget
    from fhir_server.interactions.common import valid_resource

    body, budget = binary_body(mib), Budget()
    valid_resource(body, "Binary", budget)  # imports, schemas
    times = []
    for _ in range(repeats):
        started = time.process_time()
        valid_resource(body, "Binary", budget)
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def in_subprocess(checkout: Path, mib: int, repeats: int) -> float:
    command = [sys.executable, __file__, "--one", str(checkout), "--mib", str(mib)]
    command += ["--repeats", str(repeats)]
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return float(output.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="bodies per round")
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.one, args.mib, args.repeats))
        return
    sides: dict[str, list[float]] = {"this": []}
    if args.against:
        sides["against"] = []
    for round_number in range(args.rounds):
        if args.against:
            sides["against"].append(in_subprocess(args.against, args.mib, args.repeats))
        sides["this"].append(in_subprocess(HERE, args.mib, args.repeats))
        print(
            f"round {round_number + 1}: "
            + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in sides.items())
        )
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "load": os.getloadavg()},
        "mib": args.mib,
        "against": str(args.against) if args.against else None,
        "ms_median": {side: round(statistics.median(values), 1) for side, values in sides.items()},
        "ms_rounds": {side: [round(v, 1) for v in values] for side, values in sides.items()},
    }
    print(json.dumps(result["ms_median"]))
    results = HERE / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "fhir_body_parse.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
