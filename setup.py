"""ament_python package r1_ros: the r1 Python packages (r1_core, r1_ros, training), launch and config.

`colcon build` on a robot installs it like any ament_python package; here `make` installs it
editable into .venv (see Makefile).
"""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "r1_ros"
HERE = Path(__file__).parent


def requirements() -> list[str]:
    """The pinned runtime requirements (requirements.txt), without comments."""
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["r1_core*", "r1_ros*", "training*"]),
    # the model assets, the CUDA sources built at first use (r1_core.cuda), the Fast DDS profile
    package_data={"r1_core": ["assets/**/*", "cuda/csrc/*"], "r1_ros": ["fastdds_local.xml"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=requirements(),
    python_requires=">=3.10",
    zip_safe=False,
    maintainer="r1 developers",
    maintainer_email="r1-dev@example.com",
    description="3D scene reasoning for robots: RGB-D fusion, view selection and a 3D-VLM over ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "r1 = r1_ros.cli:main",
        ],
    },
)
