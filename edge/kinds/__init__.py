"""The kind table: every device kind, named once, in the order the command catalogue lists them.

A kind is declared in two modules of the same name, one per layer (docs/architecture.md):

- ``edge.kinds.<name>``: its devices.yaml shape (``DEVICE``: fields, alarm thresholds,
  ``MODELS`` per transport) and the CJ/T 214 classes it may be filed under
  (``ASSET_CLASSES``). Shapes only, so ``edge check`` validates a file without importing a
  driver or a protocol library.
- ``edge.drivers.<name>``: its ``KIND`` (one driver class per transport, builder, standard
  fields, alarms, actions).

``edge.config`` (the devices.yaml union, the default class table), ``edge.drivers.factory``
(the drivers), the command catalogue and ``edge check`` are derived from ``NAMES``. Adding a
kind is its two modules, its codec, simulator and firmware note, and one name here; the
simulator tables, the contract, the README and the demo's devices.yaml follow, each held by
a test (docs/architecture.md "Adding a kind").
"""

from __future__ import annotations

NAMES: tuple[str, ...] = ("manhole_tilt", "streetlight", "loudspeaker", "gps")
