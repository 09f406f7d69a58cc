"""Fault injection for the pipeline: private services, a TCP proxy, a workload, accounting.

- :mod:`~tmiot.chaos.proxy`: a loopback TCP proxy with cut, stall and delay;
- :mod:`~tmiot.chaos.backends`: private PostgreSQL, Mosquitto and tansu instances;
- :mod:`~tmiot.chaos.pipeline`: ingest, stream and triggers as processes (kill -9, RSS);
- :mod:`~tmiot.chaos.workload`: a simulated fleet publishing over QoS 1, with incidents;
- :mod:`~tmiot.chaos.accounting`: readings and work orders against what was published;
- :mod:`~tmiot.chaos.soak`: ``make soak``, the whole pipeline under random faults.

Used by ``tests/integration/test_faults*.py`` and ``make soak``; nothing here runs
in production.
"""
