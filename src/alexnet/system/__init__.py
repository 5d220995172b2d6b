"""The machine a run is on: devices and precision (:mod:`~alexnet.system.runtime`), the process
group (:mod:`~alexnet.system.distributed`), signals, and files written whole."""
