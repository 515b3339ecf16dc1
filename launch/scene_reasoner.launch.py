"""Start the r1 scene-reasoning graph on a robot with a full ROS 2 install.

    ros2 launch r1_ros scene_reasoner.launch.py
    ros2 launch r1_ros scene_reasoner.launch.py camera_namespace:=/d435 device:=cuda
    ros2 launch r1_ros scene_reasoner.launch.py bag:=/data/run1 bag_loop:=true
    ros2 launch r1_ros scene_reasoner.launch.py --show-args

Nodes: rgbd_fusion, view_selector (use_view_selector), scene_reasoner, and bag_replay when a
bag is given - taken from r1_ros.graph.plan(), the table `r1 up` starts the same processes
from, with the same parameters file (config/nodes.yaml unless params_file is given) and
overrides. Each node runs as `r1 node <name>` (the package's console script). Unless the
environment says otherwise, DDS discovery stays on this machine
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and the shared-memory Fast DDS profile is used; set
ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET before launching to reach other machines (the profile,
shared memory only, is then left out).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from r1_ros.graph import LAUNCH_ARGUMENTS, local_dds_environment, plan


def _graph(context, *args, **kwargs):
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in LAUNCH_ARGUMENTS}
    actions = [SetEnvironmentVariable(name, value) for name, value in local_dds_environment().items()]
    for spec in plan(values):
        parameters = [spec.params_file] + ([spec.overrides] if spec.overrides else [])
        actions.append(Node(
            package=spec.package,
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            arguments=spec.arguments,
            parameters=parameters,
            remappings=spec.remappings,
            output="screen",
            emulate_tty=True,
        ))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description) for a in LAUNCH_ARGUMENTS]
        + [OpaqueFunction(function=_graph)]
    )
