"""r1_core: the ROS-free core of r1 (geometry, views, model, data, eval, reasoning service).

Nothing in this package imports the ROS 2 client library; the ROS nodes in r1_ros are thin adapters over it.
"""
__version__ = "0.1.0"
