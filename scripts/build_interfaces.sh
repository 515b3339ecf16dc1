#!/usr/bin/env bash
# Build the ROS interface packages under msg/ with rosidl and install them into a venv.
#   scripts/build_interfaces.sh .venv
# The PyPI ROS 2 wheels carry rosidl's generators but no `colcon`; plain cmake works once
# (1) AMENT_PREFIX_PATH points at the venv and (2) the include path the wheels baked into
# their exported CMake targets (/opt/python/cp311-cp311/...) is rewritten to this venv's
# Python and numpy include dirs. See ../shared/ROS2_NOTES.md.
set -euo pipefail
venv=$(cd "${1:-.venv}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH"

py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
# Rewrite the baked include paths once (idempotent: later runs find nothing to replace).
baked=/opt/python/cp311-cp311
{ grep -rlZ --include='*.cmake' "$baked/" "$venv/share" 2>/dev/null || true; } | xargs -0 -r sed -i \
  -e "s#$baked/include/python3.11#$py_inc#g" \
  -e "s#$baked/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g"

build="$root/build/interfaces"
mkdir -p "$build"
for pkg in tf2_msgs r1_msgs; do
  echo "[r1] building ROS interfaces: $pkg"
  cmake -S "$root/msg/$pkg" -B "$build/$pkg" -G "Unix Makefiles" \
    -DCMAKE_INSTALL_PREFIX="$venv" -DCMAKE_PREFIX_PATH="$venv" \
    -DPython3_EXECUTABLE="$py" -DPython3_FIND_VIRTUALENV=ONLY -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=Release >"$build.$pkg.log" 2>&1 || { cat "$build.$pkg.log"; exit 1; }
  cmake --build "$build/$pkg" -j"$(nproc)" >>"$build.$pkg.log" 2>&1 || { tail -50 "$build.$pkg.log"; exit 1; }
  cmake --install "$build/$pkg" >>"$build.$pkg.log" 2>&1 || { tail -50 "$build.$pkg.log"; exit 1; }
done
"$py" -c 'from r1_msgs.srv import Ground, Ask; from r1_msgs.action import Reason; from tf2_msgs.msg import TFMessage; print("[r1] interfaces import")'
