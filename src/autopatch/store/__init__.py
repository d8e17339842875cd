"""Store port (``base.py``) and its adapters, one file each."""
