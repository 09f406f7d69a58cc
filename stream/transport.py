"""A Faust transport whose consumer waits at most ``kafka.fetch_max_wait_ms`` per fetch.

Faust's aiokafka driver hard-codes ``fetch_max_wait_ms=1500``: on a topic that
is not saturated, each fetch then waits up to 1.5 s for more data, which puts a
floor of seconds under the pipeline's end-to-end latency. This subclass keeps
everything else of the driver and only sets that wait.
"""

from __future__ import annotations

from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

__all__ = ["StreamApp", "fast_fetch_transport"]


def fast_fetch_transport(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """A Transport class (pass as the app's ``broker`` transport) with this fetch wait."""

    class _Thread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:  # noqa: ANN401 - Faust's own type
            consumer: aiokafka.AIOKafkaConsumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # noqa: SLF001
            return consumer

    class _Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> _Thread:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

    class _Transport(faust_aiokafka.Transport):
        Consumer: ClassVar[type[Any]] = _Consumer

    return _Transport


class StreamApp(faust.App):
    """A Faust app whose consumer transport uses :func:`fast_fetch_transport`."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 50, **kwargs: Any) -> None:  # noqa: ANN401 - Faust's App options
        """Faust's App, plus the consumer's fetch wait."""
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        cls = fast_fetch_transport(self.fetch_max_wait_ms)
        transport: TransportT = cls(self.conf.broker_consumer, self)
        return transport
