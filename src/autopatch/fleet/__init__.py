"""Fleet port (``base.py``) and its adapters: ``ssm.py`` (AWS) and ``simulator.py`` (built in)."""
