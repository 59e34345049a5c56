"""Start Ray on this machine, or join the user's cluster, with nothing reported anywhere else.

- Usage stats off: RAY_USAGE_STATS_ENABLED=0 is set before Ray is imported (Ray reads it then),
  inherited by the processes a local Ray starts and passed to a cluster's workers in the job's
  runtime_env. (A cluster's own head reports whatever it was started with: start it with
  `ray start --head --disable-usage-stats`; see the README.)
- Local mode binds loopback only: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's own switch for a
  single-machine Ray (the default on macOS and Windows); with it the node address is 127.0.0.1
  and every Ray server listens there. The same switch is needed to join a cluster that runs on
  127.0.0.1 (as the tests do), so it is set for loopback addresses too.
- No dashboard in local mode; Ray's own progress bars off (edge-moss draws one).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from ..errors import EdgeMossError, MissingExtraError
from ..loopback import is_loopback

QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOCAL = "local"


def is_loopback_address(address: str) -> bool:
    """True for 'local' and for HOST:PORT / ray://HOST:PORT addresses whose host is loopback."""
    if address == LOCAL:
        return True
    return is_loopback(address.split("://", 1)[-1].rsplit(":", 1)[0])


def prepare_environment(address: str) -> None:
    """Set Ray's switches in os.environ; must run before `import ray` to take effect."""
    os.environ.update(QUIET_ENV)
    if is_loopback_address(address):
        if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
            from ray._private import ray_constants

            if ray_constants.ENABLE_RAY_CLUSTER:
                raise EdgeMossError("Ray was imported before edge-moss could keep it on loopback: "
                                    "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray")
        os.environ.update(LOOPBACK_ENV)


def require_ray() -> None:
    """Fail fast, before any work, when the extra is missing (looks for Ray without importing it)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError("edge-moss batch needs Ray Data (ray is missing): "
                                "pip install 'edge-moss[cluster]'")


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"edge-moss batch needs Ray Data ({exc.name} is missing): "
                                "pip install 'edge-moss[cluster]'") from None
    return ray


def connect(address: str = LOCAL, num_cpus: int | None = None,
            temp_dir: str | None = None) -> tuple[Any, bool]:
    """(ray, started_here): attach to a running Ray session, start a local one, or join a cluster.

    A session already started in this process (a user's pipeline, the tests) is used as is.
    """
    prepare_environment(address)
    ray = import_ray()
    quiet_data()
    if ray.is_initialized():
        return ray, False
    env = {"env_vars": dict(QUIET_ENV)}
    common: dict[str, Any] = dict(logging_level=logging.ERROR, log_to_driver=False,
                                  runtime_env=env)
    try:
        if address == LOCAL:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                     include_dashboard=False, _temp_dir=temp_dir, **common)
        else:
            ray.init(address=address, **common)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgeMossError(f"cannot start or reach Ray at {address}: {reason}") from None
    return ray, True


def quiet_data() -> None:
    """Ray Data without its own progress bars and info logs (edge-moss reports progress)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def cluster_cpus(ray) -> int:
    return int(ray.cluster_resources().get("CPU", 0))
