"""`python -m workbench.align_rows`: see `workbench.cli.align_rows`."""

from workbench.cli.align_rows import main

if __name__ == "__main__":
    raise SystemExit(main())
