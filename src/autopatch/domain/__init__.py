"""The pure core: domain rules with no I/O and no adapter imports."""
