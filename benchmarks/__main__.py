"""``python -m benchmarks``: the whole suite in one invocation (``make bench``)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks import processes
from benchmarks.models import MODEL_CHOICES
from benchmarks.report import console_summary
from benchmarks.suite import RunOptions, run_suite

DOCS_PAGE = processes.REPO / "docs" / "benchmarks.md"
# Quick figures are for development only: they never overwrite the committed page.
QUICK_PAGE = processes.REPO / "var" / "bench" / "benchmarks.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure predictq beside a no-model floor and the textbook app; write docs/benchmarks.md.",
    )
    parser.add_argument("--quick", action="store_true", help="2 s wrk runs and a 100,000-row batch, for development")
    parser.add_argument("--ten-million", action="store_true", help="also a 10,000,000-row batch (2 worker processes)")
    parser.add_argument("--models", default=",".join(MODEL_CHOICES), help="comma-separated: logistic,default")
    parser.add_argument(
        "--output",
        type=Path,
        help=f"report page [default: {DOCS_PAGE.relative_to(processes.REPO)}; with --quick: "
        f"{QUICK_PAGE.relative_to(processes.REPO)}]",
    )
    parser.add_argument("--work-dir", type=Path, help="for models, bodies, batch files and logs [default: a temp dir]")
    parser.add_argument("--keep-work-dir", action="store_true", help="keep the work dir (always kept after a failure)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    unknown = set(models) - set(MODEL_CHOICES)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; choose from {list(MODEL_CHOICES)}")
    # The measured setups come from this suite alone, never from the caller's PREDICTQ_* settings.
    for name in [name for name in os.environ if name.startswith(processes.FOREIGN_VARIABLE_PREFIXES)]:
        del os.environ[name]
    processes.install_exit_handlers()
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="predictq-bench-"))
    output = args.output or (QUICK_PAGE if args.quick else DOCS_PAGE)
    options = RunOptions(work_dir, output, models, quick=args.quick, ten_million=args.ten_million)
    command = "make bench" + (f" BENCH_ARGS={shlex.quote(' '.join(argv or sys.argv[1:]))}" if sys.argv[1:] else "")
    failed = True
    try:
        results = run_suite(options, command)
        print(console_summary(results), flush=True)
        failed = _has_errors(results)
    finally:
        processes.stop_all()
        if failed or args.keep_work_dir:
            print(f"work dir (models, bodies, server logs): {work_dir}", flush=True)
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    return 1 if failed else 0


def _has_errors(value: object) -> bool:
    if isinstance(value, dict):
        return "error" in value or any(_has_errors(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_errors(v) for v in value)
    return False


if __name__ == "__main__":
    sys.exit(main())
