"""The patch engine: plan a run, execute or resume it, report it. Shared by CLI, HTTP and Lambda."""
