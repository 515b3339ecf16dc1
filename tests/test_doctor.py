"""`r1 doctor`: healthy in the project venv, clear failure when a piece is missing."""
import os
import subprocess
import sys


def _doctor(prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{prelude}\nfrom r1_ros.cli import main\nsys.exit(main(['doctor']))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


def test_doctor_reports_healthy_environment():
    proc = _doctor()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "r1 doctor: healthy" in proc.stdout
    for name in ("python packages", "ROS interfaces", "rclpy / DDS", "model assets"):
        assert f"[  ok] {name}" in proc.stdout


def test_doctor_fails_clearly_without_interfaces():
    # Make `import r1_msgs` fail as it does in a venv where the interfaces were never built.
    proc = _doctor("sys.modules['r1_msgs'] = None")
    assert proc.returncode == 1
    assert "[FAIL] ROS interfaces" in proc.stdout
    assert "scripts/build_interfaces.sh" in proc.stdout
    assert "1 problem(s): ROS interfaces" in proc.stderr


def test_doctor_refuses_discovery_beyond_localhost():
    proc = _doctor("import os; os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SUBNET'")
    assert proc.returncode == 1
    assert "[FAIL] rclpy / DDS" in proc.stdout and "SUBNET" in proc.stdout


def test_doctor_names_a_missing_default_model():
    # the bundled R1-nano resolved to an empty folder, as in a checkout that lost its assets
    prelude = ("import tempfile, r1_ros.graph as g; g.DEFAULT_CHECKPOINT = tempfile.mkdtemp()")
    proc = _doctor(prelude)
    assert proc.returncode == 1
    assert "[FAIL] model assets" in proc.stdout and "R1-nano" in proc.stdout and "adapter.safetensors" in proc.stdout
