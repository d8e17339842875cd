"""AutoPatch: CVE-driven patching for Windows servers."""

__version__ = "0.1.0"
