"""Build-machine tools (not installed on gateways)."""
