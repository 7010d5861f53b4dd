"""The host emulator: simulated hosts (a file tree per node, emulated kernel and tools, an ops
log), the hardware profiles they are provisioned with, and the simulated fleet's inventory.
The node steps reach a simulated host only through the host surface (`tasks/host/surface.py`),
as they reach a real one; the processes choose which (`workers/runtime.py`)."""
