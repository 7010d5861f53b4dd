"""`python -m simulators.kube_api --sim-root DIR [--port 0] [--latency S]`: what `nicflow sim api`
runs, started without the CLI's imports (the tests start one server per fleet)."""

from __future__ import annotations

import argparse
from pathlib import Path

from simulators.kube_api.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators.kube_api")
    parser.add_argument("--sim-root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--advertise", default=None)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--watch-window", type=int, default=1000)
    args = parser.parse_args()
    if not args.sim_root.is_dir():
        parser.error(f"--sim-root {str(args.sim_root)!r} is not a directory")
    if not 0 <= args.latency <= 5 or not 0 <= args.port <= 65535 or args.watch_window < 1:
        parser.error("--latency must be 0..5 s, --port 0..65535, --watch-window at least 1")
    serve(args.sim_root, host=args.host, port=args.port, advertise=args.advertise, latency=args.latency,
          watch_window=args.watch_window)


if __name__ == "__main__":
    main()
