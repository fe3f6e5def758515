"""Platform commands: verify, catalogue, journal, execute, audit."""
