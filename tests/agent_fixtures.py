"""Pytest fixtures that run the real agent: ``start_agent(device, **options)``."""
import pytest

from agent import Agent


@pytest.fixture
def start_agent(couch, db, tmp_path):
    """Start `himbeerecouch run` for a device against the test database.

    Every agent started is ended after the test, with every process its
    workers started, also when the test fails.
    """
    agents = []

    def start(device, args=(), stop_timeout=3, feed_heartbeat=1, state_dir=None, url=None,
              database=None,
              python=None):
        state = state_dir or tmp_path / ("state-%d" % len(agents))
        agent = Agent(url or couch.url, database or db.name, device, state, args=args,
                      stop_timeout=stop_timeout, feed_heartbeat=feed_heartbeat,
                      python=python)
        agents.append(agent)
        return agent.start()

    yield start
    for agent in agents:
        agent.close()
