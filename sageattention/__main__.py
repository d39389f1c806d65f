"""Command line: `python -m sageattention {env,check,bench}`."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from . import _bench

    parser = argparse.ArgumentParser(prog="python -m sageattention", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("env", help="versions, CPU features, the SIMD path in use, threads, backends")
    sub.add_parser("check", help="accuracy self-test of every recipe; non-zero exit on failure")
    _bench.add_arguments(sub.add_parser(
        "bench", help="time sageattn against torch SDPA (bf16, fp32) on this CPU: TOPS, speed-up, cosine"))
    args = parser.parse_args(argv)

    if args.command == "bench":
        return _bench.run(args)

    from . import _diagnostics

    if args.command == "env":
        rows = _diagnostics.env_report()
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
        return 0
    return 0 if _diagnostics.run_check() else 1


if __name__ == "__main__":
    sys.exit(main())
