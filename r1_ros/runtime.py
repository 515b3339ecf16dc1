"""Process plumbing shared by the r1 nodes: start rclpy with DDS on loopback, spin a
MultiThreadedExecutor in a thread, stop cleanly on SIGINT/SIGTERM.

    def main(args=None):
        return run_node(RgbdFusionNode, args, threads=4)

Shutdown order: the node's own worker threads stop first (`node.close()`),
then the executor is shut down and its thread joined, then the node is destroyed and rclpy
shut down - joining before rclpy.shutdown() avoids `terminate called without an active
exception`. rclpy's own signal handlers are off so that this order is ours; a second SIGINT
during shutdown is ignored. A signal while the node's `start()` runs (scene_reasoner's model
load) interrupts it with KeyboardInterrupt, so Ctrl-C does not wait for the load to end.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

from r1_ros.dds import ensure_local_dds


def undeclared_overrides(node, args: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Parameters a params file or `-p` gave this node that it never declared, as (refused: given
    for this node, or in `/**` but a parameter of no r1 node; ignored: in `/**` and a parameter of
    another r1 node). rclpy keeps such values without a word, so a misspelt name would silently
    run on the default; a `/**` section legitimately names parameters only some nodes have.
    (rclpy has no public accessor for the overrides; `_parameter_overrides` is the dict
    Node.__init__ fills.)"""
    given = getattr(node, "_parameter_overrides", {})
    unknown = sorted(n for n in given if not node.has_parameter(n) and not n.startswith("qos_overrides."))
    if not unknown:
        return [], []
    from r1_core.config import read_yaml
    from r1_ros.configs import NODE_CONFIGS, wildcard_parameters
    from r1_ros.params import flatten, parameter_specs

    argv = sys.argv if args is None else args
    wildcard = {n for i, a in enumerate(argv[:-1]) if a == "--params-file"
                for n in flatten(dict(wildcard_parameters(read_yaml(argv[i + 1]))))}
    anywhere = {s.name for cls in NODE_CONFIGS.values() for s in parameter_specs(cls)}   # some r1 node has it
    shared = [n for n in unknown if n in wildcard and n in anywhere]
    return [n for n in unknown if n not in shared], shared


def run_node(factory: Callable[[], object], args: list[str] | None = None, threads: int = 4) -> int:
    """Create the node, spin it until SIGINT/SIGTERM or `node.stop_requested` is set; 0 on a
    clean stop, 2 when the node could not start (the reason is logged). A node may ask for
    more executor threads with an `executor_threads` attribute."""
    ensure_local_dds()
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as e:      # rcl's RCLError: e.g. a params file that is missing or not YAML
        print(f"[r1] cannot start: {e}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    starting = threading.Event()     # the node's start() runs: a signal interrupts it

    def on_signal(signum, frame):
        stop.set()
        if starting.is_set():
            # start() (scene_reasoner: the model load, ~20 s on 2 cores) runs on this, the main
            # thread: interrupt it rather than stop only once it ends
            starting.clear()
            raise KeyboardInterrupt

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    executor = None
    spin = None
    rc = 0
    try:
        try:
            node = factory()
        except ValueError as e:       # ConfigError and friends: a clear message, no traceback
            print(f"[r1] cannot start: {e}", file=sys.stderr, flush=True)
            return 2
        unknown, shared = undeclared_overrides(node, args)
        if shared:
            node.get_logger().info(f"wildcard parameters this node does not have, ignored: {shared}")
        if unknown:
            print(f"[r1] cannot start: node {node.get_name()}: unknown parameters {unknown} given (a typo?); "
                  f"its parameters: `ros2 param list`, or config/nodes.yaml", file=sys.stderr, flush=True)
            return 2
        requested = getattr(node, "stop_requested", None)
        executor = MultiThreadedExecutor(num_threads=getattr(node, "executor_threads", threads))
        executor.add_node(node)
        spin = threading.Thread(target=executor.spin, name="r1-executor", daemon=True)
        spin.start()
        start = getattr(node, "start", None)
        if start is not None:
            try:
                starting.set()
                start()
            except KeyboardInterrupt:
                node.get_logger().info("stopped while starting")
            except ValueError as e:
                starting.clear()          # a signal now must not turn this failure into a clean stop
                node.get_logger().error(f"cannot start: {e}")
                rc = 2
                stop.set()
            finally:
                starting.clear()
        while not stop.wait(0.2):
            if requested is not None and requested.is_set():
                rc = getattr(node, "exit_code", 0)
                break
        node.get_logger().info("shutting down")
    except KeyboardInterrupt:        # a signal in the instant between start() returning and `starting` clearing
        pass
    finally:
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
        if executor is not None:
            executor.shutdown()
        if spin is not None:
            spin.join()
        if node is not None:
            node.destroy_node()
        rclpy.shutdown()
        for s, h in old.items():
            signal.signal(s, h)
    return rc
