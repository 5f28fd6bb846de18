"""`python -m workbench.capture` (also under `torchrun`): see `workbench.cli.capture`."""

from workbench.cli.capture import main

if __name__ == "__main__":
    raise SystemExit(main())
