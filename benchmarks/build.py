"""Build benchmark: a cold build, one target at a time against several at once; a no-op `invoke build` against a
warm `docker build`; and image sizes.

Run: python benchmarks/build.py [--skip-cold]
Each cold build uses `invoke build --no-cache` with an empty host cache, so it downloads and bootstraps too; it
replaces the images of the current keys with identical rebuilds (the build is reproducible, so the same ids).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hubforge.docker_io import Docker  # noqa: E402
from hubforge.imagebuild.builder import Builder, Settings, default_jobs  # noqa: E402
from hubforge.imagebuild.targets import DEFAULT_SET, Graph  # noqa: E402


def timed(argv: list[str], **kwargs) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold build")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    invoke = [sys.executable, "-m", "invoke", "build"]
    docker, graph = Docker(), Graph()

    if not args.skip_cold:
        # Cold: every target rebuilt with no layer cache (base re-bootstrapped) and empty host caches; first one
        # target at a time (as every build was before), then as many at once as `invoke build` chooses here.
        cold = {}
        for label, jobs in (("one at a time (--jobs 1)", "1"), (f"at once (--jobs 0: {default_jobs()} here)", "0")):
            with tempfile.TemporaryDirectory(prefix="hubforge-bench-cache-") as cache:
                cold[label] = timed(
                    invoke + ["--no-cache", "--jobs", jobs], env={**os.environ, "INVOKE_HUBFORGE_CACHE_DIR": cache}
                )
        print("cold build, all targets (no layer cache, empty wheel/.deb/npm caches, base bootstrapped):")
        for label, seconds in cold.items():
            print(f"  {label:<28} {seconds:6.1f} s")
        serial, parallel = cold.values()
        print(f"  -> {serial / parallel:.2f}x")
    timed(invoke)  # make sure everything exists with the normal cache

    noop = [timed(invoke) for _ in range(args.runs)]
    print(
        f"no-op `invoke build`, all targets: median {statistics.median(noop):.2f} s (min {min(noop):.2f}, max "
        f"{max(noop):.2f}, {args.runs} runs)"
    )

    settings = Settings(root=ROOT, cache_dir=Path("~/.cache/hubforge").expanduser())
    builder = Builder(settings, docker, graph, say=lambda message: None)
    steps = [s for s in builder.plan(graph.closure(list(DEFAULT_SET))) if s.target.template]
    contexts = [(s, builder.stage_context(s, lambda message: None)) for s in steps]
    try:
        timed(["docker", "build", "-q", "-t", "hubforge-bench/warm", str(contexts[0][1])])  # warm it up
        warm = []
        for _ in range(args.runs):
            start = time.monotonic()
            for step, context in contexts:
                timed(
                    [
                        "docker",
                        "build",
                        "-q",
                        "--network=none",
                        "-t",
                        f"hubforge-bench/{step.target.name}",
                        str(context),
                    ]
                )
            warm.append(time.monotonic() - start)
    finally:
        for _, context in contexts:
            shutil.rmtree(context, ignore_errors=True)
        for step, _ in contexts:
            subprocess.run(
                ["docker", "rmi", f"hubforge-bench/{step.target.name}", "hubforge-bench/warm"], capture_output=True
            )
    print(
        f"`docker build` of the same rendered Dockerfiles, warm layer cache: median {statistics.median(warm):.2f} s "
        f"(context upload included) -> no-op is {statistics.median(warm) / statistics.median(noop):.1f}x faster"
    )

    print("\nimage sizes against budgets:")
    for step in builder.plan(graph.closure(list(DEFAULT_SET))):
        size = docker.inspect(step.ref)["Size"] / 1e6
        budget = step.target.budget_mb
        verdict = "" if budget is None else ("  within budget" if size <= budget else "  OVER BUDGET")
        print(f"  {step.target.name:<10} {size:7.1f} MB" + (f" / {budget} MB{verdict}" if budget else ""))


if __name__ == "__main__":
    main()
