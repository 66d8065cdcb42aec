"""The report of ``make gpu-check``: the ``gpu`` tests' outcome (pytest's JUnit XML) and the GPU
measurements (``bench/gpu.py``) in one ``gpu_check.md`` and ``gpu_check.json``.

  python -m retina_trt.bench.gpu_report --out gpu-check-output

Reads ``tests.xml`` and ``gpu_measurements.json`` under ``--out`` (either may be missing: the
report says so). Exits 1 when a test or a measurement failed, or nothing ran at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from retina_trt.utils import atomic_path


def test_outcomes(junit: Path) -> list[dict[str, str]]:
    """One row per test case of a JUnit XML file: name, status (pass / fail / skipped), detail."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        status, detail = "pass", ""
        for tag, name in (("failure", "fail"), ("error", "fail"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                status, detail = name, (found.get("message") or found.text or "").strip().splitlines()[0][:200]
                break
        rows.append(
            {"test": f"{case.get('classname', '')}::{case.get('name', '')}", "status": status, "detail": detail}
        )
    return rows


def build_report(out: Path) -> dict[str, Any]:
    """The tests' and the measurements' outcome from the files under ``out``."""
    junit, measured = out / "tests.xml", out / "gpu_measurements.json"
    return {
        "tests": test_outcomes(junit) if junit.is_file() else None,
        "measurements": json.loads(measured.read_text())["measurements"] if measured.is_file() else None,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = ["# retina-trt gpu-check", "", "## gpu tests", ""]
    if report["tests"] is None:
        lines.append("No test report (tests.xml): the tests did not run.")
    else:
        lines += ["| test | status | detail |", "|---|---|---|"]
        lines += [f"| {r['test']} | {r['status']} | {r['detail']} |" for r in report["tests"]]
    lines += ["", "## measurements", ""]
    if report["measurements"] is None:
        lines.append("No measurements (gpu_measurements.json): they did not run.")
        return "\n".join(lines) + "\n"
    lines += ["| measurement | status | seconds | detail |", "|---|---|---|---|"]
    for name, result in report["measurements"].items():
        detail = (result.get("reason") or result.get("error") or "")[:200]
        lines.append(f"| {name} | {result['status']} | {result['seconds']} | {detail} |")
    for name, result in report["measurements"].items():
        rows = result.get("result", {}).get("rows") if isinstance(result.get("result"), dict) else None
        if rows:
            lines += ["", f"### {name}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
            lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def failed(report: dict[str, Any]) -> bool:
    """A test or a measurement failed, or neither ran."""
    tests, measurements = report["tests"] or [], report["measurements"] or {}
    if not tests and not measurements:
        return True
    return any(r["status"] == "fail" for r in tests) or any(r["status"] == "fail" for r in measurements.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="the folder make gpu-check writes into")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"--out {args.out} is not a folder: run the gpu tests and bench.gpu into it first")
    report = build_report(args.out)
    text = markdown(report)
    with atomic_path(args.out / "gpu_check.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    with atomic_path(args.out / "gpu_check.md") as tmp:
        tmp.write_text(text)
    print(text)
    return 1 if failed(report) else 0


if __name__ == "__main__":
    sys.exit(main())
