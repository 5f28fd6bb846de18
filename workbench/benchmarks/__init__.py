"""One module per benchmark, each defining `run(device, quick=False) -> list[Case]` (see workbench.bench)."""
