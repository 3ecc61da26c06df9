"""The revision scripts, one per schema change, oldest first (``0001_...``, ``0002_...``)."""
