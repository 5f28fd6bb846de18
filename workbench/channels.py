"""`python -m workbench.channels`: see `workbench.cli.channels`."""

from workbench.cli.channels import main

if __name__ == "__main__":
    raise SystemExit(main())
