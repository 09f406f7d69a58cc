"""Test configuration: fixtures live in plugin modules named fix_*.py."""

pytest_plugins = [
    "tests.fix_services",
    "tests.fix_timescaledb",
    "tests.fix_ingest",
    "tests.fix_mosquitto",
    "tests.fix_stream",
    "tests.fix_pipeline",
    "tests.fix_chaos",
    "tests.fix_kafka_secure",
]


def pytest_report_header() -> list[str]:
    """Say in the run's header which services back the integration tests, and why."""
    from tests.fix_services import docker_engine

    reason = docker_engine()
    if reason is None:
        return ["services: testcontainers (a Docker engine answers)"]
    return [f"services: local (tansu, PostgreSQL, Mosquitto on loopback) because {reason}"]
