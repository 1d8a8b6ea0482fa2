#!/usr/bin/env python
"""regner on a GPU in one go: the CUDA tests, throughput and MFU of a BERT-base-shaped encoder with every
regularizer's cost ratio, peak memory at batch 32 × 128 and 8 × 512 tokens, and a smoke comparison with
``regner compare``. Run it through ``scripts/device_check.sh OUT`` (which first installs the wheels of
``make gpu-wheels`` where the machine lacks packages); ``--cpu`` runs every step at small shapes on the CPU
(CI runs it so that the script cannot rot), the comparison as a dry run (its plan).

Writes to OUT (at most 8 files): summary.md and summary.json (every step's status, time and key figures),
device_check.log (every step's output), throughput.md, memory.md, blockwise.md (the head's loss memory, dense
vs blockwise), compare.md and cuda-tests.xml (JUnit).
Each step has its own time limit; a step that fails or times out is reported and the next one runs.
The GPU steps' limits add up to 7.75 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "scripts/bench_throughput.py"]


def steps(cpu: bool, out: Path, scratch: Path) -> list[tuple[str, list[list[str]], int]]:
    """(name, commands, time limit in seconds) of every step, at the mode's shapes."""
    tests = [[sys.executable, "-m", "pytest", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider",
              f"--junitxml={out / 'cuda-tests.xml'}", "-q", "-rs", *(["-n", "0"] if cpu else ["-n", "4", "--dist", "load"])]]
    if cpu:
        throughput = [[*BENCH, "--encoder", "small", "--batch-sizes", "2", "--steps", "1", "--warmup", "1",
                       "--regularizers", "none,rdrop,vat", "--json", str(scratch / "throughput.json"),
                       "--out", str(out / "throughput.md")]]
        shapes = [("2", "30,30"), ("1", "62,62")]
        memory_args = ["--encoder", "small", "--steps", "1", "--warmup", "1"]
        compare = [[sys.executable, "-m", "regner", "compare", "compare=gpu-smoke", f"out={scratch / 'compare'}",
                    "progress=false", "dry_run=true"]]
    else:
        throughput = [[*BENCH, "--encoder", "base", "--precision", "bf16", "--batch-sizes", "32", "--steps", "10",
                       "--warmup", "3", "--json", str(scratch / "throughput.json"), "--out", str(out / "throughput.md")]]
        shapes = [("32", "126,126"), ("8", "510,510")]
        memory_args = ["--encoder", "base", "--precision", "bf16", "--steps", "3", "--warmup", "2"]
        compare = [[sys.executable, "-m", "regner", "compare", "compare=gpu-smoke", f"out={scratch / 'compare'}",
                    "progress=false"]]
    memory = [[*BENCH, *memory_args, "--batch-sizes", batch, "--lengths", lengths, "--regularizers",
               "none,rdrop" if cpu else "none,rdrop,vat,gp", "--json", str(scratch / f"memory-{batch}x{int(lengths.split(',')[0]) + 2}.json")]
              for batch, lengths in shapes]
    # the head's loss alone, dense vs blockwise (issue #35's shapes on a GPU)
    memory.append([sys.executable, "scripts/bench_blockwise.py", "--shapes", *(["2,3,40"] if cpu else
                   ["32,10,512", "8,10,2048"]), "--repeats", "1" if cpu else "3", "--device", "cpu" if cpu else "cuda",
                   "--dense-limit-gib", "6" if cpu else "40", "--out", str(out / "blockwise.md")])
    return [("cuda tests", tests, 60 if cpu else 210), ("throughput", throughput, 60 if cpu else 75),
            ("memory", memory, 90 if cpu else 60), ("compare", compare, 60 if cpu else 120)]


def run_step(name: str, commands: list[list[str]], limit: int, log) -> dict:
    start, status = time.monotonic(), "ok"
    for command in commands:
        left = limit - (time.monotonic() - start)
        log.write(f"\n===== {name}: {' '.join(command)}\n")
        log.flush()
        try:
            result = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit} s"
            break
        if result.returncode != 0:
            status = f"failed (exit {result.returncode})"
            break
    seconds = time.monotonic() - start
    print(f"device check: {name}: {status} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    return {"step": name, "status": status, "seconds": round(seconds, 1)}


def test_counts(report: Path) -> dict:
    if not report.exists():
        return {}
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        counts["failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"] += 1
    return counts


def memory_table(shapes: list[tuple[str, Path]]) -> str:
    lines = ["| batch × tokens | regularizer | tokens/s | peak MB | memory vs none |", "|---|---|---|---|---|"]
    for batch, path in shapes:
        if not path.exists():
            continue
        for row in json.loads(path.read_text()):
            lines.append(f"| {batch} | {row['regularizer']} | {row['tokens_per_s']:,.0f} | {row['peak_mb']:,.0f} | "
                         f"{row['memory']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--cpu", action="store_true", help="small shapes on the CPU, the comparison as a dry run")
    args = parser.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        parser.error("no CUDA device here: give --cpu for the small-shape CPU check")
    args.out.mkdir(parents=True, exist_ok=True)
    from regner.experiments.benchmark.execution import machine_description

    results = []
    with tempfile.TemporaryDirectory() as scratch_dir, open(args.out / "device_check.log", "w") as log:
        scratch = Path(scratch_dir)
        plan = steps(args.cpu, args.out, scratch)
        for name, commands, limit in plan:
            results.append(run_step(name, commands, limit, log))
        results[0]["tests"] = test_counts(args.out / "cuda-tests.xml")
        throughput = scratch / "throughput.json"
        if throughput.exists():
            rows = json.loads(throughput.read_text())
            results[1]["rows"] = [{k: row[k] for k in ("regularizer", "batch", "tokens_per_s", "ms_per_step", "cost",
                                                       "peak_mb", "tflops")} for row in rows]
        shapes = [(p.stem.split("-", 1)[1].replace("x", " × "), p) for p in sorted(scratch.glob("memory-*.json"))]
        memory = memory_table(shapes)
        (args.out / "memory.md").write_text(memory + "\n")
        results[2]["table"] = memory
        report = scratch / "compare" / "report.md"  # a dry run (--cpu) writes none: its plan is in the log
        compare_text = report.read_text() if report.exists() else ""
        if report.exists():
            shutil.copy(report, args.out / "compare.md")
    machine = machine_description()
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "mode": "cpu" if args.cpu else "gpu", "machine": machine, "steps": results,
               "total_s": round(sum(r["seconds"] for r in results), 1)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# regner device check ({summary['date'][:10]}, {summary['mode']} mode)", "", f"Machine: {machine}.", "",
             "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['seconds']:.0f} |" for r in results]
    counts = results[0].get("tests")
    if counts:
        lines += ["", f"CUDA tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped."]
    for name in ("throughput.md",):
        if (args.out / name).exists():
            lines += ["", "## Throughput", "", (args.out / name).read_text().strip()]
    lines += ["", "## Peak memory", "", memory]
    if (args.out / "blockwise.md").exists():
        lines += ["", "## The head's loss: dense vs blockwise", "", (args.out / "blockwise.md").read_text().strip()]
    if compare_text:
        lines += ["", "## Smoke comparison", "", compare_text.strip()[:4000]]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["status"] == "ok" for r in results) and not (counts or {}).get("failed") else 1


if __name__ == "__main__":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before any CUDA work, for trainer.deterministic
    sys.exit(main())
