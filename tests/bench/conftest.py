"""Fixtures for the tests of the bench tools (mxlb-sink, mxlb-bench,
bench/compare.sh): those of the integration tests, from
tests/integration/conftest.py, loaded under a name of their own so that the
two folders' conftest modules do not collide."""
import importlib.util
import sys
from pathlib import Path

_INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
sys.path.append(str(_INTEGRATION))  # tlscerts, for the certs fixture

_spec = importlib.util.spec_from_file_location("mxlb_integration_conftest",
                                               _INTEGRATION / "conftest.py")
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)

BUILD = _integration.BUILD
SINK = _integration.SINK
Client = _integration.Client
free_port = _integration.free_port
wait_for = _integration.wait_for

# fixtures
certs = _integration.certs
env = _integration.env
