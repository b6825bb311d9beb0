"""inferd: a self-hosted DeepInfra."""

__version__ = "0.1.0"
