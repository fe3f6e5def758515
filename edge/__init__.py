"""edge: street-side IoT gateway agent for digital urban management (数字城管)."""

__version__ = "0.1.0"
