"""Where a raw (collapsed-stack) py-spy profile's samples went: `python -m bench.pyspy FILE.txt [--top N]`.

The benchmarks record profiles with --profile (bench/harness.py: start_pyspy, summarise_profile).
"""

import argparse
from pathlib import Path

from bench.harness import render_profile, summarise_profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--all-threads", action="store_true", help="count every thread, not only the main one")
    args = parser.parse_args()
    print(render_profile(summarise_profile(args.profile, args.top, main_thread_only=not args.all_threads)))


if __name__ == "__main__":
    main()
