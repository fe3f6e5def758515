"""Hardware-in-loop tooling: device simulators, the reference platform receiver, the demo."""
