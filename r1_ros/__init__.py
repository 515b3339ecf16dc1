"""r1_ros: ROS 2 nodes, bring-up and the `r1` command line; thin adapters over r1_core."""
