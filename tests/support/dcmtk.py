"""dcmtk's command-line tools (Debian `dcmtk`, /usr/bin) as real DICOM peers in tests.

dcmtk tools often exit 0 when a DIMSE operation failed, so callers read the output.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom

BIN = Path("/usr/bin")
# storescu proposes uncompressed syntaxes by default; each file's own syntax needs its flag
PROPOSE = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def run(tool: str, *args: str, timeout: float = 120.0) -> str:
    """Run one dcmtk tool verbosely; its combined output."""
    done = subprocess.run(
        [str(BIN / tool), "-v", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.stdout + done.stderr


def transfer_syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def storescu(port: int, files: list[Path], calling: str = "STORESCU", *extra: str) -> str:
    """Send files that share one transfer syntax, proposed as stored (`-R` + its flag)."""
    flag = PROPOSE[transfer_syntax(files[0])]
    return run(
        "storescu", "-R", flag, "-nh", "-aet", calling, "-aec", "MEDBRIDGE",
        *extra, "127.0.0.1", str(port), *map(str, files),
    )  # fmt: skip


def successes(output: str) -> int:
    return output.count("Received Store Response (Success)")


def findscu(
    port: int, model: str, keys: list[str], out_dir: Path, calling: str = "FINDSCU", *extra: str
) -> tuple[str, list[pydicom.Dataset]]:
    """C-FIND (`-P`, `-S` or `-W`) with responses extracted to files; (output, responses)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("rsp*.dcm"):
        old.unlink()
    args = [model, "-aet", calling, "-aec", "MEDBRIDGE", "-X", "-od", str(out_dir), *extra]
    for key in keys:
        args += ["-k", key]
    output = run("findscu", *args, "127.0.0.1", str(port))
    responses = [pydicom.dcmread(path) for path in sorted(out_dir.glob("rsp*.dcm"))]
    return output, responses
