"""Models accounts deploy while the server runs: rows, memory fit, and their life (manager.py)."""
