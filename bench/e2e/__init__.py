"""End-to-end benchmark: the whole pipeline against the naive bridge and the stage limits.

``make bench`` (``python -m bench.e2e``) runs, on this machine and in one run:

1. **Stage limits**, each stage alone: a bare MQTT subscriber, ingest's validator, bare
   Kafka produce and consume of raw records, bare batched writes to ``sensor_readings``
   (the stream's own idempotent sink), bare scoring (the stream's
   :class:`~stream.scoring.Scorer`) and trigger evaluation; each with the machine's CPU
   time per reading, whose sum over a reading's path bounds any pipeline on this machine
   (:func:`bench.e2e.stages.bound`).
2. **The naive bridge** (:mod:`bench.e2e.naive`): a subscriber that INSERTs each reading
   into PostgreSQL as it arrives, no Kafka, no scoring.
3. **The pipeline**: ingest, stream and triggers as ``tmiot`` processes, a private
   Mosquitto and tansu, the load generator (:mod:`bench.e2e.load`) in a process of its
   own; single-reading messages and gateway batches; 1k, 10k and 100k sensors.

Each system runs a ladder of offered rates (:mod:`bench.e2e.ladder`); a step is
*sustained* when the generator kept the rate, every reading was stored, and the p99
latency from MQTT publish to the committed row stayed under the limit. The highest
sustained rate, the latency percentiles to the row and to the work-order event, the
backlog, CPU and resident memory of every process, and the machine's CPU per reading
are written to
``bench/results/e2e.{json,md,png}``.
"""
