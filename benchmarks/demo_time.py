"""The README's first command as a new user runs it: a brand-new virtual environment, the README's install commands,
then `flexunet demo` as a subprocess; install and demo wall times, exit code, printed Dice, and what report.html says.

Usage: python benchmarks/demo_time.py [--repeats 1] [--keep DIR]
Writes benchmarks/results/demo.json with the machine's facts (CPU flags, load) beside the numbers.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "demo.json"
INSTALL = "pip install torch==2.13.0 torchvision==0.28.0 && pip install -e ."  # the README's first command, before `&& flexunet demo`


def readme_demo_command() -> str:
    """The README's demo line; the benchmark refuses to run when the README says something else."""
    line = f"{INSTALL} && flexunet demo"
    if line not in (REPO / "README.md").read_text().splitlines():
        raise SystemExit(f"README.md no longer gives `{line}`: update this benchmark")
    return line


def timed(command: str, cwd: Path, env_bin: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Run a shell command with the venv's bin first on PATH (as after `source venv/bin/activate`)."""
    env = {"PATH": f"{env_bin}:/usr/bin:/bin", "HOME": str(Path.home()), "MPLBACKEND": "Agg",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "VIRTUAL_ENV": str(env_bin.parent)}
    start = time.perf_counter()
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def report_facts(report: Path) -> dict[str, object]:
    """Whether report.html exists and what its leakage banner says (a banner on independent data is a false alarm)."""
    if not report.is_file():
        return {"exists": False}
    text = report.read_text()
    status = re.search(r'id="leakage" class="banner [^"]*" data-status="([^"]*)"', text)
    return {"exists": True, "bytes": len(text.encode()), "leakage_status": status.group(1) if status else None}


def one_run(work: Path) -> dict[str, object]:
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    bin_dir = work / "venv" / "bin"
    install_s, install = timed(INSTALL, REPO, bin_dir)
    if install.returncode:
        raise SystemExit(f"install failed:\n{install.stderr[-2000:]}")
    (work / "user").mkdir()
    demo_s, demo = timed("flexunet demo", work / "user", bin_dir)
    dice = re.search(r"foreground Dice ([0-9.]+)", demo.stdout)
    per_class = re.search(r"test dice per class: (.*)", demo.stdout)
    report = re.search(r"demo: report (\S+report\.html)", demo.stdout)
    return {"install_seconds": round(install_s, 1), "demo_seconds": round(demo_s, 1), "exit_code": demo.returncode,
            "foreground_dice": float(dice.group(1)) if dice else None,
            "per_class_dice": dict(re.findall(r"(\S+) ([0-9.]+)", per_class.group(1))) if per_class else None,
            "printed_report_path": bool(report),
            "report": report_facts(Path(report.group(1))) if report else {"exists": False},
            "stderr_tail": demo.stderr[-500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="Keep the last run's venv and demo folder here.")
    args = parser.parse_args()
    command = readme_demo_command()
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(one_run(Path(tmp)))
            if args.keep:
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(Path(tmp) / "user", args.keep)
        print(json.dumps(runs[-1], indent=2), flush=True)
    seconds = sorted(r["demo_seconds"] for r in runs)
    out = {"machine": machine_info(), "command": command,
           "how": "fresh venv per run (python -m venv), the README's install commands, then `flexunet demo` in an empty folder",
           "runs": runs, "median_demo_seconds": seconds[len(seconds) // 2]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
