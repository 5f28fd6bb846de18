"""`python -m workbench.bench`: see `workbench.benchmarks.harness`."""

from workbench.benchmarks.harness import main

if __name__ == "__main__":
    raise SystemExit(main())
